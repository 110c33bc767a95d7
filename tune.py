"""Searches task weights with keras-tuner; the objective is a weight-independent validation score.

Takes every config flag of train.py (data, model, training length, --gpus / --cpu_replicas,
--skip_bad_frames, ...) plus the search flags below. Rerunning the same command on the same
--save_path resumes the search; --overwrite discards its trials. Writes SAVE_PATH/summary.json
and summary.txt; with --export_best also model_best.keras and best_config.yaml (retrain with
`python train.py --config SAVE_PATH/best_config.yaml`). The work is `keras_mtl.tuning`.

Examples:

```
python tune.py --config configs/synthetic.yaml --data_path data/synthetic --epochs 3 \
    --max_trials 12 --tuner bayesian --save_path runs/tune --export_best
python tune.py ... --search method --single_task_results depth.json semantic.json motion.json
```
"""

from __future__ import annotations

import argparse
import sys

from keras_mtl.console import add_verbose_flag, quiet_tensorflow

if __name__ == "__main__":
    quiet_tensorflow(sys.argv[1:])  # first: the imports below load TensorFlow

from keras_mtl import tuning  # noqa: E402
from keras_mtl.config import load_config  # noqa: E402
from keras_mtl.errors import FlagParser, UserError, run_cli  # noqa: E402
from keras_mtl.evaluation import read_single_task_results  # noqa: E402
from keras_mtl.flags import add_config_flags, config_overrides, validate_config  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """`--config`, every config flag of train.py, the search flags and `--verbose`."""
    parser = FlagParser(
        prog="tune.py",
        description="Search task weights (and optionally lr or the method) with keras-tuner; the "
        "config flags set the data, model and the training of each trial.",
    )
    add = parser.add_argument
    add("--config", metavar="FILE.yaml", help="YAML config (configs/*.yaml); flags override it")
    add_config_flags(parser)
    add("--max_trials", type=int, required=True, help="trials of random and bayesian (required)")
    add(
        "--tuner",
        choices=tuning.TUNERS,
        default="random",
        help="search algorithm (default: random)",
    )
    add(
        "--search",
        choices=tuning.SEARCHES,
        default="weights",
        help="what to search (default: weights)",
    )
    add(
        "--single_task_results",
        nargs="+",
        metavar="FILE.json",
        help="evaluate.py JSON of the single-task models: the objective becomes Delta_m "
        "(default: none, the mean task score)",
    )
    add("--export_best", action="store_true", help="write the best trial's model and config")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.save_path is None:
        raise UserError("--save_path: required, the folder of the search (e.g. runs/tune)")
    if args.resume:
        raise UserError(
            "--resume: a search resumes by itself when rerun on the same --save_path "
            "(use --overwrite to start over)"
        )
    if args.single_task:
        raise UserError(
            "--single_task: tuning weighs the three tasks; train baselines with train.py"
        )
    if args.max_trials < 1:
        raise UserError(f"--max_trials {args.max_trials}: must be at least 1")
    config = validate_config(load_config(args.config, config_overrides(args)))
    single_task_results = None
    if args.single_task_results:
        single_task_results = read_single_task_results(args.single_task_results)
    summary = tuning.run_search(
        config,
        args.save_path,
        max_trials=args.max_trials,
        tuner=args.tuner,
        search=args.search,
        single_task_results=single_task_results,
        overwrite=config.train.overwrite,
        export_best=args.export_best,
    )
    print(tuning.format_summary_table(summary))
    print(f"best trial {summary['best']['trial_id']}: {summary['best']['hyperparameters']}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
