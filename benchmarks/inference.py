"""Inference latency: one multi-task pass vs the three single-task models run one after another.

Same random (normalised) input for all, batch 1, each model's forward pass compiled once with
`tf.function` (`model(x, training=False)`), warm-up calls first, then N timed rounds. Each round
times the multi-task model and the three single-task models back to back (interleaved, so load
changes on a shared machine hit both alike); the table reports medians, and the ratio is the
median over rounds of each round's multitask / (depth + semantic + motion). The goal of a
multi-task network is a latency ratio multitask / (depth + semantic + motion) <= 0.55.

Usage:

```
python benchmarks/inference.py                     # 384x768, 20 rounds
python benchmarks/inference.py --quick             # 192x384, 3 rounds (a smoke run)
python benchmarks/inference.py --json results/inference.json
```
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mtl.complexity import count_macs  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402
from keras_mtl.models import (  # noqa: E402
    BACKBONES,
    OUTPUT_STRIDE,
    build_multitask_model,
    build_single_task_model,
)
from keras_mtl.tasks import TASK_NAMES  # noqa: E402

GOAL_RATIO = 0.55


def compiled_forward(model) -> Callable[[dict], dict]:
    """`model(inputs, training=False)` traced once with tf.function, returning numpy arrays."""
    forward = tf.function(lambda inputs: model(inputs, training=False))

    def run(inputs: dict) -> dict:
        # .numpy() waits for the result, so the timing covers the whole computation.
        return {name: value.numpy() for name, value in forward(inputs).items()}

    return run


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--img_resize", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--semantic_classes", type=int, default=5)
    parser.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2_ericsun")
    parser.add_argument("--single_task_backbone", choices=BACKBONES, default="mobilenetv2")
    parser.add_argument("--width_mult", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="192x384, 3 rounds, 1 warm-up")
    parser.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    img_size = tuple(args.img_resize or ((192, 384) if args.quick else (384, 768)))
    rounds = args.rounds or (3 if args.quick else 20)
    warmup = 1 if args.quick else args.warmup
    if img_size[0] % OUTPUT_STRIDE or img_size[1] % OUTPUT_STRIDE or min(img_size) <= 0:
        raise UserError(f"--img_resize {img_size[0]} {img_size[1]}: use multiples of 16")
    if rounds < 1:
        raise UserError(f"--rounds {rounds}: must be at least 1")

    models = {
        "multitask": build_multitask_model(
            img_size, args.semantic_classes, backbone=args.backbone, width_mult=args.width_mult
        )
    }
    for task in TASK_NAMES:
        models[task] = build_single_task_model(
            task,
            img_size,
            args.semantic_classes,
            backbone=args.single_task_backbone,
            width_mult=args.width_mult,
        )
    rng = np.random.default_rng(0)
    inputs = {
        name: tf.constant(rng.normal(0.0, 1.0, (1, *img_size, 3)).astype("float32"))
        for name in ("flow", "rgb")
    }
    runners = {}
    for name, model in models.items():
        forward = compiled_forward(model)
        model_inputs = {key: inputs[key] for key in model.input}
        runners[name] = lambda forward=forward, model_inputs=model_inputs: forward(model_inputs)

    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    singles_total = []
    for _ in range(rounds):
        times["multitask"].append(timed(runners["multitask"]))
        single_times = [timed(runners[task]) for task in TASK_NAMES]
        for task, value in zip(TASK_NAMES, single_times, strict=True):
            times[task].append(value)
        singles_total.append(sum(single_times))

    median = {name: statistics.median(values) for name, values in times.items()}
    median["singles_total"] = statistics.median(singles_total)
    # Paired per round, then the median: a burst of other load in one round moves one ratio.
    ratio = statistics.median(
        multi / singles for multi, singles in zip(times["multitask"], singles_total, strict=True)
    )
    params = {name: int(model.count_params()) for name, model in models.items()}
    params["singles_total"] = sum(params[task] for task in TASK_NAMES)
    gmacs = {name: count_macs(model) / 1e9 for name, model in models.items()}
    gmacs["singles_total"] = sum(gmacs[task] for task in TASK_NAMES)

    print(
        f"inference at {img_size[0]}x{img_size[1]}, batch 1, CPU ({os.cpu_count()} cores), "
        f"median of {rounds} rounds after {warmup} warm-up"
    )
    print(f"{'model':<16} {'ms':>9} {'GMACs':>7} {'params':>11}")
    for name in (*models, "singles_total"):
        label = "3 single (seq.)" if name == "singles_total" else name
        print(f"{label:<16} {median[name]:>9.1f} {gmacs[name]:>7.3f} {params[name]:>11,}")
    verdict = "meets" if ratio <= GOAL_RATIO else "misses"
    print(f"latency ratio multitask / 3 single = {ratio:.3f} ({verdict} the goal <= {GOAL_RATIO})")
    if args.json:
        write_json_atomic(
            args.json,
            {
                "img_size": list(img_size),
                "batch": 1,
                "rounds": rounds,
                "warmup": warmup,
                "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                "tensorflow": tf.__version__,
                "median_ms": median,
                "gmacs": gmacs,
                "params": params,
                "latency_ratio": ratio,
                "goal_ratio": GOAL_RATIO,
            },
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
