"""Checks a dataset in the Cityscapes multitask layout before training on it.

Usage:

```
python -m data_tools.check --data_path DIR [--splits train val] [--semantic_classes 5]
                           [--flow_dir NAME] [--deep] [--json]
```

Prints the number of complete frames per split and names every frame that lacks a modality
(exit status 1 if any). `--deep` also checks every file: PNG headers (format, truncation, bit
depth, channels), sizes of images against labels, the camera JSON, and decodes every image to
check value ranges (5-class labels 0..4 or 255, labelIds 0..33, motion 0/255), naming each bad
file.

It also reports the label coverage of every split: of the frames that have the inputs (rgb and
flow), how many have each task's label (depth: disparity and camera), as counts and percent.
With `--labels partial` (what `train.py --labels partial` accepts) a missing label is no
problem, only missing inputs (or a disparity without its camera) are, and "complete frames"
counts the frames training would use.

`--json` prints two JSON lines at the end: the coverage,
`{"label_coverage": {split: {"frames": N, "depth": {"labelled": n, "percent": p}, ...}}}`,
then, as the last line (what scripts read), `{"train": N, "val": M, ...}` (usable frames per
split).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from keras_mtl.data import layout
from keras_mtl.data.labels import CITYSCAPES_LABELS
from keras_mtl.errors import UserError, run_cli

_MAX_LABEL_ID = max(label.id for label in CITYSCAPES_LABELS)


def _value_problems(frame: layout.FrameFiles, values: dict, semantic_classes: int) -> list[str]:
    """Value-range problems of one decoded frame (raw stored values)."""
    problems = []
    semantic = values.get("semantic", np.zeros((0,), np.uint8))  # None: no label (partial)
    if semantic_classes == 5:
        bad = np.unique(semantic[(semantic > 4) & (semantic != 255)])
        if bad.size:
            problems.append(
                f"{frame.semantic}: 5-class labels must be 0..4 or 255, found {bad[:5].tolist()}"
            )
    else:
        bad = np.unique(semantic[semantic > _MAX_LABEL_ID])
        if bad.size:
            problems.append(
                f"{frame.semantic}: Cityscapes labelIds must be 0..{_MAX_LABEL_ID}, "
                f"found {bad[:5].tolist()}"
            )
    motion = values.get("motion", np.zeros((0,), np.uint8))
    bad = np.unique(motion[(motion != 0) & (motion != 255)])
    if bad.size:
        problems.append(f"{frame.motion}: motion must be 0 or 255, found {bad[:5].tolist()}")
    return problems


def deep_check_frame(frame: layout.FrameFiles, semantic_classes: int = 5) -> list[str]:
    """Every problem of one frame's files, each naming the file (empty list = fine)."""
    try:
        layout.check_frame_files(frame)
        if frame.camera is not None:  # a frame of --labels partial may have no depth label
            layout.read_camera(frame.camera)
    except UserError as error:
        return [str(error)]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from keras_mtl.data.pipeline import decode_png

    values = {}
    for key in ("rgb", "flow", "semantic", "motion", "disparity"):
        path = getattr(frame, key)
        if path is None:
            continue
        try:
            values[key] = decode_png(tf.constant(str(path)), key).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            return [f"{path}: corrupt PNG ({error.message}); regenerate it"]
    return _value_problems(frame, values, semantic_classes)


def label_coverage(scan: layout.SplitScan) -> dict:
    """Label coverage of one scanned split: of the frames with both inputs, how many have each
    task's label.

    Returns:
        `{"frames": N, task: {"labelled": n, "percent": 100 n / N rounded to 0.1}, ...}`
        (percent 0.0 when N is 0).

    Example:

    ```python
    label_coverage(layout.scan_split("data/synthetic", "train", labels="partial"))
    # {"frames": 120, "depth": {"labelled": 120, "percent": 100.0}, ..., "motion": {...}}
    ```
    """
    frames = scan.inputs
    coverage: dict = {"frames": frames}
    for task in layout.TASK_LABEL_MODALITY:
        labelled = scan.coverage.get(task, 0)
        percent = round(100.0 * labelled / frames, 1) if frames else 0.0
        coverage[task] = {"labelled": labelled, "percent": percent}
    return coverage


