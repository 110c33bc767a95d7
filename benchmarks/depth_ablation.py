"""Depth head, loss and zoom-augmentation ablation on the cpu preset of `reproduce_table.py`.

For each candidate `HEAD:LOSS:ZOOM` (e.g. `linear:smooth_l1:original`, the original system;
`log:log_l1:isotropic`; ZOOM is the augmentation's zoom, `keras_mtl.data.augment.ZOOM_MODES`),
trains the single-task depth network and the vanilla multi-task network for each seed with the
preset's budget, and reports, per candidate: depth ARD% (single-task and vanilla), semantic and
motion mIoU of vanilla, each task's share of the vanilla total training loss in the last epoch,
and paired differences (same seed = same data order and initial weights) against the first
candidate. Runs go through `reproduce_table.run_all` (fresh processes, resumable).

Usage:

```
python benchmarks/depth_ablation.py --candidates linear:smooth_l1:original \
    log:log_l1:original log:silog:original log:log_l1:isotropic --seeds 0 1 2 --jobs 2 --threads 1
```

Writes `--out_json` (default `docs/depth_ablation.json`) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import reproduce_table as table  # noqa: E402
from data_tools import write_json_atomic  # noqa: E402
from keras_mtl.data.augment import ZOOM_MODES  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.losses import DEPTH_LOSSES  # noqa: E402
from keras_mtl.models import DEPTH_HEADS  # noqa: E402
from keras_mtl.tasks import TASK_NAMES  # noqa: E402

ROWS = ("single_depth", "vanilla")
METRICS = ("depth_ard_percent", "semantic_miou", "motion_miou")


def parse_candidate(text: str) -> tuple[str, str, str]:
    """`HEAD:LOSS:ZOOM` -> (head, loss, zoom); UserError naming `--candidates` otherwise."""
    parts = text.split(":")
    if (
        len(parts) != 3
        or parts[0] not in DEPTH_HEADS
        or parts[1] not in DEPTH_LOSSES
        or parts[2] not in ZOOM_MODES
    ):
        raise UserError(
            f"--candidates {text}: expected HEAD:LOSS:ZOOM with HEAD in {', '.join(DEPTH_HEADS)}, "
            f"LOSS in {', '.join(DEPTH_LOSSES)} and ZOOM in {', '.join(ZOOM_MODES)}"
        )
    return parts[0], parts[1], parts[2]


def runs_dir_name(head: str, loss: str, zoom: str) -> str:
    """Folder of a candidate's runs (the original zoom's runs predate the zoom option)."""
    return f"{head}_{loss}" if zoom == "original" else f"{head}_{loss}_{zoom}"


def candidate_specs(preset: table.Preset, seeds: Sequence[int], data_path: str) -> list[dict]:
    """The single-task depth and vanilla runs of `preset` (whose depth head/loss are set)."""
    specs = table.plan_runs(preset, [table.SINGLE_TASK_ROW, "vanilla"], seeds, data_path)
    return [s for s in specs if s["task"] in (None, "depth")]


def loss_shares(history: Path) -> dict[str, float]:
    """Each task's share of the summed unweighted training losses in the last epoch."""
    with history.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return {}
    last = rows[-1]
    values = {t: float(last[f"loss_{t}"]) for t in TASK_NAMES if last.get(f"loss_{t}")}
    total = sum(values.values())
    return {t: v / total for t, v in values.items()} if total > 0 else {}


def summarize(results: Sequence[Mapping]) -> dict:
    """Per row, per metric: mean +- std over seeds and the per-seed values."""
    rows: dict[str, dict] = {}
    for row in ROWS:
        wanted_task = "depth" if row == "single_depth" else None
        chosen = [r for r in results if r["task"] == wanted_task]
        entry = {"seeds": [r["seed"] for r in chosen]}
        for metric in METRICS:
            values = [r["final"][metric] for r in chosen if metric in r["final"]]
            if values:
                entry[metric] = table.mean_std(values)
        if row == "vanilla":
            shares = [loss_shares(Path(r["history"])) for r in chosen]
            entry["loss_share"] = {
                t: table.mean_std([s[t] for s in shares if t in s]) for t in TASK_NAMES
            }
        rows[row] = entry
    return rows


def paired(candidate: Mapping, baseline: Mapping) -> dict:
    """Paired differences candidate - baseline (sign: positive = candidate better)."""
    differences = {}
    for row in ROWS:
        for metric in METRICS:
            a, b = candidate[row].get(metric), baseline[row].get(metric)
            if not a or not b:
                continue
            sign = -1.0 if metric == "depth_ard_percent" else 1.0
            a_row = {"seeds": candidate[row]["seeds"], metric: a}
            b_row = {"seeds": baseline[row]["seeds"], metric: b}
            differences[f"{row}.{metric}"] = table.paired_difference(a_row, b_row, metric, sign)
    return differences


def print_table(report: Mapping) -> None:
    def fmt(stat):
        return "-" if not stat else f"{stat['mean']:.1f} +- {stat['std']:.1f}"

    header = (
        f"{'candidate':30s} {'single ARD%':>14s} {'vanilla ARD%':>14s} {'sem mIoU':>14s} "
        f"{'mot mIoU':>14s}  depth share of vanilla loss"
    )
    print(header)
    for name, entry in report["candidates"].items():
        single, vanilla = entry["rows"]["single_depth"], entry["rows"]["vanilla"]
        share = vanilla.get("loss_share", {}).get("depth") or {}
        share_text = f"{100 * share['mean']:.0f}%" if share.get("mean") is not None else "-"
        print(
            f"{name:30s} {fmt(single.get('depth_ard_percent')):>14s} "
            f"{fmt(vanilla.get('depth_ard_percent')):>14s} "
            f"{fmt(vanilla.get('semantic_miou')):>14s} "
            f"{fmt(vanilla.get('motion_miou')):>14s}  {share_text}"
        )
    baseline = next(iter(report["candidates"]))
    for name, entry in report["candidates"].items():
        if name == baseline:
            continue
        shown = ", ".join(
            f"{key} {d['difference']:+.2f} (2SE {d['two_standard_errors']:.2f}"
            f"{', significant' if d['significant'] else ''})"
            for key, d in entry["paired_vs_baseline"].items()
        )
        print(f"{name} vs {baseline} (positive = better): {shown}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/depth_ablation.py",
        description="Depth head/loss ablation (single-task depth and vanilla) on a preset.",
    )
    parser.add_argument("--preset", choices=sorted(table.PRESETS), default="cpu")
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=[
            "linear:smooth_l1:original",
            "log:log_l1:original",
            "log:silog:original",
            "log:log_l1:isotropic",
        ],
        help="HEAD:LOSS:ZOOM triples; the first is the baseline of the paired comparisons",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per run")
    parser.add_argument("--work_dir", help="default: runs/reproduce_table/<preset>")
    parser.add_argument("--out_json", default=str(REPO_ROOT / "docs" / "depth_ablation.json"))
    parser.add_argument("--in_process", action="store_true", help="no subprocesses (tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    candidates = [parse_candidate(c) for c in dict.fromkeys(args.candidates)]
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    seeds = list(dict.fromkeys(args.seeds))
    preset = table.PRESETS[args.preset]
    work_dir = Path(args.work_dir or REPO_ROOT / "runs" / "reproduce_table" / args.preset)
    data_path = work_dir / "data"
    manifest = table.ensure_dataset(preset.dataset, data_path, None)
    # Seed-major over candidates: a partial ablation holds complete seeds.
    plans = []
    for head, loss, zoom in candidates:
        variant = dataclasses.replace(preset, depth_head=head, depth_loss=loss, augment_zoom=zoom)
        runs_dir = work_dir / "depth_ablation" / runs_dir_name(head, loss, zoom) / "runs"
        plans.append(
            ((head, loss, zoom), runs_dir, candidate_specs(variant, seeds, str(data_path)))
        )
    for seed in seeds:
        for _, runs_dir, specs in plans:
            chosen = [s for s in specs if s["seed"] == seed]
            failed = table.run_all(chosen, runs_dir, args.jobs, args.threads, args.in_process)
            if failed:
                print(f"failed runs: {', '.join(failed)} (see their log.txt)", flush=True)
    report = {
        "preset": args.preset,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": table.machine_description(),
        "command": "python benchmarks/depth_ablation.py " + " ".join(argv or sys.argv[1:]),
        "seeds": seeds,
        "dataset": {k: manifest.get(k) for k in ("height", "width", "seed", "splits")},
        "candidates": {},
    }
    baseline = None
    for (head, loss, zoom), runs_dir, specs in plans:
        results = []
        for spec in specs:
            path = runs_dir / spec["name"] / table.RESULT_NAME
            if table.has_result(runs_dir / spec["name"], spec):
                results.append(json.loads(path.read_text()))
        rows = summarize(results)
        entry = {
            "depth_head": head,
            "depth_loss": loss,
            "augment_zoom": zoom,
            "rows": rows,
            "runs": results,
        }
        if baseline is None:
            baseline = rows
        else:
            entry["paired_vs_baseline"] = paired(rows, baseline)
        report["candidates"][f"{head}:{loss}:{zoom}"] = entry
    write_json_atomic(Path(args.out_json), report)
    print_table(report)
    print(f"wrote {args.out_json}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
