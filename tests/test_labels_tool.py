"""data_tools.labels: labelIds -> five-class labelTrainIds, atomically, skipping existing files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_tools import read_png, write_png_atomic
from data_tools.labels import convert_labels, main
from keras_mtl.data.labels import LABEL_ID_TO_FIVE_CLASS
from keras_mtl.data.layout import FIVE_CLASS_SUFFIX, GT_DIR, LABEL_IDS_SUFFIX
from keras_mtl.errors import UserError

# Hand-written expectations for a few Cityscapes labelIds (docs/data.md's table).
BY_HAND = {
    0: 255,  # unlabeled
    1: 255,  # ego vehicle
    6: 255,  # ground (void)
    7: 0,  # road
    8: 4,  # sidewalk
    11: 4,  # building
    21: 4,  # vegetation
    23: 1,  # sky
    24: 2,  # person
    25: 2,  # rider
    26: 3,  # car
    27: 3,  # truck
    33: 3,  # bicycle
    200: 255,  # not a Cityscapes id
}


def _write_label_ids(root: Path, split: str, city: str, stem: str, label_ids: np.ndarray) -> Path:
    path = root / GT_DIR / split / city / f"{stem}{LABEL_IDS_SUFFIX}"
    write_png_atomic(path, label_ids)
    return path


def test_output_equals_lookup_table_and_hand_values(tmp_path: Path) -> None:
    all_ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    _write_label_ids(tmp_path, "train", "aachen", "aachen_000000_000019", all_ids)
    hand = np.array(list(BY_HAND), dtype=np.uint8).reshape(2, 7)
    _write_label_ids(tmp_path, "val", "bonn", "bonn_000001_000019", hand)

    assert main(["--data_path", str(tmp_path)]) == 0
    out = read_png(
        tmp_path / GT_DIR / "train" / "aachen" / f"aachen_000000_000019{FIVE_CLASS_SUFFIX}"
    )
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, LABEL_ID_TO_FIVE_CLASS[all_ids])
    out = read_png(tmp_path / GT_DIR / "val" / "bonn" / f"bonn_000001_000019{FIVE_CLASS_SUFFIX}")
    np.testing.assert_array_equal(out.ravel(), list(BY_HAND.values()))


def test_skips_existing_unless_overwrite_and_respects_splits(tmp_path: Path) -> None:
    ids = np.full((4, 6), 26, dtype=np.uint8)
    _write_label_ids(tmp_path, "train", "aachen", "aachen_000000_000019", ids)
    _write_label_ids(tmp_path, "val", "bonn", "bonn_000000_000019", ids)
    assert convert_labels(tmp_path, ["train"], progress=False) == {"written": 1, "skipped": 0}
    assert not (
        tmp_path / GT_DIR / "val" / "bonn" / f"bonn_000000_000019{FIVE_CLASS_SUFFIX}"
    ).exists()
    output = tmp_path / GT_DIR / "train" / "aachen" / f"aachen_000000_000019{FIVE_CLASS_SUFFIX}"
    write_png_atomic(output, np.zeros((4, 6), np.uint8))  # a stale output
    assert convert_labels(tmp_path, progress=False) == {"written": 1, "skipped": 1}
    assert np.all(read_png(output) == 0)
    assert convert_labels(tmp_path, overwrite=True, progress=False) == {"written": 2, "skipped": 0}
    assert np.all(read_png(output) == 3)
    assert not list(output.parent.glob(".*.tmp"))


def test_regenerates_the_tiny_dataset_labels(tiny_dataset: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_dataset / GT_DIR, tmp_path / GT_DIR)
    originals = {p: p.read_bytes() for p in (tmp_path / GT_DIR).rglob(f"*{FIVE_CLASS_SUFFIX}")}
    assert (
        convert_labels(tmp_path, overwrite=True, progress=False)["written"] == len(originals) == 6
    )
    for path, data in originals.items():
        np.testing.assert_array_equal(
            read_png(path), read_png(tiny_dataset / path.relative_to(tmp_path))
        )
        assert len(data) > 0


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--data_path"):
        convert_labels(tmp_path / "missing", progress=False)
    with pytest.raises(UserError, match=GT_DIR):
        convert_labels(tmp_path, progress=False)
    (tmp_path / GT_DIR / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="no \\*_gtFine_labelIds.png"):
        convert_labels(tmp_path, progress=False)
    with pytest.raises(UserError, match="--splits"):
        convert_labels(tmp_path, ["test"], progress=False)
    write_png_atomic(
        tmp_path / GT_DIR / "train" / "x" / f"x_000000_000019{LABEL_IDS_SUFFIX}",
        np.zeros((2, 2, 3), np.uint8),
        rgb=True,
    )
    with pytest.raises(UserError, match="single-channel"):
        convert_labels(tmp_path, progress=False)
    result = subprocess.run(
        [sys.executable, "-m", "data_tools.labels", "--data_path", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2 and result.stderr.startswith("error: --data_path")
    assert "Traceback" not in result.stderr


def test_existing_19_class_train_ids_are_refused_until_overwrite(tmp_path: Path) -> None:
    ids = np.full((4, 6), 26, dtype=np.uint8)
    _write_label_ids(tmp_path, "train", "aachen", "aachen_000000_000019", ids)
    output = tmp_path / GT_DIR / "train" / "aachen" / f"aachen_000000_000019{FIVE_CLASS_SUFFIX}"
    write_png_atomic(output, np.full((4, 6), 13, np.uint8))  # cityscapesScripts: car = 13
    with pytest.raises(UserError, match=r"aachen_000000_000019.*class ids up to 13.*--overwrite"):
        convert_labels(tmp_path, progress=False)
    assert convert_labels(tmp_path, overwrite=True, progress=False) == {"written": 1, "skipped": 0}
    assert np.all(read_png(output) == 3)
