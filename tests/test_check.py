"""The layout checker: counts, missing modalities, deep file checks, CLI behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_pipeline import HEIGHT, WIDTH, _path_of, _write_png, write_dataset

from data_tools import check
from keras_mtl.data import layout

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data_root(tmp_path) -> Path:
    write_dataset(tmp_path, {"train": 4, "val": 2})
    return tmp_path


def test_good_layout_counts_and_json(data_root, capsys) -> None:
    assert check.main(["--data_path", str(data_root), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == {"train": 4, "val": 2}
    assert "train: 4 complete frames" in out


def test_deep_check_passes_on_good_files(data_root, capsys) -> None:
    assert check.main(["--data_path", str(data_root), "--deep", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"train": 4, "val": 2}


def test_every_frame_with_a_missing_modality_is_named(data_root, capsys) -> None:
    _path_of(data_root, layout.GT_DIR, "bonn_000000_000019", layout.MOTION_SUFFIX).unlink()
    _path_of(data_root, layout.FLOW_DIR, "aachen_000001_000019", layout.RGB_SUFFIX).unlink()
    _path_of(
        data_root, layout.DISPARITY_DIR, "bonn_000000_000019", layout.DISPARITY_SUFFIX, "val"
    ).unlink()
    status = check.main(["--data_path", str(data_root), "--json"])
    captured = capsys.readouterr()
    assert status == 1
    assert "train: frame bonn_000000_000019 has no motion" in captured.err
    assert "train: frame aachen_000001_000019 has no flow" in captured.err
    assert "val: frame bonn_000000_000019 has no disparity" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"train": 2, "val": 1}


def test_deep_check_names_bad_files(data_root, capsys) -> None:
    disparity = _path_of(
        data_root, layout.DISPARITY_DIR, "bonn_000002_000019", layout.DISPARITY_SUFFIX
    )
    _write_png(disparity, np.full((HEIGHT, WIDTH), 9, np.uint8))  # 8-bit disparity
    motion = _path_of(data_root, layout.GT_DIR, "aachen_000001_000019", layout.MOTION_SUFFIX, "val")
    _write_png(motion, np.full((HEIGHT, WIDTH), 128, np.uint8))  # not 0/255
    semantic = _path_of(data_root, layout.GT_DIR, "bonn_000000_000019", layout.FIVE_CLASS_SUFFIX)
    _write_png(semantic, np.full((HEIGHT, WIDTH), 7, np.uint8))  # a labelId, not a 5-class id
    rgb = _path_of(data_root, layout.RGB_DIR, "aachen_000003_000019", layout.RGB_SUFFIX)
    rgb.write_bytes(rgb.read_bytes()[:-20])  # truncated
    # Without --deep the layout is complete.
    assert check.main(["--data_path", str(data_root)]) == 0
    capsys.readouterr()
    assert check.main(["--data_path", str(data_root), "--deep"]) == 1
    err = capsys.readouterr().err
    assert f"{disparity}: disparity must be a 16-bit" in err
    assert f"{motion}: motion must be 0 or 255, found [128]" in err
    assert f"{semantic}: 5-class labels must be 0..4 or 255, found [7]" in err
    assert f"{rgb}: truncated PNG" in err
    assert "4 problem(s)" in err


def test_missing_root_is_one_line_exit_2(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "data_tools.check", "--data_path", str(tmp_path / "nowhere")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--data_path" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr
