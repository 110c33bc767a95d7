"""Colour maps, prediction grid and history plots (keras_mtl.visualize)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from keras_mtl.data.labels import FIVE_CLASS_PALETTE, MOTION_PALETTE, NINETEEN_CLASS_PALETTE
from keras_mtl.errors import UserError
from keras_mtl.visualize import (
    PANEL_TITLE_HEIGHT,
    colorize_depth,
    colorize_flow,
    colorize_semantic,
    motion_overlay,
    plot_history,
    prediction_grid,
    read_history,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_semantic_palettes_and_ignore_black():
    class_map = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    image = colorize_semantic(class_map, 5)
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[0, 0], FIVE_CLASS_PALETTE[0])
    np.testing.assert_array_equal(image[1, 1], FIVE_CLASS_PALETTE[4])
    np.testing.assert_array_equal(image[1, 2], (0, 0, 0))
    nineteen = colorize_semantic(np.array([[18, 10]]), 19)
    np.testing.assert_array_equal(nineteen[0, 0], NINETEEN_CLASS_PALETTE[18])
    np.testing.assert_array_equal(nineteen[0, 1], NINETEEN_CLASS_PALETTE[10])


def test_flow_colour_wheel():
    # Still pixel: white. Rightward at full speed: red (hue 0). Leftward: cyan (hue 180).
    flow = np.array([[[0.0, 0.0], [4.0, 0.0], [-4.0, 0.0], [2.0, 0.0]]], np.float32)
    image = colorize_flow(flow)
    np.testing.assert_array_equal(image[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(image[0, 1], (255, 0, 0))
    np.testing.assert_array_equal(image[0, 2], (0, 255, 255))
    np.testing.assert_array_equal(image[0, 3], (255, 128, 128))  # half speed: half saturation
    # A confidence channel is ignored and a fixed max_magnitude saturates earlier.
    with_confidence = np.concatenate([flow, np.full((1, 4, 1), 200.0, np.float32)], -1)
    np.testing.assert_array_equal(colorize_flow(with_confidence), image)
    np.testing.assert_array_equal(colorize_flow(flow, max_magnitude=2.0)[0, 3], (255, 0, 0))


def test_depth_colour_map_near_bright_invalid_black():
    depth = np.array([[2.0, 10.0, 50.0, 0.0]], np.float32)
    image = colorize_depth(depth, inverse_range=(1 / 50.0, 1 / 2.0))
    brightness = image.astype(np.int64).sum(-1)[0]
    assert brightness[0] > brightness[1] > brightness[2]
    np.testing.assert_array_equal(image[0, 3], (0, 0, 0))
    # The default range comes from the image itself and [H, W, 1] input works the same.
    np.testing.assert_array_equal(colorize_depth(depth[..., None]), colorize_depth(depth))


def test_motion_overlay_tints_moving_pixels_only():
    rgb = np.full((1, 2, 3), 100, np.uint8)
    out = motion_overlay(rgb, np.array([[0, 1]]), alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], (60, 60, 60))  # darkened background
    np.testing.assert_array_equal(out[0, 1], MOTION_PALETTE[1])


def test_prediction_grid_layout():
    height, width = 16, 128
    rng = np.random.default_rng(0)
    truth = {
        "depth": rng.uniform(1, 80, (height, width, 1)).astype(np.float32),
        "semantic": rng.integers(0, 5, (height, width)),
        "motion": rng.integers(0, 2, (height, width)),
    }
    rgb = rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)  # other size: resized to the panels
    flow = rng.normal(size=(8, 16, 3)).astype(np.float32)
    grid = prediction_grid(rgb, flow, truth, truth, semantic_classes=5)
    panel_height = height + PANEL_TITLE_HEIGHT
    assert grid.dtype == np.uint8 and grid.shape == (4 * panel_height, 2 * width + 2, 3)
    semantic_row = grid[2 * panel_height + PANEL_TITLE_HEIGHT : 3 * panel_height]
    np.testing.assert_array_equal(semantic_row[:, :width], colorize_semantic(truth["semantic"]))
    # Only the predicted tasks get a row.
    depth_only = prediction_grid(rgb, None, truth, {"depth": truth["depth"]})
    assert depth_only.shape == (2 * panel_height, 2 * width + 2, 3)
    # Narrow maps are upscaled by a whole factor (here 4) with nearest neighbour.
    small = {task: value[:4, :32] for task, value in truth.items()}
    zoomed = prediction_grid(rgb, flow, small, small)
    assert zoomed.shape == (4 * (16 + PANEL_TITLE_HEIGHT), 2 * 128 + 2, 3)
    zoomed_semantic = zoomed[2 * (16 + PANEL_TITLE_HEIGHT) + PANEL_TITLE_HEIGHT :][:16, :128]
    expected = colorize_semantic(np.repeat(np.repeat(small["semantic"], 4, 0), 4, 1))
    np.testing.assert_array_equal(zoomed_semantic, expected)


def write_history(path, weights):
    rows = [
        "epoch,loss,depth_loss,val_depth_ard_percent,val_motion_miou,weight_depth,weight_motion"
    ]
    for epoch, (w_depth, w_motion) in enumerate(weights):
        rows.append(f"{epoch},{3 - epoch * 0.5},{1 - epoch * 0.1},{20 - epoch},{50 + epoch},")
        rows[-1] += f"{w_depth},{w_motion}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_read_history_and_plot(tmp_path):
    first = write_history(
        tmp_path / "grad_norm" / "history.csv", [(1.0, 1.0), (1.2, 0.8), (1.4, 0.6)]
    )
    second = write_history(tmp_path / "vanilla" / "history.csv", [(1.0, 1.0)] * 3)
    columns = read_history(first)
    np.testing.assert_allclose(columns["weight_depth"], [1.0, 1.2, 1.4])
    out = plot_history([first, second], tmp_path / "figs" / "curves.png")
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 10  # something was drawn
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["curves.png"]  # no temp left
    with pytest.raises(UserError, match="epoch"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        read_history(bad)


def test_cli_writes_png_and_rejects_missing_file(tmp_path):
    history = write_history(tmp_path / "run" / "history.csv", [(1.0, 1.0), (0.9, 1.1)])
    out = tmp_path / "curves.png"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    command = [sys.executable, "-m", "keras_mtl.visualize"]
    done = subprocess.run(
        command + ["--history", str(history), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert cv2.imread(str(out)) is not None
    missing = subprocess.run(
        command + ["--history", str(tmp_path / "nope.csv"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: --history")
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
