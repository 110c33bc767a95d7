"""Every performance figure in one command: training-step ratios, inference ratios, latency
ratio, pipeline headroom.

Runs, in this process and with the same settings, the three benchmarks next to this file (each
through its `main(argv)` with `--json`, so their own definitions and tables are used as they
are):

- `training_step.py`: median train-step time of every weighting method / vanilla's, and of
  vanilla's BatchNorm/precision variants / the stock float32 step (`train_step_ratio`: the
  fused BatchNorm, bfloat16 with Keras' BatchNorm and with the fused one);
- `inference.py`: latency of the network's forms / the stock float32 network
  (`inference_ratio`: BatchNorm folded, bfloat16 with and without folding, onnxruntime), their
  numerics against float32, and the multi-task network / the three single-task networks run one
  after another (batch 1, folded);
- `input_pipeline.py`: samples/s of the training input pipeline (decode + augmentation, no
  cache) at the same `img_resize` and batch size as the training-step benchmark.

Every ratio is the median over interleaved rounds of that round's ratio, in this one run.
`pipeline_headroom` = input-pipeline samples/s / training samples/s, where training samples/s
= batch size / vanilla's median step time (the default network with the fused BatchNorm: the
new training speed, and the fastest method, so the most demanding on the pipeline). The default mode also times the pipeline reading a `data_tools.resize` copy of the
1024x2048 frames at 384x768 (`pipeline_headroom_pre_resized`, no goal: the option for machines
whose cores cannot decode full-size frames fast enough). Then prints a table against the goals and writes

```
{"step_time_ratio": {<method>: r for every registered method but vanilla},
 "train_step_ratio": {<variant>: r}, "inference_ratio": {<form>: r}, "numerics": {...},
 "mtl_vs_single_latency_ratio": r, "pipeline_headroom": r, "goals": {...}, "pass": {...},
 "settings": {...}, "details": {<each benchmark's own JSON>}, ...}
```

Modes: default (384x768, batch 8, width 1.0, Cityscapes-size 1024x2048 source frames; 18
minutes on 2 cores before the BatchNorm/precision variants and inference forms were added, which
add a few model builds and steps), `--quick` (training at 128x256, batch 4, width 1.0; inference
at 192x384; 12 minutes on 2 loaded cores), `--tiny` (64x128, width 0.25, vanilla and a few forms: a smoke run
for the test suite, its numbers mean nothing). `--checkpoint FILE.keras --data_path DIR` give
the inference benchmark a trained network and real frames for the numerics.

Usage:

```
python benchmarks/run.py --quick --json benchmarks/results/quick.json
python benchmarks/run.py --json benchmarks/results/full.json
```
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.training_step import GOALS as STEP_RATIO_GOALS  # noqa: E402
from benchmarks.training_step import VARIANT_GOALS, VARIANT_REFERENCE  # noqa: E402
from data_tools import write_json_atomic  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402

LATENCY_RATIO_GOAL = 0.50
HEADROOM_GOAL = 2.0
INFERENCE_RATIO_GOALS = {"folded_fp32": 0.65}
AT_LEAST = ("pipeline_headroom",)  # goals that are minimums; every other one is a maximum

# Arguments passed to each benchmark's main() per mode (one place: the settings are shared).
MODES: dict[str, dict[str, Any]] = {
    "full": {
        "img_resize": (384, 768),
        "batch_size": 8,
        "width_mult": 1.0,
        "training_step": ["--steps", "4", "--rounds", "3", "--warmup", "2"],
        "inference": [],
        "input_pipeline": [
            *("--sizes", "1024x2048", "--frames", "6", "--batches", "10"),
            *("--pre_resize", "384", "768"),
        ],
    },
    "quick": {
        "img_resize": (128, 256),
        "batch_size": 4,
        "width_mult": 1.0,
        # 6 rounds: with 3 (9 steps of ~0.35 s) one run put uncertainty at 1.13x vanilla, a
        # re-run with 24 steps at 0.97x; it adds ~30 s.
        "training_step": ["--steps", "3", "--rounds", "6", "--warmup", "1"],
        "inference": ["--quick"],
        "input_pipeline": ["--sizes", "512x1024", "--frames", "4", "--batches", "6"],
    },
    "tiny": {
        "img_resize": (64, 128),
        "batch_size": 2,
        "width_mult": 0.25,
        "training_step": [
            *("--steps", "1", "--warmup", "0", "--methods", "vanilla"),
            *("--variants", "stock_fp32", "fused_fp32"),
        ],
        "inference": [
            *("--rounds", "1", "--warmup", "0", "--num_frames", "1"),
            *("--forms", "stock_fp32", "folded_fp32"),
        ],
        "input_pipeline": [
            *("--sizes", "64x128", "--frames", "2", "--batches", "1"),
            *("--pre_resize", "64", "128"),
        ],
    },
}


def benchmark_argv(
    name: str, mode: str, json_path: str, inference_extra: list[str] | None = None
) -> list[str]:
    """The argv of benchmark `name` in `mode` (same image size, batch and width for all);
    `inference_extra` is added to the inference benchmark's (`--checkpoint`, `--data_path`)."""
    settings = MODES[mode]
    height, width = settings["img_resize"]
    size = ["--img_resize", str(height), str(width)]
    if name == "training_step":
        argv = [*size, "--batch_size", str(settings["batch_size"])]
        argv += ["--width_mult", str(settings["width_mult"])]
    elif name == "inference":
        # --quick picks its own 192x384 size; otherwise the training size.
        argv = [] if "--quick" in settings["inference"] else list(size)
        argv += ["--width_mult", str(settings["width_mult"]), *(inference_extra or [])]
    elif name == "input_pipeline":
        argv = [*size, "--batch_size", str(settings["batch_size"])]
    else:
        raise ValueError(f"unknown benchmark {name!r}")
    return [*argv, *settings[name], "--json", json_path]