def format_coverage(split: str, coverage: dict) -> str:
    """One line: `train: labels on 120 frames: depth 120 (100.0%), semantic ..., motion ...`."""
    tasks = ", ".join(
        f"{task} {coverage[task]['labelled']} ({coverage[task]['percent']:.1f}%)"
        for task in layout.TASK_LABEL_MODALITY
    )
    return f"{split}: labels on {coverage['frames']} frames with rgb and flow: {tasks}"


def check_dataset(
    data_path: str | Path,
    splits: list[str] | None = None,
    semantic_classes: int = 5,
    flow_dir: str = layout.FLOW_DIR,
    deep: bool = False,
    progress: bool = True,
    labels: str = "strict",
    coverage: dict | None = None,
) -> tuple[dict[str, int], list[str]]:
    """Checks the layout (and with `deep`, every file).

    Args:
        data_path: dataset root.
        splits: splits to check (default: those with flow, else all).
        semantic_classes: 5 or 19 (which semantic label files are read).
        flow_dir: flow folder name.
        deep: decode and check every file.
        progress: progress bars on stderr.
        labels: `strict` (every modality needed) or `partial` (label files optional).
        coverage: a dict that receives `label_coverage` of every split, or None.

    Returns:
        (usable frames per split, problems: one line per frame or file, naming it).

    Raises:
        UserError: missing root, modality folder or split folder.
    """
    # Default: the splits that have flow (Cityscapes' `test` has none); without a flow folder at
    # all, every split, so that the scan explains what is missing.
    splits = splits or layout.splits_with_flow(data_path, flow_dir) or layout.list_splits(data_path)
    counts: dict[str, int] = {}
    problems: list[str] = []
    for split in splits:
        scan = layout.scan_split(data_path, split, semantic_classes, flow_dir, labels)
        counts[split] = len(scan.frames)
        if coverage is not None:
            coverage[split] = label_coverage(scan)
        problems.extend(scan.problems())
        if not scan.frames and not scan.missing:
            problems.append(f"{split}: no frames (no *{layout.RGB_SUFFIX} files)")
        if deep and scan.frames:
            frames = [layout.FrameFiles(stem=s, **p) for s, p in sorted(scan.frames.items())]
            iterator = frames
            if progress:
                from tqdm import tqdm

                iterator = tqdm(frames, desc=f"checking {split}", unit="frame", file=sys.stderr)
            for frame in iterator:
                problems.extend(f"{split}: {p}" for p in deep_check_frame(frame, semantic_classes))
    return counts, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data_path", default=layout.DEFAULT_DATA_PATH, help="dataset root")
    parser.add_argument("--splits", nargs="+", default=None, help="splits (default: all with flow)")
    parser.add_argument("--semantic_classes", type=int, default=5, choices=(5, 19))
    parser.add_argument("--flow_dir", default=layout.FLOW_DIR, help="flow folder name")
    parser.add_argument("--deep", action="store_true", help="decode and check every file")
    parser.add_argument(
        "--labels",
        default="strict",
        choices=layout.LABEL_MODES,
        help="strict: every frame needs every label (default); partial: labels optional, as "
        "train.py --labels partial",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="two last lines: label coverage, then frames per split, as JSON",
    )
    args = parser.parse_args(argv)

    coverage: dict = {}
    counts, problems = check_dataset(
        args.data_path,
        args.splits,
        semantic_classes=args.semantic_classes,
        flow_dir=args.flow_dir,
        deep=args.deep,
        progress=not args.json,
        labels=args.labels,
        coverage=coverage,
    )
    usable = "complete" if args.labels == "strict" else "usable (rgb and flow)"
    for split, count in counts.items():
        print(f"{split}: {count} {usable} frames")
    for split, split_coverage in coverage.items():
        print(format_coverage(split, split_coverage))
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.data_path}", file=sys.stderr)
    else:
        print(f"{args.data_path}: OK" + (" (deep check)" if args.deep else ""))
    if args.json:
        print(json.dumps({"label_coverage": coverage}))
        print(json.dumps(counts))
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(main)
