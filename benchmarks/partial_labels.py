"""Partial labels: each task's validation metric with motion labels dropped from training frames.

Trains the multi-task network on a preset of `benchmarks/reproduce_table.py` (same dataset,
budget and per-run machinery) with the motion labels of a fraction of the TRAINING frames left
out (`--labels partial`), for several drop rates and seeds, against the full-label run of the
same seed (`--labels strict`, today's training). The validation split keeps every label, so
the metrics of all conditions are measured on the same frames.

The dataset of each rate is the preset's synthetic dataset (generated once, as
reproduce_table.py does, or reused from its `--data_path`) with the motion files of
round(rate * frames) training frames left out: the frames are chosen by
`data_tools.synthetic.dropped_frames` from the dataset's seed (what `data_tools.synthetic
--drop_labels motion=RATE` would drop), the other files are hard links (copies where links
fail), and the manifest records the dropped stems.

Writes `<work_dir>/partial_labels.json` (every run, per condition mean +- std over seeds of
each headline metric, and the paired per-seed difference against full labels with two
standard errors) and prints the table in Markdown (for docs/results.md).

Usage:

```
python benchmarks/partial_labels.py --preset cpu --seeds 0 1 2             # 50% and 90%
python benchmarks/partial_labels.py --preset cpu --seeds 0 1 2 --methods vanilla uncertainty
python benchmarks/partial_labels.py --preset tiny --seeds 0 --rates 0.5 --in_process \
    --work_dir /tmp/partial                                                  # seconds
```
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import reproduce_table as table  # noqa: E402
from data_tools import write_json_atomic  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.tasks import TASK_NAMES, TASKS  # noqa: E402
from keras_mtl.weighting import WEIGHTING_NAMES  # noqa: E402

DROPPED_TASK = "motion"
DEFAULT_RATES = (0.5, 0.9)
FULL = "full"  # the condition name of the full-label run
OUT_NAME = "partial_labels.json"


def condition_name(rate: float) -> str:
    """`full` for rate 0, else `motion50` (the percentage of training frames without labels).

    Example:
        >>> condition_name(0.9)
        'motion90'
    """
    return FULL if rate == 0 else f"{DROPPED_TASK}{round(rate * 100):02d}"


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def derive_dropped_dataset(full: Path, target: Path, rate: float) -> dict:
    """`full` with the motion labels of round(rate * N) training frames left out, in `target`.

    Reuses `target` when its manifest records the same source and rate; otherwise (re)builds
    it in a temporary folder renamed into place, so an interrupted build is never used.

    Returns:
        The derived dataset's manifest (`synthetic_dataset.json` of `full` plus `drop_labels`
        and `dropped_labels`, as `data_tools.synthetic --drop_labels` writes them).
    """
    from data_tools.synthetic import MANIFEST, dropped_frames, frame_stem
    from keras_mtl.data.layout import GT_DIR, MOTION_SUFFIX

    manifest = json.loads((full / MANIFEST).read_text())
    count = int(manifest["splits"]["train"])
    stems = [
        frame_stem("train", i)[1]
        for i in dropped_frames(manifest["seed"], "train", count, DROPPED_TASK, rate)
    ]
    wanted = {
        "drop_labels": {"rates": {DROPPED_TASK: rate}, "splits": ["train"]},
        "dropped_labels": {"train": {DROPPED_TASK: stems}},
        "derived_from": str(full.resolve()),
    }
    if (target / MANIFEST).is_file():
        existing = json.loads((target / MANIFEST).read_text())
        if all(existing.get(key) == value for key, value in wanted.items()):
            return existing
    if count - len(stems) < 1:
        raise UserError(
            f"--rates {rate}: leaves no motion label on the {count} training frames of this "
            "preset; choose a lower rate"
        )
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    dropped = {f"{stem}{MOTION_SUFFIX}" for stem in stems}
    for path in sorted(full.rglob("*")):
        relative = path.relative_to(full)
        if not path.is_file() or relative.name == MANIFEST:
            continue
        if relative.parts[:2] == (GT_DIR, "train") and relative.name in dropped:
            continue
        _link_or_copy(path, building / relative)
    derived = {**manifest, "root": str(target), **wanted}
    write_json_atomic(building / MANIFEST, derived)
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return derived


def plan(
    preset: table.Preset,
    methods: Sequence[str],
    seeds: Sequence[int],
    data_paths: Mapping[float, Path],
    min_labelled_frames: int,
) -> list[dict]:
    """Run specifications (reproduce_table's, with the condition's data and `labels`), seed-major.

    The full-label run trains with `--labels strict`; a dropped rate with `--labels partial`.
    """
    specs = []
    for seed in seeds:
        for method in methods:
            for rate, data_path in data_paths.items():
                base = table.plan_runs(preset, [method], [seed], str(data_path))[0]
                overrides = dict(base["overrides"])
                if rate > 0:
                    overrides["labels"] = "partial"
                    overrides["min_labelled_frames"] = int(min_labelled_frames)
                condition = condition_name(rate)
                specs.append(
                    {
                        **base,
                        "name": f"{method}_{condition}_s{seed}",
                        "row": method,
                        "condition": condition,
                        "rate": rate,
                        "overrides": overrides,
                    }
                )
    return specs


def reuse_full_results(specs: Sequence[Mapping], runs_dir: Path, source_runs: Path) -> list[str]:
    """Takes the full-label results from reproduce_table's runs instead of training them again.

    A full-label run here is reproduce_table's run of the same method and seed (same preset,
    dataset and settings: `has_result` compares them); its result.json is copied, marked with
    where it came from. Returns the names of the runs reused.
    """
    reused = []
    for spec in specs:
        if spec["rate"] != 0:
            continue
        source = source_runs / table.run_name(spec["row"], spec["seed"])
        target = runs_dir / spec["name"]
        if table.has_result(target, spec) or not table.has_result(source, spec):
            continue
        record = json.loads((source / table.RESULT_NAME).read_text())
        target.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            target / table.RESULT_NAME, {**record, "name": spec["name"], "reused_from": str(source)}
        )
        reused.append(spec["name"])
    return reused


def summarize(results: Sequence[Mapping]) -> dict:
    """Per method and condition: each headline metric's mean +- std over seeds, and per
    condition other than `full` the paired per-seed difference against `full` (signed so that
    > 0 = better than full labels), with two standard errors.
    """
    rows: dict[str, dict[str, dict]] = {}
    for method in dict.fromkeys(r["row"] for r in results):
        conditions: dict[str, dict] = {}
        for condition in dict.fromkeys(r["condition"] for r in results if r["row"] == method):
            runs = [r for r in results if r["row"] == method and r["condition"] == condition]
            per_seed = {
                r["seed"]: r["final"]
                for r in runs
                if all(TASKS[t].metric in r["final"] for t in TASK_NAMES)
            }
            entry = {"seeds": sorted(per_seed)}
            for task in TASK_NAMES:
                metric = TASKS[task].metric
                entry[metric] = table.mean_std([per_seed[s][metric] for s in sorted(per_seed)])
            conditions[condition] = entry
        full = conditions.get(FULL)
        for condition, entry in conditions.items():
            if condition == FULL or full is None:
                continue
            entry["vs_full"] = {}
            for task in TASK_NAMES:
                metric = TASKS[task].metric
                sign = 1.0 if TASKS[task].higher_is_better else -1.0
                entry["vs_full"][metric] = table.paired_difference(entry, full, metric, sign)
        rows[method] = conditions
    return rows


def markdown(rows: Mapping, coverage: Mapping[str, int], frames: int) -> str:
    """The table: one line per method and condition; differences vs full labels in brackets."""
    lines = [
        "| Method | Motion labels (train frames) | Depth ARD% ↓ | Semantic mIoU ↑ | "
        "Motion mIoU ↑ | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for method, conditions in rows.items():
        for condition, entry in conditions.items():
            cells = []
            for task in TASK_NAMES:
                metric = TASKS[task].metric
                cell = table._fmt(entry[metric])
                paired = entry.get("vs_full", {}).get(metric)
                if paired is not None and paired["seeds"]:
                    mark = "*" if paired["significant"] else ""
                    cell += (
                        f" ({paired['difference']:+.2f} ± {paired['two_standard_errors']:.2f}"
                        f"{mark})"
                    )
                cells.append(cell)
            labelled = coverage.get(condition, frames)
            share = f"{labelled} of {frames} ({100.0 * labelled / max(frames, 1):.0f}%)"
            lines.append(
                f"| {table.METHOD_LABELS.get(method, method)} | {share} | {' | '.join(cells)} | "
                f"{len(entry['seeds'])} |"
            )
    lines.append("")
    lines.append(
        "Brackets: paired per-seed difference against the full-label run of the same method, "
        "signed so that + = better than full labels, ± two standard errors; * = beyond them. "
        "Validation frames keep every label."
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/partial_labels.py",
        description="Validation metrics with motion labels dropped from a share of the training "
        "frames (--labels partial) against full labels, over several seeds.",
    )
    parser.add_argument("--preset", choices=sorted(table.PRESETS), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["vanilla"], help="weighting methods")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=list(DEFAULT_RATES),
        help="shares of the training frames without motion labels (the full-label run is "
        "always added)",
    )
    parser.add_argument(
        "--min_labelled_frames", type=int, default=1, help="passed to every partial run"
    )
    parser.add_argument(
        "--data_path",
        help="the preset's full synthetic dataset (default: in --work_dir; reproduce_table's "
        "runs/reproduce_table/<preset>/data is the same dataset)",
    )
    parser.add_argument("--work_dir", help="default: runs/partial_labels/<preset>")
    parser.add_argument(
        "--reuse_full",
        metavar="RUNS_DIR",
        help="reproduce_table's runs folder (e.g. runs/reproduce_table/cpu/runs): full-label "
        "runs with the same settings are read from there instead of trained again",
    )
    parser.add_argument("--out_json", help=f"default: <work_dir>/{OUT_NAME}")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads per run")
    parser.add_argument("--in_process", action="store_true", help="no subprocesses (tests)")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    parser.add_argument("--workers", type=int, default=None, help="dataset generation processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [m for m in args.methods if m not in WEIGHTING_NAMES]
    if unknown:
        raise UserError(
            f"--methods {' '.join(unknown)}: unknown; choose from {' '.join(WEIGHTING_NAMES)}"
        )
    bad_rates = [r for r in args.rates if not 0 < r < 1]
    if bad_rates:
        raise UserError(f"--rates {' '.join(map(str, bad_rates))}: each must be in (0, 1)")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    preset = table.PRESETS[args.preset]
    seeds = list(dict.fromkeys(args.seeds))
    methods = list(dict.fromkeys(args.methods))
    rates = [0.0, *dict.fromkeys(args.rates)]
    work_dir = Path(args.work_dir or REPO_ROOT / "runs" / "partial_labels" / args.preset)
    full_path = Path(args.data_path) if args.data_path else work_dir / "data"
    data_paths = {
        rate: full_path if rate == 0 else work_dir / f"data_{condition_name(rate)}"
        for rate in rates
    }
    specs = plan(preset, methods, seeds, data_paths, args.min_labelled_frames)
    print(
        f"preset {args.preset}: {len(specs)} runs ({len(methods)} method(s) x {len(rates)} "
        f"conditions x {len(seeds)} seeds); work dir {work_dir}",
        flush=True,
    )
    if args.dry_run:
        for spec in specs:
            print(f"  {spec['name']}")
        return 0

    manifest = table.ensure_dataset(preset.dataset, full_path, args.workers)
    frames = int(manifest["splits"]["train"])
    coverage = {FULL: frames}
    for rate in rates[1:]:
        derived = derive_dropped_dataset(full_path, data_paths[rate], rate)
        dropped = derived["dropped_labels"]["train"][DROPPED_TASK]
        coverage[condition_name(rate)] = frames - len(dropped)
    runs_dir = work_dir / "runs"
    if args.reuse_full:
        reused = reuse_full_results(specs, runs_dir, Path(args.reuse_full))
        print(f"full-label results reused from {args.reuse_full}: {len(reused)}", flush=True)
    failed = table.run_all(specs, runs_dir, args.jobs, args.threads, args.in_process)
    results, missing = table.collect_results(specs, runs_dir)
    conditions = {spec["name"]: spec for spec in specs}
    results = [
        {
            **r,
            "condition": conditions[r["name"]]["condition"],
            "rate": conditions[r["name"]]["rate"],
        }
        for r in results
    ]
    if not results:
        raise UserError(f"no run finished; see the logs under {runs_dir}")
    rows = summarize(results)
    text = markdown(rows, coverage, frames)
    command = "python benchmarks/partial_labels.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    report = {
        "preset": args.preset,
        "command": command.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": table.machine_description(),
        "seeds": seeds,
        "methods": methods,
        "rates": rates,
        "settings": dataclasses.asdict(preset),
        "train_frames": frames,
        "motion_labelled_train_frames": coverage,
        "metric_source": "trainer validation metrics on the fully labelled val split, last epoch",
        "summary": rows,
        "markdown": text,
        "runs": results,
        "missing": missing,
    }
    out_json = Path(args.out_json) if args.out_json else work_dir / OUT_NAME
    write_json_atomic(out_json, report)
    print(text)
    print(f"wrote {out_json}")
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
