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
file. `--json` prints `{"train": N, "val": M, ...}` (complete frames per split) as the last line.
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
    semantic = values["semantic"]
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
    motion = values["motion"]
    bad = np.unique(motion[(motion != 0) & (motion != 255)])
    if bad.size:
        problems.append(f"{frame.motion}: motion must be 0 or 255, found {bad[:5].tolist()}")
    return problems


def deep_check_frame(frame: layout.FrameFiles, semantic_classes: int = 5) -> list[str]:
    """Every problem of one frame's files, each naming the file (empty list = fine)."""
    try:
        layout.check_frame_files(frame)
        layout.read_camera(frame.camera)
    except UserError as error:
        return [str(error)]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from keras_mtl.data.pipeline import decode_png

    values = {}
    for key in ("rgb", "flow", "semantic", "motion", "disparity"):
        path = getattr(frame, key)
        try:
            values[key] = decode_png(tf.constant(str(path)), key).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            return [f"{path}: corrupt PNG ({error.message}); regenerate it"]
    return _value_problems(frame, values, semantic_classes)


def check_dataset(
    data_path: str | Path,
    splits: list[str] | None = None,
    semantic_classes: int = 5,
    flow_dir: str = layout.FLOW_DIR,
    deep: bool = False,
    progress: bool = True,
) -> tuple[dict[str, int], list[str]]:
    """Checks the layout (and with `deep`, every file).

    Returns:
        (complete frames per split, problems: one line per frame or file, naming it).

    Raises:
        UserError: missing root, modality folder or split folder.
    """
    # Default: the splits that have flow (Cityscapes' `test` has none); without a flow folder at
    # all, every split, so that the scan explains what is missing.
    splits = splits or layout.splits_with_flow(data_path, flow_dir) or layout.list_splits(data_path)
    counts: dict[str, int] = {}
    problems: list[str] = []
    for split in splits:
        scan = layout.scan_split(data_path, split, semantic_classes, flow_dir)
        counts[split] = len(scan.frames)
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
    parser.add_argument("--json", action="store_true", help="last line: frames per split as JSON")
    args = parser.parse_args(argv)

    counts, problems = check_dataset(
        args.data_path,
        args.splits,
        semantic_classes=args.semantic_classes,
        flow_dir=args.flow_dir,
        deep=args.deep,
        progress=not args.json,
    )
    for split, count in counts.items():
        print(f"{split}: {count} complete frames")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.data_path}", file=sys.stderr)
    else:
        print(f"{args.data_path}: OK" + (" (deep check)" if args.deep else ""))
    if args.json:
        print(json.dumps(counts))
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(main)
