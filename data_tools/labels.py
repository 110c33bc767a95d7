"""Writes the five-class `*_gtFine_labelTrainIds.png` next to every `*_gtFine_labelIds.png`.

The mapping is `keras_mtl.data.labels.label_ids_to_five_classes` (documented in docs/data.md):
road 0, sky 1, pedestrian 2 (person, rider), vehicle 3, background 4, ignore 255.

Command line:
    python -m data_tools.labels --data_path DIR [--splits train val] [--overwrite]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools import find_child_dir, read_png, require_data_path, write_png_atomic
from keras_mtl.data.labels import label_ids_to_five_classes
from keras_mtl.data.layout import FIVE_CLASS_SUFFIX, GT_DIR, LABEL_IDS_SUFFIX
from keras_mtl.errors import UserError, run_cli
from keras_mtl.tasks import IGNORE_INDEX


def convert_label_file(label_ids_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """Reads one labelIds PNG and writes its five-class map (uint8, 255 = ignore) atomically."""
    label_ids = read_png(label_ids_path)
    if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        raise UserError(
            f"{label_ids_path} must be a single-channel 8-bit labelIds image, "
            f"got shape {label_ids.shape} and dtype {label_ids.dtype}"
        )
    write_png_atomic(output_path, label_ids_to_five_classes(label_ids))


def convert_labels(
    data_path: str | os.PathLike,
    splits: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Writes `*_gtFine_labelTrainIds.png` for every `*_gtFine_labelIds.png` of `splits`.

    Args:
        data_path: dataset root (holding gtFine/).
        splits: splits to convert; None = every split folder under gtFine/.
        overwrite: rewrite outputs that already exist.
        progress: show a tqdm progress bar.

    Returns:
        `{"written": n, "skipped": m}`.

    Raises:
        UserError: no gtFine folder, a named split missing, or no labelIds files at all.
    """
    root = require_data_path(data_path)
    gt_root = find_child_dir(root, GT_DIR)
    if gt_root is None:
        raise UserError(f"{root / GT_DIR} does not exist; --data_path must hold {GT_DIR}/")
    if splits is None:
        split_dirs = [child for child in sorted(gt_root.iterdir()) if child.is_dir()]
    else:
        split_dirs = [gt_root / split for split in splits]
        for split_dir in split_dirs:
            if not split_dir.is_dir():
                raise UserError(f"--splits: {split_dir} does not exist")
    sources = [
        path
        for split_dir in split_dirs
        for path in sorted(split_dir.glob(f"*/*{LABEL_IDS_SUFFIX}"))
    ]
    if not sources:
        raise UserError(
            f"no *{LABEL_IDS_SUFFIX} files under {gt_root}; check --data_path and --splits"
        )
    written = skipped = 0
    for source in tqdm(sources, desc="labels", unit="file", disable=not progress):
        output = Path(str(source)[: -len(LABEL_IDS_SUFFIX)] + FIVE_CLASS_SUFFIX)
        if output.exists() and not overwrite:
            _check_five_class(output)
            skipped += 1
            continue
        convert_label_file(source, output)
        written += 1
    return {"written": written, "skipped": skipped}


def _check_five_class(path: Path) -> None:
    """Raises UserError unless the existing `path` holds 5-class ids (0..4, 255 ignore)."""
    values = np.unique(read_png(path))
    unexpected = values[(values > 4) & (values != IGNORE_INDEX)]
    if unexpected.size:
        raise UserError(
            f"{path} exists with class ids up to {int(unexpected.max())}, not the 5-class labels "
            "(cityscapesScripts writes 19-class files under this name); rerun with --overwrite "
            "to replace them with 5-class labels"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.labels",
        description="Convert Cityscapes *_gtFine_labelIds.png to the five-class "
        "*_gtFine_labelTrainIds.png (road, sky, pedestrian, vehicle, background; 255 ignore).",
    )
    parser.add_argument("--data_path", required=True, help="dataset root")
    parser.add_argument("--splits", nargs="+", default=None, help="default: every split")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")
    args = parser.parse_args(argv)
    counts = convert_labels(args.data_path, args.splits, overwrite=args.overwrite)
    print(f"labels: wrote {counts['written']} files, skipped {counts['skipped']} existing")
    return 0


if __name__ == "__main__":
    run_cli(main)
