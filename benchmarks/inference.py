"""Inference latency of the network's forms, and multi-task vs three single-task networks.

Every form runs the same input at batch 1, its forward pass compiled once (`tf.function` of
`model(x, training=False)`, or an onnxruntime session), warm-up calls first, then N timed
rounds. A round times every form back to back (interleaved, so load changes on a shared machine
hit them alike); a ratio is the median over rounds of that round's ratio. The forms:

- `stock_fp32`: the network as built before the fused BatchNorm (Keras' elementwise
  `keras.layers.BatchNormalization`), float32: the reference of every ratio;
- `folded_fp32`: its inference form (`keras_mtl.models.fold_for_inference`: BatchNorms folded
  into the convolutions, decoder tails before their upsampling), what evaluate.py and export.py
  run;
- `stock_bf16`, `folded_bf16`: the same under the `mixed_bfloat16` policy (oneDNN runs bfloat16
  convolutions on AMX where the CPU has it);
- `onnx`: the folded network exported with `model.export(format="onnx")`, on onnxruntime's CPU
  provider (when tf2onnx and onnxruntime are installed);
- `folded_fp32_xla` (`--xla`): the folded network under `tf.function(jit_compile=True)`.

The multi-task network is compared with the three single-task networks run one after another
(`stock_fp32` and `folded_fp32`): `latency_ratio` = multitask / (depth + semantic + motion) of
the folded forms, goal <= 0.50. The numerics of each form against its float32 counterpart
(depth relative error, class agreement) are measured on `--data_path` frames, or on random
inputs; with `--checkpoint`, on the forms of that trained network (an untrained network's
logits barely differ between classes, so its agreement understates a trained one's).

Usage:

```
python benchmarks/inference.py                     # 384x768, 20 rounds
python benchmarks/inference.py --quick             # 192x384, 5 rounds
python benchmarks/inference.py --quick --checkpoint runs/x/model_best.keras \
    --data_path data/synthetic --json results/inference.json
```
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import importlib.util  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mtl.complexity import count_macs  # noqa: E402
from keras_mtl.data.layout import FLOW_DIR  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402
from keras_mtl.models import (  # noqa: E402
    BACKBONES,
    OUTPUT_STRIDE,
    MultiTaskNet,
    build_multitask_model,
    build_single_task_model,
    fold_for_inference,
)
from keras_mtl.models.blocks import batch_norm_class  # noqa: E402
from keras_mtl.tasks import INPUT_NAMES, TASK_NAMES  # noqa: E402

GOAL_RATIO = 0.50
REFERENCE = "stock_fp32"
# Forms timed for the multi-task network; the single-task networks run the first two.
FORMS: tuple[str, ...] = ("stock_fp32", "folded_fp32", "stock_bf16", "folded_bf16", "onnx")
SINGLE_TASK_FORMS: tuple[str, ...] = ("stock_fp32", "folded_fp32")
XLA_FORM = "folded_fp32_xla"
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime"))


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Networks built inside use `policy` (then the previous global policy is back)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_form(build: Callable[[], keras.Model], form: str, weights: list) -> keras.Model:
    """The network `build()` makes, in `form` (`stock_*`, `folded_*`), with `weights`."""
    batch_norm, precision = form.split("_")[:2]
    policy = "mixed_bfloat16" if precision == "bf16" else "float32"
    with dtype_policy(policy), batch_norm_class(keras.layers.BatchNormalization):
        model = build()
    model.set_weights(weights)
    return fold_for_inference(model) if batch_norm == "folded" else model


def compiled_forward(model: keras.Model, jit_compile: bool = False) -> Callable[[dict], dict]:
    """`model(inputs, training=False)` traced once with tf.function, returning numpy arrays."""
    forward = tf.function(lambda inputs: model(inputs, training=False), jit_compile=jit_compile)
    names = list(model.input)

    def run(inputs: dict) -> dict:
        outputs = forward({name: tf.convert_to_tensor(inputs[name]) for name in names})
        # .numpy() waits for the result, so the timing covers the whole computation.
        return {name: value.numpy() for name, value in outputs.items()}

    return run

    return run


def onnx_forward(model: keras.Model, directory: str) -> Callable[[dict], dict]:
    """`model` exported with Keras' ONNX exporter, run by onnxruntime's CPU provider."""
    import onnxruntime

    from keras_mtl.export import ONNX_OPSET

    path = os.path.join(directory, f"{model.name}.onnx")
    signature = [
        {
            name: tf.TensorSpec((None, *tensor.shape[1:]), tf.float32, name=name)
            for name, tensor in model.input.items()
        }
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # Keras' tf2onnx patch
        model.export(
            path, format="onnx", verbose=False, input_signature=signature, opset_version=ONNX_OPSET
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    inputs_of = [tensor.name for tensor in session.get_inputs()]

    def run(inputs: dict) -> dict:
        feed = {name: np.asarray(inputs[name]) for name in inputs_of}
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1000.0


def compare(reference: Sequence[Mapping], candidate: Sequence[Mapping]) -> dict[str, float]:
    """Depth relative error (mean, max over pixels) and class agreement (%) of `candidate`
    against `reference`, over the same frames."""
    depth_ref = np.concatenate([np.ravel(o["depth"]) for o in reference]).astype(np.float64)
    depth_new = np.concatenate([np.ravel(o["depth"]) for o in candidate]).astype(np.float64)
    relative = np.abs(depth_new - depth_ref) / np.maximum(np.abs(depth_ref), 1e-6)
    result = {
        "depth_relative_error_mean": float(np.mean(relative)),
        "depth_relative_error_max": float(np.max(relative)),
    }
    for task in ("semantic", "motion"):
        agree = [
            np.argmax(a[task], axis=-1) == np.argmax(b[task], axis=-1)
            for a, b in zip(reference, candidate, strict=True)
        ]
        result[f"{task}_agreement_percent"] = float(100.0 * np.mean(np.concatenate(agree)))
    return result


def numerics_frames(args, img_size: tuple[int, int], semantic_classes: int) -> list[dict]:
    """Normalised input frames for the numerics: `--data_path` val frames, or random."""
    if not args.data_path:
        rng = np.random.default_rng(1)
        return [
            {
                name: rng.normal(0.0, 1.0, (1, *img_size, 3)).astype("float32")
                for name in INPUT_NAMES
            }
            for _ in range(args.num_frames)
        ]
    from keras_mtl.data.pipeline import normalize_inputs
    from keras_mtl.export import load_frames

    raw, _ = load_frames(
        args.data_path, args.split, img_size, args.num_frames, semantic_classes, args.flow_dir
    )
    frames = []
    for frame in raw:
        flow, rgb = normalize_inputs(frame["flow"], frame["rgb"])
        frames.append({"flow": np.asarray(flow), "rgb": np.asarray(rgb)})
    return frames


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--img_resize", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--semantic_classes", type=int, default=5)
    parser.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2_ericsun")
    parser.add_argument("--single_task_backbone", choices=BACKBONES, default="mobilenetv2")
    parser.add_argument("--width_mult", type=float, default=1.0)
    parser.add_argument(
        "--forms",
        nargs="+",
        choices=FORMS,
        default=list(FORMS),
        help=f"forms of the multi-task network to time (default: all; {REFERENCE} always)",
    )
    parser.add_argument("--xla", action="store_true", help=f"also time {XLA_FORM}")
    parser.add_argument(
        "--checkpoint",
        metavar="FILE.keras",
        help="trained multi-task network for the numerics (its forms at this size); the "
        "timing uses --width_mult networks with random weights",
    )
    parser.add_argument("--data_path", metavar="DIR", help="frames for the numerics")
    parser.add_argument("--flow_dir", default=FLOW_DIR, metavar="NAME")
    parser.add_argument("--split", default="val", metavar="SPLIT")
    parser.add_argument("--num_frames", type=int, default=4, help="frames for the numerics")
    parser.add_argument("--quick", action="store_true", help="192x384, 5 rounds, 1 warm-up")
    parser.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    args.img_size = tuple(args.img_resize or ((192, 384) if args.quick else (384, 768)))
    args.rounds = args.rounds or (5 if args.quick else 20)
    args.warmup = 1 if args.quick else args.warmup
    height, width = args.img_size
    if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE or min(args.img_size) <= 0:
        raise UserError(f"--img_resize {height} {width}: use multiples of 16")
    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: must be at least 1")
    # The reference and the folded network (the latency ratio's) are always timed.
    forms = [REFERENCE, "folded_fp32"]
    forms += [form for form in args.forms if form not in forms]
    if "onnx" in forms and not HAS_ONNX:
        print("onnx: tf2onnx/onnxruntime not installed (pip install -r requirements.txt); skipped")
        forms.remove("onnx")
    args.forms = [*forms, *([XLA_FORM] if args.xla else [])]
    return args


def multitask_runners(
    build: Callable[[], keras.Model], weights: list, forms: Sequence[str], scratch: str
) -> tuple[dict[str, Callable[[dict], dict]], dict[str, keras.Model]]:
    """A runner per form of the network `build()` makes (with `weights`), and the models."""
    runners, models = {}, {}
    for form in forms:
        base = "folded_fp32" if form in ("onnx", XLA_FORM) else form
        if base not in models:
            models[base] = build_form(build, base, weights)
        if form == "onnx":
            runners[form] = onnx_forward(models[base], scratch)
        else:
            runners[form] = compiled_forward(models[base], jit_compile=form == XLA_FORM)
    return runners, models


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Each network's forward is its own tf.function of the same lambda: tracing each once is
    # intended, TensorFlow's "frequent retracing" warning about it is not useful here.
    tf.get_logger().setLevel("ERROR")
    img_size = args.img_size
    semantic_classes, width_mult = args.semantic_classes, args.width_mult

    def build_multitask() -> keras.Model:
        return build_multitask_model(
            img_size, semantic_classes, backbone=args.backbone, width_mult=width_mult
        )

    builders = {"multitask": build_multitask}
    for task in TASK_NAMES:
        builders[task] = lambda task=task: build_single_task_model(
            task,
            img_size,
            semantic_classes,
            backbone=args.single_task_backbone,
            width_mult=width_mult,
        )
    rng = np.random.default_rng(0)
    inputs = {
        name: tf.constant(rng.normal(0.0, 1.0, (1, *img_size, 3)).astype("float32"))
        for name in INPUT_NAMES
    }

    with tempfile.TemporaryDirectory(prefix="keras_mtl_onnx_") as scratch:
        keras.utils.set_random_seed(0)
        multitask, models = multitask_runners(
            build_multitask, build_multitask().get_weights(), args.forms, scratch
        )
        runners = {("multitask", form): run for form, run in multitask.items()}
        for task in TASK_NAMES:
            task_weights = builders[task]().get_weights()  # the same weights in each form
            for form in SINGLE_TASK_FORMS:
                model = build_form(builders[task], form, task_weights)
                runners[task, form] = compiled_forward(model)
                models[f"{task}_{form}"] = model

        for _ in range(args.warmup):
            for run in runners.values():
                run(inputs)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
        for _ in range(args.rounds):
            for key, run in runners.items():
                times[key].append(timed(lambda run=run: run(inputs)))

        # Numerics of each form against its float32 counterpart: on the timed network, or on
        # the trained network of --checkpoint (its own architecture, at this size).
        numerics_runners, numerics_classes = multitask, semantic_classes
        if args.checkpoint:
            from keras_mtl.checkpoints import load_model

            trained = load_model(args.checkpoint, flag="--checkpoint", multitask=True)
            config = {**trained.get_config(), "img_size": list(img_size)}
            numerics_classes = config["semantic_classes"]
            numerics_runners, _ = multitask_runners(
                lambda: MultiTaskNet.from_config(config),
                trained.get_weights(),
                args.forms,
                scratch,
            )
        frames = numerics_frames(args, img_size, numerics_classes)
        outputs = {form: [run(frame) for frame in frames] for form, run in numerics_runners.items()}

    def per_round_ratio(numerator: list[float], denominator: list[float]) -> float:
        # Paired per round, then the median: a burst of other load moves one ratio.
        return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))

    singles = {
        form: [
            sum(values) for values in zip(*(times[task, form] for task in TASK_NAMES), strict=True)
        ]
        for form in SINGLE_TASK_FORMS
    }
    latency_ratios = {
        form: per_round_ratio(times["multitask", form], singles[form]) for form in SINGLE_TASK_FORMS
    }
    forms = {
        form: {
            "median_ms": statistics.median(times["multitask", form]),
            f"ratio_vs_{REFERENCE}": per_round_ratio(
                times["multitask", form], times["multitask", REFERENCE]
            ),
        }
        for form in args.forms
    }
    counterparts = {
        "folded_fp32": REFERENCE,
        "stock_bf16": REFERENCE,
        "folded_bf16": "folded_fp32",
        "onnx": "folded_fp32",
        XLA_FORM: "folded_fp32",
    }
    numerics = {}
    for form, reference in counterparts.items():
        if form in outputs and reference in outputs:
            numerics[form] = {"reference": reference, **compare(outputs[reference], outputs[form])}

    reference_models = {name: models[f"{name}_{REFERENCE}"] for name in TASK_NAMES}
    reference_models["multitask"] = models[REFERENCE]
    params = {name: int(model.count_params()) for name, model in reference_models.items()}
    params["singles_total"] = sum(params[task] for task in TASK_NAMES)
    gmacs = {name: count_macs(model) / 1e9 for name, model in reference_models.items()}
    gmacs["singles_total"] = sum(gmacs[task] for task in TASK_NAMES)
    single_ms = {
        form: {task: statistics.median(times[task, form]) for task in TASK_NAMES}
        | {"singles_total": statistics.median(singles[form])}
        for form in SINGLE_TASK_FORMS
    }

    print(
        f"inference at {img_size[0]}x{img_size[1]}, batch 1, CPU ({os.cpu_count()} cores), "
        f"median of {args.rounds} rounds after {args.warmup} warm-up; numerics of "
        f"{args.checkpoint or 'the timed network'} on {len(frames)} "
        f"{'frames of ' + args.data_path if args.data_path else 'random inputs'}"
    )
    print(f"{'multi-task form':<18}{'ms':>9}{'x ' + REFERENCE:>16}  numerics vs its fp32 form")
    for form, row in forms.items():
        note = ""
        if form in numerics:
            n = numerics[form]
            note = (
                f"depth rel. err mean {n['depth_relative_error_mean']:.1e} max "
                f"{n['depth_relative_error_max']:.1e}, agreement sem "
                f"{n['semantic_agreement_percent']:.2f}% mot {n['motion_agreement_percent']:.2f}%"
            )
        print(f"{form:<18}{row['median_ms']:>9.1f}{row[f'ratio_vs_{REFERENCE}']:>16.3f}  {note}")
    for form in SINGLE_TASK_FORMS:
        parts = " + ".join(f"{single_ms[form][t]:.1f}" for t in TASK_NAMES)
        print(
            f"{form}: multitask {forms[form]['median_ms']:.1f} ms, depth + semantic + motion "
            f"{parts} = {single_ms[form]['singles_total']:.1f} ms, ratio {latency_ratios[form]:.3f}"
        )
    ratio = latency_ratios["folded_fp32"]
    verdict = "meets" if ratio <= GOAL_RATIO else "misses"
    print(
        f"latency ratio multitask / 3 single (folded) = {ratio:.3f} ({verdict} the goal <= "
        f"{GOAL_RATIO}); GMACs {gmacs['multitask']:.3f} / {gmacs['singles_total']:.3f}"
    )
    if args.json:
        write_json_atomic(
            args.json,
            {
                "img_size": list(img_size),
                "batch": 1,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                "tensorflow": tf.__version__,
                "numerics_network": args.checkpoint or "the timed network (random weights)",
                "numerics_frames": args.data_path or "random",
                "forms": forms,
                "numerics": numerics,
                "median_ms": {"multitask": forms["folded_fp32"]["median_ms"]}
                | {k: v for k, v in single_ms["folded_fp32"].items()},
                "single_task_ms": single_ms,
                "gmacs": gmacs,
                "params": params,
                "latency_ratio": ratio,
                "latency_ratio_stock": latency_ratios["stock_fp32"],
                "goal_ratio": GOAL_RATIO,
            },
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