def run_benchmark(name: str, argv: list[str]) -> tuple[dict | None, float, str | None]:
    """Runs `benchmarks/<name>.py`'s main(argv) in this process; (its JSON, seconds, error)."""
    import importlib

    json_path = argv[argv.index("--json") + 1]
    print(f"\n=== {name} {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        status = module.main(argv)
        if status:
            raise RuntimeError(f"{name}.main returned exit status {status}")
        payload = json.loads(Path(json_path).read_text())
        error = None
    except Exception as caught:  # noqa: BLE001  (one failing benchmark must not hide the others)
        traceback.print_exc()
        payload, error = None, f"{type(caught).__name__}: {caught}"
    return payload, time.perf_counter() - start, error


def step_time_ratios(training_step: Mapping | None) -> dict[str, float | None]:
    """Method -> median step time / vanilla's, from training_step.py's JSON."""
    ratios: dict[str, float | None] = dict.fromkeys(STEP_RATIO_GOALS)
    for row in (training_step or {}).get("results", []):
        if row["method"] in ratios:
            ratios[row["method"]] = float(row["ratio_vs_vanilla"])
    return ratios


def training_samples_per_second(training_step: Mapping | None) -> float | None:
    """Batch size / vanilla's median step time."""
    if not training_step:
        return None
    for row in training_step.get("results", []):
        if row["method"] == "vanilla" and row["median_step_s"] > 0:
            return float(training_step["batch_size"]) / float(row["median_step_s"])
    return None


def pipeline_samples_per_second(input_pipeline: Mapping | None) -> float | None:
    """Samples/s of the uncached training pipeline (the slowest source size if several)."""
    if not input_pipeline or not input_pipeline.get("results"):
        return None
    return min(float(row["train"]) for row in input_pipeline["results"])


def pre_resized_samples_per_second(input_pipeline: Mapping | None) -> float | None:
    """Samples/s of the training pipeline on `data_tools.resize` copies (None if not timed)."""
    rows = (input_pipeline or {}).get("results") or []
    rates = [float(row["train_pre_resized"]) for row in rows if "train_pre_resized" in row]
    return min(rates) if rates else None


def variant_ratios(training_step: Mapping | None) -> dict[str, float]:
    """Variant -> median step time / the stock float32 step's, from training_step.py's JSON."""
    key = f"ratio_vs_{VARIANT_REFERENCE}"
    return {
        row["variant"]: float(row[key])
        for row in (training_step or {}).get("variants", [])
        if row["variant"] != VARIANT_REFERENCE
    }


def inference_ratios(inference: Mapping | None) -> dict[str, float]:
    """Form -> median latency / the stock float32 network's, from inference.py's JSON."""
    forms = (inference or {}).get("forms", {})
    return {
        form: float(row["ratio_vs_stock_fp32"])
        for form, row in forms.items()
        if form != "stock_fp32"
    }


def summarize(details: Mapping[str, Mapping | None]) -> dict:
    """The headline figures, their goals and pass/miss (None where a benchmark failed)."""
    ratios = step_time_ratios(details.get("training_step"))
    train_ratios = variant_ratios(details.get("training_step"))
    inference = details.get("inference")
    forms = inference_ratios(inference)
    latency = float(inference["latency_ratio"]) if inference else None
    training_rate = training_samples_per_second(details.get("training_step"))
    pipeline_rate = pipeline_samples_per_second(details.get("input_pipeline"))
    headroom = headroom_pre_resized = None
    if training_rate and pipeline_rate is not None:
        headroom = pipeline_rate / training_rate
    pre_resized_rate = pre_resized_samples_per_second(details.get("input_pipeline"))
    if training_rate and pre_resized_rate is not None:
        headroom_pre_resized = pre_resized_rate / training_rate
    goals = {
        **{f"step_time_ratio.{m}": g for m, g in STEP_RATIO_GOALS.items()},
        **{f"train_step_ratio.{v}": g for v, g in VARIANT_GOALS.items()},
        **{f"inference_ratio.{f}": g for f, g in INFERENCE_RATIO_GOALS.items()},
        "mtl_vs_single_latency_ratio": LATENCY_RATIO_GOAL,
        "pipeline_headroom": HEADROOM_GOAL,
    }
    values = {
        **{f"step_time_ratio.{m}": r for m, r in ratios.items()},
        **{f"train_step_ratio.{v}": train_ratios.get(v) for v in VARIANT_GOALS},
        **{f"inference_ratio.{f}": forms.get(f) for f in INFERENCE_RATIO_GOALS},
        "mtl_vs_single_latency_ratio": latency,
        "pipeline_headroom": headroom,
    }
    passed = {}
    for key, goal in goals.items():
        value = values[key]
        if value is None:
            passed[key] = None
        elif key in AT_LEAST:
            passed[key] = value >= goal
        else:
            passed[key] = value <= goal
    return {
        "step_time_ratio": ratios,
        "train_step_ratio": train_ratios,
        "inference_ratio": forms,
        "numerics": (inference or {}).get("numerics", {}),
        "mtl_vs_single_latency_ratio": latency,
        "mtl_vs_single_latency_ratio_stock": (
            float(inference["latency_ratio_stock"]) if inference else None
        ),
        "pipeline_headroom": headroom,
        "training_samples_per_s": training_rate,
        "pipeline_samples_per_s": pipeline_rate,
        "pipeline_headroom_pre_resized": headroom_pre_resized,
        "pre_resized_pipeline_samples_per_s": pre_resized_rate,
        "goals": goals,
        "values": values,
        "pass": passed,
    }


def format_table(summary: Mapping) -> str:
    """The figures against their goals, one line each."""
    lines = [f"{'figure':<36}{'value':>10}{'goal':>10}  result", "-" * 64]
    for key, goal in summary["goals"].items():
        value = summary["values"][key]
        sense = ">=" if key in AT_LEAST else "<="
        verdict = {True: "pass", False: "MISS", None: "n/a (not measured)"}[summary["pass"][key]]
        shown = "-" if value is None else f"{value:.3f}"
        lines.append(f"{key:<36}{shown:>10}{sense + f' {goal:g}':>10}  {verdict}")
    # Figures without a goal, in the same run.
    for family in ("train_step_ratio", "inference_ratio"):
        for name, value in summary[family].items():
            key = f"{family}.{name}"
            if key not in summary["goals"]:
                lines.append(f"{key:<36}{value:>10.3f}{'-':>10}")
    if summary.get("mtl_vs_single_latency_ratio_stock") is not None:
        value = summary["mtl_vs_single_latency_ratio_stock"]
        lines.append(f"{'mtl_vs_single_latency_ratio (stock)':<36}{value:>10.3f}{'-':>10}")
    for form, numbers in summary.get("numerics", {}).items():
        lines.append(
            f"({form} vs {numbers['reference']}: depth relative error mean "
            f"{numbers['depth_relative_error_mean']:.2e}, class agreement semantic "
            f"{numbers['semantic_agreement_percent']:.2f}% motion "
            f"{numbers['motion_agreement_percent']:.2f}%)"
        )
    if summary["training_samples_per_s"] and summary["pipeline_samples_per_s"]:
        lines.append(
            f"(pipeline {summary['pipeline_samples_per_s']:.1f} samples/s vs training "
            f"{summary['training_samples_per_s']:.1f} samples/s, vanilla)"
        )
    if summary.get("pipeline_headroom_pre_resized") is not None:
        lines.append(
            f"(from a data_tools.resize copy: pipeline "
            f"{summary['pre_resized_pipeline_samples_per_s']:.1f} samples/s, headroom "
            f"{summary['pipeline_headroom_pre_resized']:.2f})"
        )
    return "\n".join(lines)


def cpu_description() -> dict[str, Any]:
    """CPU model and the bfloat16-related instruction sets (Linux), for the report."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": model, "bf16": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})}


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (other work on a shared machine), None if unknown."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Run the input-pipeline, inference and training-step benchmarks with the "
        "same settings; print the figures against their goals and write one JSON.",
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="about 12 minutes on 2 cores")
    modes.add_argument(
        "--tiny", action="store_true", help="smoke run for tests (numbers mean nothing)"
    )
    parser.add_argument("--json", required=True, metavar="OUT", help="write the figures here")
    parser.add_argument(
        "--checkpoint",
        metavar="FILE.keras",
        help="trained multi-task network for the inference forms (numerics of a trained network)",
    )
    parser.add_argument("--data_path", metavar="DIR", help="frames for the inference numerics")
    parser.add_argument("--flow_dir", metavar="NAME", help="flow folder under --data_path")
    args = parser.parse_args(argv)
    inference_extra = []
    for flag in ("checkpoint", "data_path", "flow_dir"):
        if getattr(args, flag):
            inference_extra += [f"--{flag}", getattr(args, flag)]
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    out = Path(args.json)
    if out.exists() and out.is_dir():
        raise UserError(f"--json {out}: is a folder; give a file name like results.json")

    started = time.perf_counter()
    load_at_start = load_average()
    details: dict[str, dict | None] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="keras_mtl_run_") as tmp:
        for name in ("input_pipeline", "inference", "training_step"):
            bench_argv = benchmark_argv(
                name, mode, os.path.join(tmp, f"{name}.json"), inference_extra
            )
            payload, elapsed, error = run_benchmark(name, bench_argv)
            details[name], seconds[name] = payload, elapsed
            if error:
                errors[name] = error
    summary = summarize(details)
    settings = MODES[mode]
    report = {
        **{
            k: summary[k]
            for k in (
                "step_time_ratio",
                "train_step_ratio",
                "inference_ratio",
                "numerics",
                "mtl_vs_single_latency_ratio",
                "mtl_vs_single_latency_ratio_stock",
            )
        },
        "pipeline_headroom": summary["pipeline_headroom"],
        "training_samples_per_s": summary["training_samples_per_s"],
        "pipeline_samples_per_s": summary["pipeline_samples_per_s"],
        "pipeline_headroom_pre_resized": summary["pipeline_headroom_pre_resized"],
        "goals": summary["goals"],
        "pass": summary["pass"],
        "mode": mode,
        "settings": {
            "img_resize": list(settings["img_resize"]),
            "batch_size": settings["batch_size"],
            "width_mult": settings["width_mult"],
            "argv": {
                name: benchmark_argv(name, mode, "OUT.json", inference_extra)
                for name in ("input_pipeline", "inference", "training_step")
            },
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu": cpu_description(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # Other jobs on a shared machine: the ratios come from interleaved rounds, so they
            # hold under load; absolute times do not.
            "load_average_start": load_at_start,
            "load_average_end": load_average(),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": {**seconds, "total": time.perf_counter() - started},
        "errors": errors,
        "details": details,
    }
    write_json_atomic(out, report)
    print(
        f"\n=== summary ({mode}; {os.cpu_count()} CPU cores; {report['seconds']['total']:.0f} s; "
        f"load average {load_at_start} at the start, {report['machine']['load_average_end']} "
        "at the end)"
    )
    print(format_table(summary))
    for name, error in errors.items():
        print(f"{name} failed: {error}", file=sys.stderr)
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    run_cli(main)
