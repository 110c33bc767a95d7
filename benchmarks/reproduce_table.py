"""Reproduces the seed's results table on the synthetic benchmark.

Trains the three single-task baselines and every weighting method (vanilla, grad_norm,
pseudo_grad_norm, uncertainty, dwa, pcgrad) with the same budget for several seeds on one
synthetic dataset (generated here, with a fixed seed and fixed difficulty flags), reads each run's
validation metrics at `output_size` (the trainer's metrics on the val split, last epoch), and
writes:

- `docs/results.json`: every run, and per row mean +- std over seeds of Depth ARD%, Semantic
  mIoU, Motion mIoU, GMACs, Delta_m against the single-task models and training time, plus
  checks that say whether the table discriminates between methods;
- `docs/results.md`: the table, between the markers `<!-- results:begin -->` and
  `<!-- results:end -->` (hand-written text around them is kept);
- `docs/task_weights.png`: losses, validation metrics and task-weight trajectories of the
  multi-task runs of the first seed (`keras_mtl.visualize.plot_history`).

Every configuration runs in a fresh Python process (memory stays flat; `--jobs` of them at a
time) and writes `<work_dir>/runs/<run>/result.json`; runs whose result exists are skipped, so
an interrupted table resumes where it stopped. `--in_process` runs them one after another in
this process instead (`keras.backend.clear_session()` between runs), which the tests use.

Presets (`--preset`): `tiny` (seconds, for the test suite), `cpu` (small width and resolution,
about 1.5 hours for 4 seeds on 2 CPU cores), `gpu` (the full model at 384x768). Any budget field can be
overridden (`--epochs`, `--steps_per_epoch`, ...); overrides are recorded in the outputs.

Usage:

```
python benchmarks/reproduce_table.py --preset cpu --seeds 0 1 2
python benchmarks/reproduce_table.py --preset tiny --seeds 0 --methods vanilla --in_process \
    --work_dir /tmp/table --out_md /tmp/table/results.md --out_json /tmp/table/results.json \
    --figure /tmp/table/weights.png
python benchmarks/reproduce_table.py --preset cpu --dry_run   # print the plan only
```
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_tools import write_bytes_atomic, write_json_atomic  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.tasks import TASK_NAMES, TASKS  # noqa: E402
from keras_mtl.weighting import WEIGHTING_NAMES, WEIGHTINGS  # noqa: E402

METHODS: tuple[str, ...] = WEIGHTING_NAMES  # table rows after single-task, in registry order
SINGLE_TASK_ROW = "single_task"
METHOD_LABELS = {
    SINGLE_TASK_ROW: "Single-task (3 networks)",
    **{name: method.info.label for name, method in WEIGHTINGS.items()},
}
HEADLINE_METRICS: tuple[str, ...] = tuple(TASKS[t].metric for t in TASK_NAMES)
RESULT_NAME = "result.json"
# Options added after results were recorded, with the behaviour those results had.
OVERRIDES_BEFORE_OPTIONS = {"augment_zoom": "original"}
SPEC_NAME = "spec.json"
LOG_NAME = "log.txt"
MARK_BEGIN = "<!-- results:begin -->"
MARK_END = "<!-- results:end -->"
# The seed's Cityscapes table (Depth ARD%, Semantic mIoU, Motion mIoU), for reference only.
SEED_TABLE = {
    SINGLE_TASK_ROW: (11.35, 86.71, 86.6),
    "vanilla": (12.31, 82.32, 80.52),
    "pseudo_grad_norm": (12.64, 85.53, 84.95),
}


@dataclass(frozen=True)
class DatasetSpec:
    """The synthetic dataset a preset trains on (`data_tools.synthetic.generate_dataset`)."""

    num_train: int
    num_val: int
    height: int
    width: int
    seed: int = 2026
    difficulty: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """One training budget, identical for every row of the table.

    Args:
        dataset: the synthetic dataset.
        img_resize: network input (H, W).
        output_size: evaluation size of the targets (H, W).
        width_mult: MobileNetV2 width of every network.
        batch_size: frames per step.
        epochs: epochs per run.
        steps_per_epoch: optimizer steps per epoch (None = one pass over the train split).
        lr: Adam learning rate after warm-up.
        warmup_epochs: linear warm-up epochs.
        lr_milestones: fractions of the epochs after which the rate is halved.
        depth_scale: metres per unit of the linear depth head (`keras_mtl.models.DEPTH_SCALE`).
        depth_head: `log` or `linear` (`keras_mtl.models.DEPTH_HEADS`).
        depth_loss: `log_l1`, `silog` or `smooth_l1` (`keras_mtl.losses.DEPTH_LOSSES`).
        augment_zoom: `isotropic` or `original` (`keras_mtl.data.augment.ZOOM_MODES`).
        cache: keep decoded frames in memory.
        run_eagerly: no tf.function tracing (faster for a few steps: the tiny preset).
    """

    dataset: DatasetSpec
    img_resize: tuple[int, int]
    output_size: tuple[int, int]
    width_mult: float
    batch_size: int
    epochs: int
    steps_per_epoch: int | None
    lr: float
    warmup_epochs: int
    lr_milestones: tuple[float, ...] = (0.4, 0.8)
    depth_scale: float = 1.0
    depth_head: str = "log"
    depth_loss: str = "log_l1"
    augment_zoom: str = "isotropic"
    cache: bool = True
    run_eagerly: bool = False


# Every difficulty flag is pinned here (the generator's defaults may change); why these values:
# docs/results.md, "Making the benchmark discriminative".
CPU_DIFFICULTY = {
    "object_count": 14.0,
    "moving_fraction": 0.9,
    "object_speed": 2.0,
    "ego_speed": 1.0,
    "texture_noise": 2.0,
    "lighting_variation": 0.5,
}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        dataset=DatasetSpec(num_train=4, num_val=2, height=64, width=128, seed=7),
        img_resize=(64, 128),
        output_size=(64, 128),
        width_mult=0.25,
        batch_size=2,
        epochs=1,
        steps_per_epoch=1,
        lr=1e-3,
        warmup_epochs=0,
        run_eagerly=True,
    ),
    "cpu": Preset(
        dataset=DatasetSpec(
            num_train=240, num_val=48, height=128, width=256, difficulty=CPU_DIFFICULTY
        ),
        img_resize=(64, 128),
        output_size=(128, 256),
        width_mult=0.35,
        batch_size=8,
        epochs=8,
        steps_per_epoch=100,
        lr=3e-3,
        warmup_epochs=0,
        lr_milestones=(0.5, 0.8),
    ),
    "gpu": Preset(
        dataset=DatasetSpec(
            num_train=2975, num_val=500, height=512, width=1024, difficulty=CPU_DIFFICULTY
        ),
        img_resize=(384, 768),
        output_size=(512, 1024),
        width_mult=1.0,
        batch_size=16,
        epochs=60,
        steps_per_epoch=None,
        lr=5e-4,
        warmup_epochs=2,
        cache=False,
    ),
}


# --------------------------------------------------------------------------- plan


def run_name(method: str, seed: int, task: str | None = None) -> str:
    """Folder name of one run: `single_depth_s0`, `grad_norm_s1`, ..."""
    return f"single_{task}_s{seed}" if task else f"{method}_s{seed}"


def plan_runs(preset: Preset, methods: Sequence[str], seeds: Sequence[int], data_path: str) -> list:
    """Run specifications, seed-major (a partial table holds complete seeds)."""
    specs = []
    for seed in seeds:
        for method in methods:
            tasks = TASK_NAMES if method == SINGLE_TASK_ROW else (None,)
            for task in tasks:
                specs.append(
                    {
                        "name": run_name(method, seed, task),
                        "row": method,
                        "task": task,
                        "seed": int(seed),
                        "run_eagerly": preset.run_eagerly,
                        "overrides": {
                            "data_path": data_path,
                            "img_resize": list(preset.img_resize),
                            "output_size": list(preset.output_size),
                            "cache": preset.cache,
                            "width_mult": preset.width_mult,
                            "batch_size": preset.batch_size,
                            "epochs": preset.epochs,
                            "steps_per_epoch": preset.steps_per_epoch,
                            "lr": preset.lr,
                            "warmup_epochs": preset.warmup_epochs,
                            "lr_milestones": list(preset.lr_milestones),
                            "depth_scale": preset.depth_scale,
                            "depth_head": preset.depth_head,
                            "depth_loss": preset.depth_loss,
                            "augment_zoom": preset.augment_zoom,
                            "seed": int(seed),
                            "single_task": task,
                            "multi_task_type": "vanilla" if task else method,
                        },
                    }
                )
    return specs


# --------------------------------------------------------------------------- dataset


def ensure_dataset(spec: DatasetSpec, data_path: Path, workers: int | None) -> dict:
    """Generates the synthetic dataset into `data_path` unless a matching one is there.

    Raises:
        UserError: `data_path` holds a synthetic dataset made with other settings.
    """
    from data_tools.synthetic import MANIFEST, generate_dataset, make_difficulty
    from keras_mtl.data.layout import FLOW_DIR

    wanted = {
        "height": spec.height,
        "width": spec.width,
        "seed": spec.seed,
        "difficulty": dataclasses.asdict(make_difficulty(**spec.difficulty)),
        "splits": {"train": spec.num_train, "val": spec.num_val},
        # The flow training reads by default (datasets made with another method lack its folder).
        "flow_dir": FLOW_DIR,
    }
    manifest_path = data_path / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        found = {key: manifest.get(key) for key in wanted}
        if found != wanted:
            raise UserError(
                f"--data_path {data_path}: holds a synthetic dataset made with other settings "
                f"({found} instead of {wanted}); delete it or pass another --data_path"
            )
        return manifest
    print(f"generating the synthetic dataset into {data_path}", flush=True)
    return generate_dataset(
        data_path,
        spec.num_train,
        spec.num_val,
        spec.height,
        spec.width,
        spec.seed,
        workers=workers,
        progress=sys.stderr.isatty(),
        **spec.difficulty,
    )


# --------------------------------------------------------------------------- one run


def train_one(spec: Mapping, run_dir: Path, verbose: int | str = 2) -> dict:
    """Trains one configuration and returns its result record (also written to result.json)."""
    import keras

    from keras_mtl.complexity import count_macs
    from keras_mtl.config import load_config
    from keras_mtl.training import build_model, read_history_rows, run_training

    overrides = dict(spec["overrides"], save_path=str(run_dir / "train"))
    config = load_config(None, overrides=overrides)
    start = time.perf_counter()
    summary = run_training(config, verbose=verbose, run_eagerly=bool(spec.get("run_eagerly")))
    seconds = time.perf_counter() - start
    history = run_dir / "train" / "history.csv"
    keras.backend.clear_session()
    gmacs = count_macs(build_model(config)) / 1e9
    keras.backend.clear_session()
    epochs = int(summary.get("epochs", 0))
    result = {
        "name": spec["name"],
        "row": spec["row"],
        "task": spec["task"],
        "seed": spec["seed"],
        "final": summary.get("final", {}),
        "best": summary.get("best", {}),
        "epochs": epochs,
        "steps": epochs * int(config.train.steps_per_epoch or 0) or None,
        "train_seconds": seconds,
        "gmacs": gmacs,
        "history": str(history),
        "history_rows": len(read_history_rows(history)),
        "overrides": spec["overrides"],
    }
    write_json_atomic(run_dir / RESULT_NAME, result)
    return result


def worker_main(run_dir: str, threads: int) -> int:
    """Entry point of a child process: trains the spec in `run_dir/spec.json`."""
    import tensorflow as tf

    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    path = Path(run_dir)
    spec = json.loads((path / SPEC_NAME).read_text())
    result = train_one(spec, path)
    final = result["final"]
    shown = ", ".join(f"{m} {final[m]:.2f}" for m in HEADLINE_METRICS if m in final)
    print(f"{spec['name']}: {shown} in {result['train_seconds']:.0f} s", flush=True)
    return 0


def _same_folders(overrides: Mapping) -> dict:
    """`overrides` with `data_path` as an absolute path: a relative and an absolute name of
    one dataset folder (`--work_dir runs/x` vs `/repo/runs/x`) are the same settings."""
    overrides = dict(overrides)
    if isinstance(overrides.get("data_path"), str):
        overrides["data_path"] = os.path.realpath(overrides["data_path"])
    return overrides


def has_result(run_dir: Path, spec: Mapping) -> bool:
    """True when `run_dir` holds the result of exactly this spec (same settings)."""
    path = run_dir / RESULT_NAME
    if not path.is_file():
        return False
    try:
        stored = json.loads(path.read_text()).get("overrides")
        # A result written before an option existed ran with that option's old behaviour.
        return _same_folders({**OVERRIDES_BEFORE_OPTIONS, **stored}) == _same_folders(
            spec["overrides"]
        )
    except (OSError, ValueError):
        return False


def _reset_run_dir(run_dir: Path, spec: Mapping) -> None:
    """A run without a result starts over (timings stay exact): old files are removed."""
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / SPEC_NAME, spec)


def collect_results(specs: Sequence[Mapping], runs_dir: Path) -> tuple[list[dict], list[str]]:
    """The result records of the specs that have one matching their settings, and the names
    of those that do not."""
    results, missing = [], []
    for spec in specs:
        run_dir = runs_dir / spec["name"]
        if has_result(run_dir, spec):
            results.append(json.loads((run_dir / RESULT_NAME).read_text()))
        else:
            missing.append(spec["name"])
    return results, missing


def run_all(
    specs: Sequence[Mapping], runs_dir: Path, jobs: int, threads: int, in_process: bool
) -> list[str]:
    """Runs every spec without a matching result.json; returns the names of failed runs."""
    pending = [s for s in specs if not has_result(runs_dir / s["name"], s)]
    done = len(specs) - len(pending)
    if done:
        print(f"{done} of {len(specs)} runs already have results (skipped)", flush=True)
    failed: list[str] = []
    if in_process:
        import keras

        for spec in pending:
            run_dir = runs_dir / spec["name"]
            _reset_run_dir(run_dir, spec)
            train_one(spec, run_dir, verbose=0)
            keras.backend.clear_session()
        return failed

    running: list[tuple[dict, subprocess.Popen, Any, float]] = []
    queue = list(pending)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    started = time.perf_counter()
    finished = 0
    while queue or running:
        while queue and len(running) < jobs:
            spec = queue.pop(0)
            run_dir = runs_dir / spec["name"]
            _reset_run_dir(run_dir, spec)
            log = (run_dir / LOG_NAME).open("w")
            command = [
                sys.executable,
                __file__,
                "--worker",
                str(run_dir),
                "--threads",
                str(threads),
            ]
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
            )
            running.append((spec, process, log, time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            spec, process, log, begun = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            finished += 1
            elapsed = time.perf_counter() - begun
            status = "ok" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            if process.returncode != 0:
                failed.append(spec["name"])
            total = time.perf_counter() - started
            print(
                f"[{finished}/{len(pending)}] {spec['name']}: {status}, {elapsed:.0f} s "
                f"(total {total / 60:.1f} min); log: {runs_dir / spec['name'] / LOG_NAME}",
                flush=True,
            )
    return failed


# --------------------------------------------------------------------------- aggregation


def mean_std(values: Sequence[float]) -> dict:
    """`{"mean", "std", "n", "values"}`; std is the sample std (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def _single_task_metrics(results: Sequence[Mapping]) -> dict[int, dict[str, float]]:
    """Per seed, the headline metrics of that seed's three single-task runs (complete only)."""
    by_seed: dict[int, dict[str, float]] = {}
    for result in results:
        if result["row"] != SINGLE_TASK_ROW:
            continue
        metric = TASKS[result["task"]].metric
        if metric in result["final"]:
            by_seed.setdefault(result["seed"], {})[metric] = float(result["final"][metric])
    return {s: m for s, m in by_seed.items() if set(m) == set(HEADLINE_METRICS)}


def loss_shares(history_path: str | os.PathLike) -> dict[str, float] | None:
    """Each task's share `w_i L_i / sum_j w_j L_j` of the weighted training loss, last epoch.

    Read from the run's history.csv (`loss_<task>`, `weight_<task>`; a missing weight column
    means weight 1). None when the file or a task's loss is missing, or the total is not
    positive. Terms a method adds besides `w_i L_i` (uncertainty's `log` terms) are left out:
    the share says which task the shared trunk's gradient mostly serves.
    """
    from keras_mtl.training import read_history_rows

    rows = read_history_rows(history_path)
    if not rows:
        return None
    last = rows[-1]
    weighted = {}
    for task in TASK_NAMES:
        try:
            loss = float(last[f"loss_{task}"])
            weight = float(last.get(f"weight_{task}") or 1.0)
        except (KeyError, TypeError, ValueError):
            return None
        weighted[task] = weight * loss
    total = sum(weighted.values())
    if not math.isfinite(total) or total <= 0:
        return None
    return {task: value / total for task, value in weighted.items()}


def aggregate(results: Sequence[Mapping], rows: Sequence[str]) -> dict:
    """Table rows (mean +- std over seeds) and the discrimination checks.

    Delta_m of a run is taken against the single-task metrics averaged over all seeds
    (`keras_mtl.metrics.delta_m`: positive = worse than single-task).
    """
    from keras_mtl.metrics import delta_m

    singles = _single_task_metrics(results)
    reference = None
    if singles:
        reference = {m: statistics.fmean(s[m] for s in singles.values()) for m in HEADLINE_METRICS}
    table: dict[str, dict] = {}
    for row in rows:
        row_results = [r for r in results if r["row"] == row]
        if not row_results:
            continue
        per_seed: dict[int, dict] = {}
        if row == SINGLE_TASK_ROW:
            for seed, metrics in singles.items():
                seconds = sum(r["train_seconds"] for r in row_results if r["seed"] == seed)
                per_seed[seed] = {**metrics, "train_seconds": seconds}
            gmacs = {r["task"]: r["gmacs"] for r in row_results}
        else:
            for result in row_results:
                metrics = {m: result["final"].get(m) for m in HEADLINE_METRICS}
                if None in metrics.values():
                    continue
                per_seed[result["seed"]] = {**metrics, "train_seconds": result["train_seconds"]}
            gmacs = {"multitask": row_results[0]["gmacs"]}
        entry = {
            "label": METHOD_LABELS.get(row, row),
            "seeds": sorted(per_seed),
            "gmacs": gmacs,
            "gmacs_total": sum(gmacs.values()),
        }
        for key in (*HEADLINE_METRICS, "train_seconds"):
            entry[key] = mean_std([per_seed[s][key] for s in sorted(per_seed)])
        if row != SINGLE_TASK_ROW:
            shares = [loss_shares(r["history"]) for r in row_results if r["seed"] in per_seed]
            shares = [share for share in shares if share is not None]
            if shares:
                entry["loss_share"] = {
                    task: mean_std([share[task] for share in shares]) for task in TASK_NAMES
                }
        if reference is not None:
            entry["delta_m"] = mean_std([delta_m(per_seed[s], reference) for s in sorted(per_seed)])
        table[row] = entry
    return {"reference_single_task": reference, "rows": table, "checks": checks(table)}


def paired_difference(a: Mapping, b: Mapping, key: str, sign: float = 1.0) -> dict:
    """`sign * (a - b)` per seed over the seeds both rows have, with its standard error.

    Runs of one seed share the data order and, between multi-task rows, the initial weights,
    so the per-seed differences cancel most of the seed-to-seed variation that the rows' own
    standard deviations contain (a paired comparison). The standard error is
    `stdev(differences) / sqrt(n)`; with one common seed it is undefined (reported as 0 and
    never significant).
    """
    a_values = dict(zip(a["seeds"], a[key]["values"], strict=True))
    b_values = dict(zip(b["seeds"], b[key]["values"], strict=True))
    seeds = sorted(set(a_values) & set(b_values))
    differences = [sign * (a_values[s] - b_values[s]) for s in seeds]
    stats = mean_std(differences)
    error = stats["std"] / math.sqrt(len(seeds)) if len(seeds) > 1 else 0.0
    mean = stats["mean"] if seeds else 0.0
    return {
        "difference": mean,
        "two_standard_errors": 2 * error,
        "seeds": seeds,
        "significant": bool(len(seeds) > 1 and abs(mean) > 2 * error),
    }


def _per_task_better_by(a: Mapping, b: Mapping, name: str) -> dict[str, dict]:
    """Per task, how much row `a` beats row `b` on its metric (paired; `name` holds the value)."""
    per_task = {}
    for task in TASK_NAMES:
        sign = 1.0 if TASKS[task].higher_is_better else -1.0
        paired = paired_difference(a, b, TASKS[task].metric, sign)
        per_task[task] = {
            name: paired["difference"],
            "two_standard_errors": paired["two_standard_errors"],
            "significant": paired["significant"],
        }
    return per_task


def checks(table: Mapping[str, Mapping]) -> dict:
    """Does the table say something? Paired per-seed differences against 2 standard errors.

    - `single_vs_vanilla`: per task, single-task minus vanilla (signed so that > 0 means
      single-task is better) and whether its size exceeds 2 standard errors (either way).
    - `methods_vs_vanilla`: per method, Delta_m(method) - Delta_m(vanilla) and whether it
      exceeds 2 standard errors (negative = the method is better than vanilla), and `per_task`:
      the method minus vanilla per task metric (> 0 = the method is better).
    - `ordering`: rows sorted by mean Delta_m (best first).
    """
    result: dict[str, Any] = {}
    single, vanilla = table.get(SINGLE_TASK_ROW), table.get("vanilla")
    if single and vanilla:
        per_task = _per_task_better_by(single, vanilla, "single_better_by")
        result["single_vs_vanilla"] = per_task
        result["single_better_than_vanilla_on_some_task"] = any(
            v["significant"] and v["single_better_by"] > 0 for v in per_task.values()
        )
    if vanilla and "delta_m" in vanilla:
        methods = {}
        for row, entry in table.items():
            if row in (SINGLE_TASK_ROW, "vanilla") or "delta_m" not in entry:
                continue
            paired = paired_difference(entry, vanilla, "delta_m")
            per_task = _per_task_better_by(entry, vanilla, "better_by")
            methods[row] = {
                "delta_m_minus_vanilla": paired["difference"],
                "two_standard_errors": paired["two_standard_errors"],
                "significant": paired["significant"],
                "per_task": per_task,
            }
        result["methods_vs_vanilla"] = methods
        result["some_method_differs_from_vanilla"] = any(v["significant"] for v in methods.values())
        result["some_method_differs_from_vanilla_on_a_task"] = any(
            t["significant"] for v in methods.values() for t in v["per_task"].values()
        )
    ranked = [(row, e["delta_m"]["mean"]) for row, e in table.items() if "delta_m" in e]
    result["ordering"] = [row for row, _ in sorted(ranked, key=lambda item: item[1])]
    return result


# --------------------------------------------------------------------------- outputs


def _fmt(stat: Mapping | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def markdown_table(summary: Mapping) -> str:
    """The results table as Markdown (one row per method)."""
    lines = [
        "| Training | Depth ARD% ↓ | Semantic mIoU ↑ | Motion mIoU ↑ | GMACs | "
        "Δm % vs single (+ = worse) | Train time (s) | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, entry in summary["rows"].items():
        gmacs = entry["gmacs"]
        if row == SINGLE_TASK_ROW:
            parts = ", ".join(f"{gmacs[t]:.3f}" for t in TASK_NAMES if t in gmacs)
            gmacs_text = f"{parts} (sum {entry['gmacs_total']:.3f})"
        else:
            gmacs_text = f"{entry['gmacs_total']:.3f}"
        lines.append(
            f"| {entry['label']} | {_fmt(entry['depth_ard_percent'])} | "
            f"{_fmt(entry['semantic_miou'])} | {_fmt(entry['motion_miou'])} | {gmacs_text} | "
            f"{_fmt(entry.get('delta_m'))} | {_fmt(entry['train_seconds'], 0)} | "
            f"{len(entry['seeds'])} |"
        )
    return "\n".join(lines)


def markdown_loss_shares(summary: Mapping) -> str:
    """Each task's share of the weighted training loss at the end of training, per method."""
    rows = [(row, e) for row, e in summary["rows"].items() if "loss_share" in e]
    if not rows:
        return ""
    lines = [
        "Each task's share of the weighted training loss (`w_i L_i / sum_j w_j L_j`, last "
        "epoch, mean over seeds):",
        "",
        "| Training | " + " | ".join(TASK_NAMES) + " |",
        "|---|" + "---|" * len(TASK_NAMES),
    ]
    for _, entry in rows:
        shares = entry["loss_share"]
        cells = " | ".join(f"{100 * shares[t]['mean']:.0f}%" for t in TASK_NAMES)
        lines.append(f"| {entry['label']} | {cells} |")
    return "\n".join(lines)


def markdown_checks(summary: Mapping) -> str:
    """The discrimination checks as Markdown bullet points."""
    found = summary["checks"]
    lines = []
    if "single_vs_vanilla" in found:
        parts = []
        for task, item in found["single_vs_vanilla"].items():
            mark = "within noise"
            if item["significant"]:
                mark = "single-task better" if item["single_better_by"] > 0 else "vanilla better"
            parts.append(
                f"{task} {item['single_better_by']:+.2f} (paired 2 SE "
                f"{item['two_standard_errors']:.2f}, {mark})"
            )
        lines.append(
            "- Single-task better than vanilla by (metric units, > 0 = single better): "
            + "; ".join(parts)
        )
    if "methods_vs_vanilla" in found:
        parts = []
        for method, item in found["methods_vs_vanilla"].items():
            mark = "within noise"
            if item["significant"]:
                mark = "better" if item["delta_m_minus_vanilla"] < 0 else "worse"
            parts.append(
                f"{method} {item['delta_m_minus_vanilla']:+.2f} "
                f"(paired 2 SE {item['two_standard_errors']:.2f}, {mark})"
            )
        lines.append(
            "- Δm(method) − Δm(vanilla), points (< 0 = better than vanilla): " + "; ".join(parts)
        )
        lines.append(
            "- Method better than vanilla by, per task (metric units, > 0 = method better; "
            "* = beyond paired 2 SE):"
        )
        for method, item in found["methods_vs_vanilla"].items():
            tasks = [
                f"{task} {value['better_by']:+.2f}{'*' if value['significant'] else ''} "
                f"(2 SE {value['two_standard_errors']:.2f})"
                for task, value in item.get("per_task", {}).items()
            ]
            lines.append(f"  - {method}: " + "; ".join(tasks))
    if found.get("ordering"):
        lines.append("- Ordering by mean Δm (best first): " + " > ".join(found["ordering"]))
    return "\n".join(lines)


def generated_block(report: Mapping) -> str:
    """The generated part of results.md (between the markers)."""
    settings = report["settings"]
    dataset = report["dataset"]
    difficulty = ", ".join(f"{k} {v:g}" for k, v in dataset["difficulty"].items())
    reduced = report["overrides"]
    budget = (
        f"{settings['epochs']} epochs x {settings['steps_per_epoch'] or 'a full pass of'} "
        f"steps, batch {settings['batch_size']}, Adam lr {settings['lr']:g} "
        f"(warm-up {settings['warmup_epochs']} epoch(s), x0.5 after "
        f"{' and '.join(f'{m:.0%}' for m in settings['lr_milestones'])} of the epochs)"
    )
    lines = [
        MARK_BEGIN,
        f"Generated by `benchmarks/reproduce_table.py` on {report['date']} ({report['machine']}).",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- Preset `{report['preset']}`"
        + (f", overridden: {', '.join(f'{k}={v}' for k, v in reduced.items())}" if reduced else "")
        + f"; seeds {', '.join(str(s) for s in report['seeds'])}.",
        f"- Data: synthetic, {dataset['splits'].get('train')} train / "
        f"{dataset['splits'].get('val')} val frames at {dataset['height']}x{dataset['width']}, "
        f"dataset seed {dataset['seed']}; difficulty: {difficulty}.",
        f"- Networks: MobileNetV2 width {settings['width_mult']:g}, input "
        f"{settings['img_resize'][0]}x{settings['img_resize'][1]}; metrics on the whole val split "
        f"at {settings['output_size'][0]}x{settings['output_size'][1]}, last epoch.",
        f"- Budget per run: {budget}.",
        f"- {report['delta_m_convention']}; the single-task reference is the mean over seeds.",
        "",
        markdown_table(report["summary"]),
        "",
        markdown_checks(report["summary"]),
    ]
    shares = markdown_loss_shares(report["summary"])
    if shares:
        lines += ["", shares]
    if report.get("missing"):
        lines += ["", f"Missing runs (failed or not run): {', '.join(report['missing'])}."]
    lines.append(MARK_END)
    return "\n".join(lines)


def write_markdown(path: Path, block: str) -> None:
    """Replaces the generated block of `path` (keeping the text around it), atomically."""
    if path.is_file():
        text = path.read_text()
        if MARK_BEGIN in text and MARK_END in text:
            head, rest = text.split(MARK_BEGIN, 1)
            tail = rest.split(MARK_END, 1)[1]
            text = head + block + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = "# Results on the synthetic benchmark\n\n" + block + "\n"
    write_bytes_atomic(path, text.encode())


def plot_weights(results: Sequence[Mapping], seed: int, out_path: Path) -> Path | None:
    """Task-weight trajectories (with losses and metrics) of the multi-task runs of `seed`."""
    from keras_mtl.visualize import plot_history

    chosen = [
        r
        for r in results
        if r["row"] != SINGLE_TASK_ROW and r["seed"] == seed and Path(r["history"]).is_file()
    ]
    if not chosen:
        return None
    return plot_history([r["history"] for r in chosen], out_path, [r["row"] for r in chosen])


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/reproduce_table.py",
        description="Train single-task baselines and every weighting method on the synthetic "
        "benchmark over several seeds; write docs/results.md and docs/results.json.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[SINGLE_TASK_ROW, *METHODS],
        help=f"rows to train: {SINGLE_TASK_ROW} and/or {', '.join(METHODS)}",
    )
    parser.add_argument("--data_path", help="synthetic dataset folder (default: in --work_dir)")
    parser.add_argument(
        "--work_dir", help="runs and dataset (default: runs/reproduce_table/<preset>)"
    )
    parser.add_argument("--out_md", default=str(REPO_ROOT / "docs" / "results.md"))
    parser.add_argument("--out_json", default=str(REPO_ROOT / "docs" / "results.json"))
    parser.add_argument("--figure", default=str(REPO_ROOT / "docs" / "task_weights.png"))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow threads per run (0 = TF's default)"
    )
    parser.add_argument("--in_process", action="store_true", help="no subprocesses (tests)")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    parser.add_argument("--workers", type=int, default=None, help="dataset generation processes")
    budget = parser.add_argument_group("budget overrides (recorded in the outputs)")
    budget.add_argument("--epochs", type=int)
    budget.add_argument("--steps_per_epoch", type=int)
    budget.add_argument("--batch_size", type=int)
    budget.add_argument("--width_mult", type=float)
    budget.add_argument("--img_resize", type=int, nargs=2, metavar=("H", "W"))
    budget.add_argument("--lr", type=float)
    budget.add_argument("--depth_scale", type=float, help="metres per unit of the depth head")
    budget.add_argument("--depth_head", choices=("log", "linear"), help="depth head")
    budget.add_argument("--depth_loss", choices=("log_l1", "silog", "smooth_l1"), help="depth loss")
    budget.add_argument("--augment_zoom", choices=("isotropic", "original"), help="zoom mode")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def resolve_preset(args: argparse.Namespace) -> tuple[Preset, dict]:
    """The preset with the command-line budget overrides applied, and the overrides."""
    preset = PRESETS[args.preset]
    overrides = {}
    budget_flags = (
        "epochs",
        "steps_per_epoch",
        "batch_size",
        "width_mult",
        "img_resize",
        "lr",
        "depth_scale",
        "depth_head",
        "depth_loss",
        "augment_zoom",
    )
    for name in budget_flags:
        value = getattr(args, name)
        if value is None:
            continue
        if isinstance(value, str):
            pass
        elif name == "img_resize":
            value = tuple(value)
            if value[0] % 16 or value[1] % 16 or min(value) <= 0:
                raise UserError(f"--img_resize {value[0]} {value[1]}: use multiples of 16")
        elif value <= 0:
            raise UserError(f"--{name} {value}: must be positive")
        overrides[name] = list(value) if isinstance(value, tuple) else value
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(preset, **values), overrides


def machine_description() -> str:
    try:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    except Exception:  # noqa: BLE001  (informative only)
        gpus = 0
    gpu_text = f"{gpus} GPU(s)" if gpus else "no GPU"
    return f"{os.cpu_count()}-core CPU, {gpu_text}, {platform.platform()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.threads)
    rows = list(dict.fromkeys(args.methods))
    unknown = [m for m in rows if m not in (SINGLE_TASK_ROW, *METHODS)]
    if unknown:
        raise UserError(
            f"--methods {' '.join(unknown)}: unknown; choose from {SINGLE_TASK_ROW} "
            f"{' '.join(METHODS)}"
        )
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    seeds = list(dict.fromkeys(args.seeds))
    preset, overrides = resolve_preset(args)
    work_dir = Path(args.work_dir or REPO_ROOT / "runs" / "reproduce_table" / args.preset)
    data_path = Path(args.data_path) if args.data_path else work_dir / "data"
    specs = plan_runs(preset, rows, seeds, str(data_path))
    steps = preset.epochs * (preset.steps_per_epoch or 0)
    print(
        f"preset {args.preset}: {len(specs)} runs ({len(rows)} rows x {len(seeds)} seeds), "
        f"{steps or 'full-pass'} steps each at {preset.img_resize[0]}x{preset.img_resize[1]}, "
        f"width {preset.width_mult:g}, batch {preset.batch_size}; work dir {work_dir}",
        flush=True,
    )
    if args.dry_run:
        for spec in specs:
            print(f"  {spec['name']}")
        return 0

    manifest = ensure_dataset(preset.dataset, data_path, args.workers)
    runs_dir = work_dir / "runs"
    failed = run_all(specs, runs_dir, args.jobs, args.threads, args.in_process)
    results, missing = collect_results(specs, runs_dir)
    if not results:
        raise UserError(f"no run finished; see the logs under {runs_dir}")

    from keras_mtl.metrics import DELTA_M_CONVENTION

    summary = aggregate(results, rows)
    settings = {
        "img_resize": list(preset.img_resize),
        "output_size": list(preset.output_size),
        "width_mult": preset.width_mult,
        "batch_size": preset.batch_size,
        "epochs": preset.epochs,
        "steps_per_epoch": preset.steps_per_epoch,
        "lr": preset.lr,
        "warmup_epochs": preset.warmup_epochs,
        "lr_milestones": list(preset.lr_milestones),
    }
    command = "python benchmarks/reproduce_table.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    report = {
        "preset": args.preset,
        "command": command.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "seeds": seeds,
        "settings": settings,
        "overrides": overrides,
        "dataset": {
            key: manifest.get(key)
            for key in ("height", "width", "seed", "difficulty", "splits", "class_fractions")
        }
        | {"moving_fraction_pixels": manifest.get("moving_fraction_pixels")},
        "delta_m_convention": DELTA_M_CONVENTION,
        "metric_source": "trainer validation metrics on the val split at output_size, last epoch",
        "summary": summary,
        "seed_table_cityscapes": {
            row: dict(zip(HEADLINE_METRICS, values, strict=True))
            for row, values in SEED_TABLE.items()
        },
        "runs": results,
        "missing": missing,
    }
    out_json, out_md = Path(args.out_json), Path(args.out_md)
    write_json_atomic(out_json, report)
    write_markdown(out_md, generated_block(report))
    figure = plot_weights(results, seeds[0], Path(args.figure))
    print(markdown_table(summary))
    print(markdown_checks(summary))
    print(f"wrote {out_json}, {out_md}" + (f", {figure}" if figure else ""))
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
