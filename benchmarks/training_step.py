"""Training-step time of every weighting method against vanilla, and of the network's BatchNorm
and precision variants against the stock float32 step, in one run.

Same network, batch, input size and data for every method; each method's `train_step` is traced
once (the first call, reported separately) and timed over `--steps` further calls in each of
`--rounds` interleaved rounds; the ratio to vanilla is the median over rounds of the per-round
ratio of median step times. Goals by what a method asks of the backward pass (`step_time_goal`):
per-task gradient norms (grad_norm, pseudo_grad_norm) or the representation's Gram matrix
(aligned_mtl_ub) <= 1.10x vanilla, loss-level methods (uncertainty, dwa, imtl_l) <= 1.03x,
per-task gradients (pcgrad, aligned_mtl) <= 2.0x, a second forward pass after the optimizer
step (famo) <= 1.45x.

Variants (`--variants`, vanilla, timed in the same rounds), `<batch norm>_<precision>[_xla]`:
`stock` is Keras' elementwise `keras.layers.BatchNormalization` (the step before this project's
fused BatchNorm), `fused` the default network (`keras_mtl.models.BatchNormalization`, TensorFlow's
fused kernel); `fp32`, `bf16` (`mixed_bfloat16`, no loss scaling) or `fp16` (`mixed_float16`,
loss-scaled); `_xla` compiles the step with `jit_compile=True`. `fused_fp32` is the vanilla
method's step itself. Each variant's ratio is to `stock_fp32` (goal for `fused_fp32`: <= 0.70).

Examples:

```
python benchmarks/training_step.py --quick
python benchmarks/training_step.py --img_resize 384 768 --batch_size 8 --json step_times.json
```
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_mtl.errors import run_cli  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402
from keras_mtl.weighting import WEIGHTING_NAMES, WEIGHTINGS, Weighting  # noqa: E402

METHODS = WEIGHTING_NAMES
BASELINE = "vanilla"  # every ratio is to this method's step time
# Step-time goals (x the baseline) by what a method asks of the trainer's backward pass.
LOSS_LEVEL_GOAL = 1.03  # a few scalar ops on the losses
GRADIENT_NORMS_GOAL = 1.10  # per-task norms from the split backward pass
TASK_GRADIENTS_GOAL = 2.0  # one backward pass through the shared trunk per task
# A forward pass is about a third of a training step; the goal leaves room for its losses.
LOSSES_AFTER_STEP_GOAL = 1.45

VARIANT_REFERENCE = "stock_fp32"  # every variant's ratio is to this step
DEFAULT_VARIANTS: tuple[str, ...] = ("stock_fp32", "fused_fp32", "stock_bf16", "fused_bf16")
VARIANT_GOALS: dict[str, float] = {"fused_fp32": 0.70}
PRECISIONS = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}  # -> --mixed_precision


def parse_variant(name: str) -> tuple[str, str, bool]:
    """`<stock|fused>_<fp32|bf16|fp16>[_xla]` -> (batch norm, precision, XLA)."""
    parts = name.split("_")
    if (
        len(parts) not in (2, 3)
        or parts[0] not in ("stock", "fused")
        or parts[1] not in PRECISIONS
        or parts[2:] not in ([], ["xla"])
    ):
        raise argparse.ArgumentTypeError(
            f"{name!r}: a variant is <stock|fused>_<fp32|bf16|fp16>[_xla], e.g. fused_bf16"
        )
    return parts[0], parts[1], parts[2:] == ["xla"]


def variant_name(name: str) -> str:
    parse_variant(name)
    return name


def step_time_goal(method: type[Weighting]) -> float:
    """The step-time goal of a weighting class, from what it asks of the backward pass."""
    if method.needs_task_gradients:
        return TASK_GRADIENTS_GOAL
    if method.needs_losses_after_step:
        return LOSSES_AFTER_STEP_GOAL
    if method.grad_norm_source is not None or method.needs_representation_gram:
        return GRADIENT_NORMS_GOAL
    return LOSS_LEVEL_GOAL


GOALS: dict[str, float] = {
    name: step_time_goal(method) for name, method in WEIGHTINGS.items() if name != BASELINE
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img_resize", nargs=2, type=int, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--width_mult", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after tracing")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds")
    parser.add_argument(
        "--variants",
        nargs="*",
        type=variant_name,
        default=list(DEFAULT_VARIANTS),
        metavar="VARIANT",
        help=f"BatchNorm/precision variants of vanilla (default: {' '.join(DEFAULT_VARIANTS)}; "
        "none: only the methods)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="64x128, width 0.25, batch 2, 5 steps (smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.img_resize, args.width_mult, args.batch_size, args.steps = (64, 128), 0.25, 2, 5
    if BASELINE not in args.methods:
        args.methods = [BASELINE, *args.methods]
    if args.variants and VARIANT_REFERENCE not in args.variants:
        args.variants = [VARIANT_REFERENCE, *args.variants]
    return args


def make_batch(img_resize, batch_size: int, seed: int = 0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    height, width = img_resize
    inputs = {
        name: tf.constant(rng.normal(size=(batch_size, height, width, 3)), tf.float32)
        for name in ("flow", "rgb")
    }
    depth = rng.uniform(2.0, 60.0, size=(batch_size, height, width, 1))
    depth[:, : height // 4] = 0.0  # invalid (sky)
    semantic = rng.integers(0, 5, size=(batch_size, height, width))
    semantic[:, :2] = 255
    targets = {
        "depth": tf.constant(depth, tf.float32),
        "semantic": tf.constant(semantic, tf.int32),
        "motion": tf.constant(rng.integers(0, 2, size=(batch_size, height, width)), tf.int32),
    }
    return inputs, targets


def build_step(method: str, args, weights, variant: str = "fused_fp32"):
    """(trainer, tf.function of its train_step) of `method` in `variant`, with `weights`."""
    import keras
    import tensorflow as tf

    from keras_mtl.config import MIXED_PRECISION_POLICIES, load_config
    from keras_mtl.models.blocks import BatchNormalization, batch_norm_class
    from keras_mtl.training import build_trainer

    batch_norm, precision, xla = parse_variant(variant)
    mixed_precision = PRECISIONS[precision]
    config = load_config(
        None,
        {
            "multi_task_type": method,
            "img_resize": tuple(args.img_resize),
            "width_mult": args.width_mult,
            "batch_size": args.batch_size,
            "warmup_epochs": 0,
            "mixed_precision": mixed_precision,
        },
    )
    norm = keras.layers.BatchNormalization if batch_norm == "stock" else BatchNormalization
    previous = keras.config.dtype_policy()
    # As run_training does: the policy is set before the trainer is built.
    keras.config.set_dtype_policy(MIXED_PRECISION_POLICIES[mixed_precision])
    try:
        with batch_norm_class(norm):
            trainer = build_trainer(config)
    finally:
        keras.config.set_dtype_policy(previous)
    if weights is not None:
        trainer.model.set_weights(weights)
    return trainer, tf.function(trainer.train_step, jit_compile=xla)


def time_method(step, batch, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        logs = step(batch)
        float(logs["loss"])  # wait for the step
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    batch = make_batch(args.img_resize, args.batch_size)
    steps, weights, results = {}, None, {}
    # Keys: the methods (fused float32), then the variants of vanilla; `fused_fp32` is vanilla.
    builds = [(method, method, "fused_fp32") for method in args.methods]
    builds += [(v, BASELINE, v) for v in args.variants if v != "fused_fp32"]
    for key, method, variant in builds:
        trainer, step = build_step(method, args, weights, variant)
        if weights is None:
            weights = trainer.model.get_weights()
        start = time.perf_counter()
        float(step(batch)["loss"])
        trace_s = time.perf_counter() - start
        for _ in range(args.warmup):
            float(step(batch)["loss"])
        steps[key] = step
        results[key] = {"trace_s": trace_s, "times": []}
    # Interleaved rounds: load changes on a shared machine hit every method alike.
    round_medians: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            times = time_method(step, batch, args.steps)
            results[key]["times"] += times
            round_medians[key].append(statistics.median(times))

    def ratio_to(key: str, reference: str) -> float:
        # Paired per round, then the median over rounds: a burst of load from other tenants
        # that lands on one step's rounds moves one ratio, not the result.
        return statistics.median(
            own / base
            for own, base in zip(round_medians[key], round_medians[reference], strict=True)
        )

    rows = []
    for method in args.methods:
        median = statistics.median(results[method]["times"])
        fastest = min(results[method]["times"])
        ratio = ratio_to(method, BASELINE)
        goal = GOALS.get(method)
        rows.append(
            {
                "method": method,
                "median_step_s": median,
                "ratio_vs_vanilla": ratio,
                # The fastest step is the least disturbed by other load on a shared machine.
                "min_step_s": fastest,
                "min_ratio_vs_vanilla": fastest / min(results[BASELINE]["times"]),
                "goal": goal,
                "meets_goal": None if goal is None else ratio <= goal,
                "first_step_s": results[method]["trace_s"],
                "step_times_s": results[method]["times"],
            }
        )
    header = f"{'method':<18}{'median s/step':>14}{'x vanilla':>11}{'goal':>7}{'ok':>5}"
    header += f"{'min x van.':>11}{'1st step s':>12}"
    print(
        f"training step, {args.img_resize[0]}x{args.img_resize[1]}, batch {args.batch_size}, "
        f"width {args.width_mult}, {args.steps * args.rounds} timed steps, "
        f"{platform.processor() or platform.machine()}, TF {tf.__version__}"
    )
    print(header)
    for row in rows:
        goal = "" if row["goal"] is None else f"{row['goal']:.2f}"
        ok = "" if row["meets_goal"] is None else ("yes" if row["meets_goal"] else "NO")
        print(
            f"{row['method']:<18}{row['median_step_s']:>14.4f}{row['ratio_vs_vanilla']:>11.3f}"
            f"{goal:>7}{ok:>5}{row['min_ratio_vs_vanilla']:>11.3f}{row['first_step_s']:>12.1f}"
        )
    variants = []
    for variant in args.variants:
        key = BASELINE if variant == "fused_fp32" else variant
        goal = VARIANT_GOALS.get(variant)
        ratio = ratio_to(key, VARIANT_REFERENCE)
        variants.append(
            {
                "variant": variant,
                "median_step_s": statistics.median(results[key]["times"]),
                f"ratio_vs_{VARIANT_REFERENCE}": ratio,
                "goal": goal,
                "meets_goal": None if goal is None else ratio <= goal,
                "first_step_s": results[key]["trace_s"],
            }
        )
    if variants:
        print(
            f"{'variant (vanilla)':<18}{'median s/step':>14}{'x ' + VARIANT_REFERENCE:>14}{'goal':>7}"
        )
        for row in variants:
            goal = "" if row["goal"] is None else f"{row['goal']:.2f}"
            print(
                f"{row['variant']:<18}{row['median_step_s']:>14.4f}"
                f"{row[f'ratio_vs_{VARIANT_REFERENCE}']:>14.3f}{goal:>7}"
            )
    if args.json:
        out = Path(args.json)
        payload = {
            "benchmark": "training_step",
            "img_resize": list(args.img_resize),
            "batch_size": args.batch_size,
            "width_mult": args.width_mult,
            "steps": args.steps * args.rounds,
            "devices": [d.name for d in tf.config.list_logical_devices()],
            "results": rows,
            "variants": variants,
        }
        write_json_atomic(out, payload)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
