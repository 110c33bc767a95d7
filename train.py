"""Trains the multi-task network (depth, semantic, motion from RGB + optical flow).

Every field of `keras_mtl.config.Config` is a flag (flag name = field name; `--help` shows each
with its default) and overrides the `--config` file. The run folder (`--save_path`) receives
`checkpoint.keras` (every epoch), `model_best.keras`, `history.csv`, `config.yaml` and
TensorBoard `logs/`; the run ends with a table of the best and the last epoch.
`--resume` continues from the run folder's own `config.yaml` (flags given with it may extend
`--epochs` or change the devices and data path, not the model, weighting or input size) and
ends with the weights the run would have had without the interruption. One run at a time
works in a folder (`run.lock`); a new run into a folder with an earlier run's results needs
`--overwrite`, and those results stay until its first epoch is written. A NaN or infinite
value stops the run with one line naming it (the files on disk are the last finite epoch's);
a frame that does not decode stops it with one line naming the file, or is left out with
`--skip_bad_frames`. See docs/reliability.md.

Examples:

```
python train.py --config configs/synthetic.yaml
python train.py --multi_task_type uncertainty --img_resize 384 768 --output_size 1024 2048 \
    --gpus 0 1
python train.py --config configs/synthetic.yaml --cpu_replicas 2   # distributed path on CPU
python train.py --save_path runs/synthetic --resume               # continue a killed run
python train.py --config configs/synthetic.yaml --overwrite        # start runs/synthetic anew
```
"""

from __future__ import annotations

import argparse
import sys

from keras_mtl.console import add_verbose_flag, quiet_tensorflow

if __name__ == "__main__":
    quiet_tensorflow(sys.argv[1:])  # first: the imports below load TensorFlow

from keras_mtl.config import Config, load_config, resume_config  # noqa: E402
from keras_mtl.errors import FlagParser, run_cli  # noqa: E402
from keras_mtl.evaluation import format_training_results  # noqa: E402
from keras_mtl.flags import add_config_flags, config_overrides, validate_config  # noqa: E402
from keras_mtl.training import run_training  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """`--config`, one flag per config field, and `--verbose`."""
    parser = FlagParser(
        prog="train.py",
        description="Train the multi-task network; flags override --config.",
    )
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="YAML config (configs/*.yaml); flags override it"
    )
    add_config_flags(parser)
    add_verbose_flag(parser)
    return parser


def config_from_args(argv: list[str] | None = None) -> Config:
    """The resolved, validated `Config` of a command line (no data read, no device touched)."""
    args = build_parser().parse_args(argv)
    overrides = config_overrides(args)
    config = load_config(args.config, overrides)
    if config.train.resume:
        # The run's own saved config, not --config, says what is being continued.
        config = resume_config(config, overrides)
    return validate_config(config)


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    results = run_training(config)
    print(format_training_results(results, save_path=config.train.save_path))
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
