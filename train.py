"""Trains the multi-task network (depth, semantic, motion from RGB + optical flow).

Every flag maps to one field of `keras_mtl.config.Config` (flag name = field name) and
overrides the `--config` file. The run folder (`--save_path`) receives `checkpoint.keras`
(every epoch), `model_best.keras`, `history.csv`, `config.yaml` and TensorBoard `logs/`.
`--resume` continues from the run folder's own `config.yaml` (flags given with it may extend
`--epochs` or change the devices and data path, not the model, weighting or input size).

Examples:

```
python train.py --config configs/synthetic.yaml
python train.py --multi_task_type uncertainty --img_resize 384 768 --output_size 1024 2048 \
    --gpus 0 1
python train.py --config configs/synthetic.yaml --cpu_replicas 2   # distributed path on CPU
python train.py --save_path runs/synthetic --resume               # continue a killed run
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_mtl.errors import UserError, run_cli

SIZE_MULTIPLE = 16  # the network's output stride


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit 2) instead of printing the usage."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see python train.py --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="train.py",
        description="Train the multi-task network; flags override --config.",
    )
    add = parser.add_argument
    add("--config", help="YAML config (configs/*.yaml); flags override it")
    add(
        "--multi_task_type",
        help="task weighting: vanilla (default), grad_norm, pseudo_grad_norm (alias learned), "
        "uncertainty, dwa, pcgrad",
    )
    add("--img_resize", nargs=2, type=int, metavar=("H", "W"), help="network input size")
    add("--output_size", nargs=2, type=int, metavar=("H", "W"), help="evaluation size")
    add("--gpus", nargs="+", type=int, metavar="ID", help="GPU ids (MirroredStrategy)")
    add("--cpu_replicas", type=int, metavar="N", help="N logical CPU replicas (testing)")
    add("--data_path", help="dataset root in the Cityscapes multitask layout")
    add("--flow_dir", help="flow folder under --data_path (default: the original's name)")
    add("--save_path", help="run folder")
    add("--epochs", type=int)
    add("--steps_per_epoch", type=int, help="default: one pass over the training split")
    add("--val_steps", type=int, help="default: the whole validation split")
    add("--batch_size", type=int, help="global batch size (over all replicas)")
    add("--lr", type=float, help="learning rate after warm-up")
    add("--weight_decay", type=float, help="L2 weight decay (coupled, as PyTorch Adam)")
    add("--width_mult", type=float, help="MobileNetV2 width multiplier")
    add("--backbone", help="mobilenetv2_ericsun (default) or mobilenetv2")
    add("--depth_scale", type=float, help="metres per unit of the linear depth head (default 1)")
    add("--depth_head", choices=("log", "linear"), help="log (default, positive) or linear")
    add("--depth_init", type=float, help="log head's initial metres (default: train median)")
    add(
        "--augment_zoom",
        choices=("isotropic", "original"),
        help="isotropic (default: depth divided by the zoom) or original (the seed's)",
    )
    add("--depth_loss", choices=("log_l1", "silog", "smooth_l1"), help="default log_l1")
    add("--semantic_classes", type=int, choices=(5, 19))
    add("--task_weights", nargs=3, type=float, metavar=("DEPTH", "SEMANTIC", "MOTION"))
    add("--pretrained", metavar="CKPT", help="initialise from a .keras checkpoint")
    add("--resume", action="store_true", default=None, help="continue from checkpoint.keras")
    add("--single_task", choices=("depth", "semantic", "motion"), help="single-task baseline")
    add("--seed", type=int)
    add("--mixed_precision", action="store_true", default=None, help="mixed_float16")
    add("--class_weights", action="store_true", default=None, help="original class weights")
    return parser


def _check_size(flag: str, size, multiple: int = 1) -> None:
    if size is None:
        return
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        what = f"positive multiples of {multiple}" if multiple > 1 else "positive"
        raise UserError(
            f"{flag} {height} {width}: height and width must be {what} (e.g. {flag} 384 768)"
        )


def validate(config) -> None:
    """Checks the flags that need no data or TensorFlow device; raises UserError."""
    from keras_mtl.weighting import resolve_name

    config.weighting.multi_task_type = resolve_name(config.weighting.multi_task_type)
    _check_size("--img_resize", config.data.img_resize, SIZE_MULTIPLE)
    _check_size("--output_size", config.data.output_size)
    train = config.train
    for flag, value in (("--epochs", train.epochs), ("--batch_size", train.batch_size)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if train.steps_per_epoch is not None and train.steps_per_epoch < 1:
        raise UserError(f"--steps_per_epoch {train.steps_per_epoch}: must be >= 1")
    if train.lr <= 0:
        raise UserError(f"--lr {train.lr}: must be > 0")
    if train.weight_decay < 0:
        raise UserError(f"--weight_decay {train.weight_decay}: must be >= 0")
    if config.data.semantic_classes not in (5, 19):
        raise UserError(f"--semantic_classes {config.data.semantic_classes}: choose 5 or 19")
    if train.cpu_replicas and train.cpu_replicas < 0:
        raise UserError(f"--cpu_replicas {train.cpu_replicas}: must be >= 0")
    if train.gpus and train.cpu_replicas:
        raise UserError("--gpus and --cpu_replicas: give one of them, not both")
    replicas = len(train.gpus) or train.cpu_replicas or 1
    if train.batch_size % replicas:
        raise UserError(
            f"--batch_size {train.batch_size}: the global batch must divide evenly over "
            f"{replicas} replicas"
        )


def config_from_args(argv: list[str] | None = None):
    """The resolved, validated `Config` of a command line (no data read, no device touched)."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    if "gpus" in overrides:
        overrides["gpus"] = tuple(overrides["gpus"])
    from keras_mtl.config import load_config, resume_config

    config = load_config(args.config, overrides)
    if config.train.resume:
        # The run's own saved config, not --config, says what is being continued.
        config = resume_config(config, overrides)
    validate(config)
    return config


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = config_from_args(argv)
    from keras_mtl.training import run_training

    results = run_training(config)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
