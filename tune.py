"""Searches task weights with keras-tuner; the objective is a weight-independent validation score.

Takes every flag of train.py (data, model, training length, --gpus / --cpu_replicas, ...) plus
the search flags below. Rerunning the same command on the same --save_path resumes the search.
Writes SAVE_PATH/summary.json and summary.txt; with --export_best also model_best.keras and
best_config.yaml (retrain with `python train.py --config SAVE_PATH/best_config.yaml`).

Examples:

```
python tune.py --config configs/synthetic.yaml --data_path data/synthetic --epochs 3 \
    --max_trials 12 --tuner bayesian --save_path runs/tune --export_best
python tune.py ... --search method --single_task_results depth.json semantic.json motion.json
```
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_mtl.errors import UserError, run_cli

TUNE_FLAGS = (
    "max_trials",
    "tuner",
    "search",
    "single_task_results",
    "overwrite",
    "export_best",
)


def build_parser() -> argparse.ArgumentParser:
    """train.py's parser (every training flag) plus the search flags."""
    import train

    parser = train.build_parser()
    parser.prog = "tune.py"
    parser.description = (
        "Search task weights (and optionally lr or the method) with keras-tuner; flags of "
        "train.py set the data, model and the training of each trial."
    )
    from keras_mtl.tuning import SEARCHES, TUNERS

    add = parser.add_argument
    add("--max_trials", type=int, required=True, help="trials (random, bayesian)")
    add("--tuner", choices=TUNERS, default="random")
    add("--search", choices=SEARCHES, default="weights", help="what to search (default weights)")
    add(
        "--single_task_results",
        nargs="+",
        metavar="FILE.json",
        help="evaluate.py JSON of the single-task models: the objective becomes Delta_m",
    )
    add("--overwrite", action="store_true", help="discard the trials already in --save_path")
    add("--export_best", action="store_true", help="write the best trial's model and config")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import train

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
    # As train.config_from_args, on the training flags only.
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", *TUNE_FLAGS) and value is not None
    }
    if "gpus" in overrides:
        overrides["gpus"] = tuple(overrides["gpus"])
    from keras_mtl.config import load_config

    config = load_config(args.config, overrides)
    train.validate(config)

    single_task_results = None
    if args.single_task_results:
        from evaluate import read_single_task_results

        single_task_results = read_single_task_results(args.single_task_results)

    from keras_mtl.tuning import format_summary_table, run_search

    summary = run_search(
        config,
        args.save_path,
        max_trials=args.max_trials,
        tuner=args.tuner,
        search=args.search,
        single_task_results=single_task_results,
        overwrite=args.overwrite,
        export_best=args.export_best,
    )
    print(format_summary_table(summary))
    print(f"best trial {summary['best']['trial_id']}: {summary['best']['hyperparameters']}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
