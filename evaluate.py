"""Evaluate a trained keras-mtl model on a split: metrics table, JSON, saved predictions.

The work is `keras_mtl.evaluation`; see `python evaluate.py --help` and docs/evaluation.md.

```
python evaluate.py --data_path data/synthetic --checkpoint runs/x/model_best.keras \
    --img_resize 384 768 --output_size 1024 2048 --json runs/x/eval.json \
    [--save_predictions runs/x/predictions [--overwrite]] \
    [--single_task_results depth.json semantic.json motion.json]
```
"""

from __future__ import annotations

import argparse
import sys

from keras_mtl.console import add_verbose_flag, quiet_tensorflow

if __name__ == "__main__":
    quiet_tensorflow(sys.argv[1:])  # first: the imports below load TensorFlow

from keras_mtl import evaluation  # noqa: E402
from keras_mtl.errors import FlagParser, UserError, run_cli  # noqa: E402
from keras_mtl.flags import add_config_flags  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402

SHARED_FLAGS = (
    "data_path",
    "flow_dir",
    "img_resize",
    "output_size",
    "semantic_classes",
    "labels",
)


def build_parser() -> argparse.ArgumentParser:
    """The `evaluate.py` argument parser."""
    parser = FlagParser(
        prog="evaluate.py",
        description="Evaluate a keras-mtl model: ARD%, mIoU, GMACs, Delta_m; saved predictions.",
    )
    add_config_flags(
        parser,
        (*SHARED_FLAGS, "batch_size", "overwrite"),
        defaults={"batch_size": 4},
        default_help={"semantic_classes": "the model's own; 5 for a SavedModel"},
        required=("data_path", "img_resize", "output_size"),
    )
    add = parser.add_argument
    add(
        "--checkpoint",
        required=True,
        metavar="FILE.keras|DIR",
        help=".keras file or SavedModel folder to evaluate (required)",
    )
    add("--split", default="val", metavar="SPLIT", help="split to evaluate (default: val)")
    add("--json", metavar="OUT.json", help="write the results here (atomically)")
    add("--save_predictions", metavar="DIR", help="write per-frame prediction PNGs here")
    add(
        "--single_task_results",
        nargs="+",
        metavar="FILE.json",
        help="JSON results of the single-task models (one or several files); adds Delta_m",
    )
    add("--no_progress", action="store_true", help="hide the progress bar")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.overwrite and not args.save_predictions:
        raise UserError("--overwrite only applies with --save_predictions DIR")
    single_task = None
    if args.single_task_results:
        single_task = evaluation.read_single_task_results(args.single_task_results)
    results = evaluation.evaluate(
        args.data_path,
        args.checkpoint,
        args.img_resize,
        args.output_size,
        split=args.split,
        semantic_classes=args.semantic_classes,
        batch_size=args.batch_size,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        flow_dir=args.flow_dir,
        labels=args.labels,
    )
    if single_task is not None:
        evaluation.add_delta_m(results, single_task)
    print(evaluation.format_table(results))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
