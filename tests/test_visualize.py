"""Colour maps, prediction grid and history plots (keras_mtl.visualize)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from keras_mtl.data.labels import (
    FIVE_CLASS_PALETTE,
    MOTION_PALETTE,
    NINETEEN_CLASS_PALETTE,
    palette,
)
from keras_mtl.errors import UserError
from keras_mtl.visualize import (
    DEPTH_COLORMAP,
    INVALID_DEPTH_COLORS,
    MIN_INVALID_COLOR_DISTANCE,
    PANEL_TITLE_HEIGHT,
    colorize_depth,
    colorize_flow,
    colorize_semantic,
    colormap_colors,
    depth_range_to_inverse,
    depth_ticks,
    invalid_depth_colors,
    inverse_depth_range,
    legend_scale,
    legend_strip,
    motion_overlay,
    plot_history,
    prediction_grid,
    prediction_overlay,
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


def test_depth_colour_map_near_bright_invalid_hatched():
    depth = np.array([[2.0, 10.0, 50.0, 0.0]], np.float32)
    image = colorize_depth(depth, inverse_range=(1 / 50.0, 1 / 2.0))
    brightness = image.astype(np.int64).sum(-1)[0]
    assert brightness[0] > brightness[1] > brightness[2]
    assert tuple(image[0, 3]) in INVALID_DEPTH_COLORS
    # The default range comes from the image itself and [H, W, 1] input works the same.
    np.testing.assert_array_equal(colorize_depth(depth[..., None]), colorize_depth(depth))
    # Invalid pixels (0, negative, NaN) form diagonal stripes of both hatch colours.
    hatched = colorize_depth(np.zeros((16, 16), np.float32), (0.01, 0.5))
    colors = {tuple(color) for color in hatched.reshape(-1, 3)}
    assert colors == set(INVALID_DEPTH_COLORS)
    np.testing.assert_array_equal(hatched[0, 1], hatched[1, 0])  # constant along anti-diagonals
    assert tuple(colorize_depth(np.array([[-1.0, np.nan]]), (0.01, 0.5))[0, 1]) in colors


@pytest.mark.parametrize(
    "colormap",
    [DEPTH_COLORMAP, cv2.COLORMAP_INFERNO, cv2.COLORMAP_TURBO, cv2.COLORMAP_BONE],
)
def test_invalid_depth_colour_never_equals_a_valid_depth_colour(colormap):
    invalid = invalid_depth_colors(colormap)
    entries = colormap_colors(colormap).astype(np.float64)
    # Every colour a valid depth can take is an entry of the map: all are far from both.
    for color in invalid:
        assert np.linalg.norm(entries - color, axis=-1).min() >= MIN_INVALID_COLOR_DISTANCE
    # Valid depths over the whole range (and beyond it, clipped) under several scales.
    depths = np.concatenate([np.geomspace(1e-3, 1e5, 4000), [np.inf]]).astype(np.float32)
    for inverse_range in [(0.01, 0.5), (0.0, 1.0), (1 / 255, 1 / 1.5), (0.1, 0.1)]:
        image = colorize_depth(depths[None], inverse_range, colormap).reshape(-1, 3)
        for color in invalid:
            assert not np.all(image == color, axis=-1).any()
    # The default scale (the image's percentiles) too, with invalid pixels among valid ones.
    mixed = np.concatenate([depths, np.zeros(64, np.float32)])[None]
    image = colorize_depth(mixed, colormap=colormap)[0]
    valid_colors = {tuple(color) for color in image[: len(depths)]}
    assert valid_colors.isdisjoint({tuple(color) for color in image[len(depths) :]})
    assert {tuple(color) for color in image[len(depths) :]} <= set(invalid)


def test_motion_overlay_tints_moving_pixels_only():
    rgb = np.full((1, 2, 3), 100, np.uint8)
    out = motion_overlay(rgb, np.array([[0, 1]]), alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], (60, 60, 60))  # darkened background
    np.testing.assert_array_equal(out[0, 1], MOTION_PALETTE[1])


def make_frame(height, width, seed=0):
    rng = np.random.default_rng(seed)
    truth = {
        "depth": rng.uniform(1, 80, (height, width, 1)).astype(np.float32),
        "semantic": rng.integers(0, 5, (height, width)),
        "motion": rng.integers(0, 2, (height, width)),
    }
    rgb = rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)  # other size: resized to the panels
    flow = rng.normal(size=(8, 16, 3)).astype(np.float32)
    return rgb, flow, truth


def test_prediction_grid_layout():
    height, width = 16, 128
    rgb, flow, truth = make_frame(height, width)
    grid = prediction_grid(rgb, flow, truth, truth, semantic_classes=5)
    panel_height = height + PANEL_TITLE_HEIGHT
    legend = legend_strip(
        2 * width + 2,
        semantic_classes=5,
        inverse_range=inverse_depth_range(truth["depth"]),
        motion=True,
        show_ignore=True,
    )
    assert legend.shape[0] > 0
    assert grid.dtype == np.uint8 and grid.shape == (
        4 * panel_height + len(legend),
        2 * width + 2,
        3,
    )
    np.testing.assert_array_equal(grid[4 * panel_height :], legend)  # the legend is below
    semantic_row = grid[2 * panel_height + PANEL_TITLE_HEIGHT : 3 * panel_height]
    np.testing.assert_array_equal(semantic_row[:, :width], colorize_semantic(truth["semantic"]))
    # Without the legend the grid is the panels only.
    bare = prediction_grid(rgb, flow, truth, truth, 5, legend=False)
    np.testing.assert_array_equal(bare, grid[: 4 * panel_height])
    # Only the predicted tasks get a row.
    depth_only = prediction_grid(rgb, None, truth, {"depth": truth["depth"]}, legend=False)
    assert depth_only.shape == (2 * panel_height, 2 * width + 2, 3)
    # Narrow maps are upscaled by a whole factor (here 4) with nearest neighbour.
    small = {task: value[:4, :32] for task, value in truth.items()}
    zoomed = prediction_grid(rgb, flow, small, small)
    assert zoomed.shape[1:] == (2 * 128 + 2, 3) and zoomed.shape[0] > 4 * (16 + PANEL_TITLE_HEIGHT)
    zoomed_semantic = zoomed[2 * (16 + PANEL_TITLE_HEIGHT) + PANEL_TITLE_HEIGHT :][:16, :128]
    expected = colorize_semantic(np.repeat(np.repeat(small["semantic"], 4, 0), 4, 1))
    np.testing.assert_array_equal(zoomed_semantic, expected)


def find_blocks(image, color, size=10):
    """Top-left corners of the size x size blocks of exactly `color` in `image`."""
    mask = np.all(image == np.asarray(color, np.uint8), axis=-1).astype(np.uint8)
    inside = cv2.erode(mask, np.ones((size, size), np.uint8), anchor=(0, 0), borderValue=0)
    return np.argwhere(inside > 0)


def is_text(image):
    """Dark, neutral pixels: the legend's anti-aliased text (and tick marks) on white."""
    image = image.astype(np.int64)
    return (image.max(-1) < 110) & (image.max(-1) - image.min(-1) < 12)


def test_grid_legend_lists_every_class_with_its_name():
    rgb, flow, truth = make_frame(32, 128)
    for classes in (5, 19):
        truth["semantic"] = np.arange(32 * 128).reshape(32, 128) % classes
        grid = prediction_grid(rgb, flow, truth, truth, classes)
        body = prediction_grid(rgb, flow, truth, truth, classes, legend=False)
        legend = grid[len(body) :]
        assert legend.shape[1] == grid.shape[1] and len(legend) > 0
        swatches = [*palette(classes), (0, 0, 0), MOTION_PALETTE[1]]  # classes, ignore, moving
        for color in swatches:
            corners = find_blocks(legend, color)
            assert len(corners), f"no swatch of {color} in the legend"
            top, left = corners[0]
            # The name is written right of its swatch.
            assert is_text(legend[top : top + 12, left + 14 : left + 60]).sum() > 10
        # The hatched "invalid" swatch shows both invalid depth colours.
        for color in INVALID_DEPTH_COLORS:
            assert np.all(legend == color, axis=-1).sum() >= 20
    # Tasks left out of the prediction are left out of the legend.
    depth_only = prediction_grid(rgb, flow, truth, {"depth": truth["depth"]})
    legend = depth_only[
        len(prediction_grid(rgb, flow, truth, {"depth": truth["depth"]}, legend=False)) :
    ]
    assert not len(find_blocks(legend, MOTION_PALETTE[1], 6))
    assert not len(find_blocks(legend, palette(5)[0], 6))


def find_depth_bar(legend, colormap=DEPTH_COLORMAP):
    """(top, bottom, left, right) inclusive bounds of the legend's colour bar and its LUT index."""
    entries = colormap_colors(colormap).astype(np.int64)
    codes = (entries[:, 0] << 16) | (entries[:, 1] << 8) | entries[:, 2]
    pixels = legend.astype(np.int64)
    pixel_codes = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    index = np.full(pixel_codes.shape, -1)
    for entry, code in enumerate(codes):
        index[pixel_codes == code] = entry
    rows = np.flatnonzero((index >= 0).sum(1) > 50)
    columns = np.flatnonzero((index[rows] >= 0).all(0))
    return (rows[0], rows[-1], columns[0], columns[-1]), index


def test_depth_colour_bar_is_the_inverse_depth_map_with_ticks_in_metres():
    rgb, flow, truth = make_frame(64, 128)
    depth_range = (2.0, 100.0)
    inverse_range = depth_range_to_inverse(depth_range)
    grid = prediction_grid(rgb, flow, truth, truth, depth_range=depth_range)
    body = prediction_grid(rgb, flow, truth, truth, depth_range=depth_range, legend=False)
    legend = grid[len(body) :]
    (top, bottom, left, right), index = find_depth_bar(legend)
    bar = index[top : bottom + 1, left : right + 1]
    assert bar.shape[0] >= 10 and bar.shape[1] >= 150 and (bar >= 0).all()
    assert (bar == bar[0]).all()  # one colour per column
    # Near (bright, the map's top) on the left, far (dark) on the right, monotonic between.
    assert bar[0, 0] == 255 and bar[0, -1] == 0 and (np.diff(bar[0]) <= 0).all()
    bar_width = bar.shape[1]
    ticks = depth_ticks(inverse_range, bar_width, legend_scale(legend.shape[1]))
    metres = [value for value, _ in ticks]
    assert {2.0, 5.0, 10.0, 100.0} <= set(metres) and metres == sorted(metres)
    for value, x in ticks:
        # The bar's colour at the tick is the colour colorize_depth gives that depth...
        expected = colorize_depth(np.array([[value]], np.float32), inverse_range)[0, 0]
        expected_index = int(np.flatnonzero((colormap_colors() == expected).all(-1))[0])
        assert abs(bar[0, x] - expected_index) <= 2, (value, x)
        # ...with a tick mark under it and its label's text just below.
        assert is_text(legend[bottom + 2 : bottom + 5, left + x - 1 : left + x + 2]).any()
        label_area = legend[bottom + 6 : bottom + 22, left + x - 12 : left + x + 13]
        assert is_text(label_area).sum() > 5, value


def test_depth_ticks_nice_values_in_range_without_overlap():
    ticks = depth_ticks((1 / 100, 1 / 2), 256)
    metres = [value for value, _ in ticks]
    assert metres[0] == 2.0 and metres[-1] == 100.0 and 10.0 in metres
    positions = [x for _, x in ticks]
    assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == 255
    # Inverse depth: equal steps in 1/m, so 10 m sits 8/49 of the bar from the far end.
    assert dict(ticks)[10.0] == round((0.5 - 0.1) / 0.49 * 255)
    # A short bar drops crowded far labels; a narrow range gets its ends and in-between values.
    assert len(depth_ticks((1 / 100, 1 / 2), 60)) < len(ticks)
    narrow = depth_ticks((1 / 12, 1 / 8), 200)
    assert [value for value, _ in narrow] == [8.0, 9.0, 10.0, 12.0]  # ends, 10, then 9
    assert len(depth_ticks((1 / 11.5, 1 / 10.5), 200)) >= 1
    with pytest.raises(ValueError, match="near < far"):
        depth_range_to_inverse((10.0, 5.0))


def test_legend_height_does_not_depend_on_the_depth_range():
    shapes = {
        legend_strip(256, semantic_classes=19, inverse_range=inverse_range, motion=True).shape
        for inverse_range in [(0.01, 0.5), (0.0, 1.0), (0.08, 0.12)]
    }
    assert len(shapes) == 1
    # A wide picture gets a larger legend, a narrow one a smaller (but never below scale 1).
    assert legend_scale(258) == 1 and legend_scale(4098) == 5
    small = legend_strip(700, semantic_classes=5, inverse_range=(0.01, 0.5))
    large = legend_strip(1400, semantic_classes=5, inverse_range=(0.01, 0.5))
    assert large.shape[0] == 2 * small.shape[0]
    assert legend_strip(300).shape == (0, 300, 3)
    # Narrower than its content, it is clipped rather than failing.
    assert legend_strip(40, semantic_classes=19, inverse_range=(0.01, 0.5)).shape[1] == 40


def test_prediction_overlay_shapes_and_contents():
    height, width = 96, 256
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    semantic = np.zeros((height, width), np.int64)
    semantic[:, width // 2 :] = 3
    motion = np.zeros((height, width), np.int64)
    motion[30:60, 40:100] = 1
    depth = rng.uniform(2, 80, (height // 2, width // 2, 1)).astype(np.float32)  # lower res
    prediction = {"depth": depth, "semantic": semantic, "motion": motion}
    picture = prediction_overlay(rgb, prediction, depth_range=(2.0, 100.0))
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[1] == width
    # Landscape: the blended frame on top, the depth map below it, then the legend.
    bare = prediction_overlay(rgb, prediction, depth_range=(2.0, 100.0), legend=False)
    assert bare.shape == (2 * height + 2, width, 3)
    np.testing.assert_array_equal(picture[: len(bare)], bare)
    blended = np.round(0.5 * rgb[0, 0].astype(np.float64) + 0.5 * np.asarray(FIVE_CLASS_PALETTE[0]))
    np.testing.assert_array_equal(bare[0, 0], blended)
    moving_color = np.all(bare[:height] == MOTION_PALETTE[1], axis=-1)
    assert moving_color[28:62, 38:102].sum() > 100 and not moving_color[:, 120:].any()
    depth_panel = bare[height + 2 :]
    expected = colorize_depth(cv2.resize(depth[..., 0], (width, height)), (0.01, 0.5))
    np.testing.assert_array_equal(depth_panel, expected)
    # Logits give the same picture as class ids.
    logits = {
        "depth": depth,
        "semantic": np.eye(5, dtype=np.float32)[semantic],
        "motion": np.eye(2, dtype=np.float32)[motion],
    }
    np.testing.assert_array_equal(
        prediction_overlay(rgb, logits, depth_range=(2.0, 100.0)), picture
    )
    # The legend lists the classes, the moving outline and the depth bar.
    legend = picture[len(bare) :]
    for color in palette(5):
        assert len(find_blocks(legend, color))
    assert np.all(legend == MOTION_PALETTE[1], axis=-1).sum() > 20
    assert find_depth_bar(legend)[0][3] - find_depth_bar(legend)[0][2] > 100
    # A fixed depth range keeps video frames the same size with the same legend.
    other = prediction_overlay(rgb, dict(prediction, depth=depth * 0.3), depth_range=(2.0, 100.0))
    assert other.shape == picture.shape
    np.testing.assert_array_equal(other[len(bare) :], legend)


def test_prediction_overlay_layouts_and_missing_tasks():
    rng = np.random.default_rng(2)
    portrait = rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)
    depth = rng.uniform(2, 80, (300, 260)).astype(np.float32)
    side_by_side = prediction_overlay(portrait, {"depth": depth}, legend=False)
    assert side_by_side.shape == (300, 2 * 260 + 2, 3)
    np.testing.assert_array_equal(side_by_side[:, :260], portrait)  # no semantic, no motion
    # Network-size frames are upscaled by a whole factor so that the legend fits.
    tiny = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    semantic_only = prediction_overlay(tiny, {"semantic": np.zeros((64, 128), np.int64)}, 19)
    assert semantic_only.shape[1] == 256 and semantic_only.shape[0] > 128
    for color in NINETEEN_CLASS_PALETTE:
        assert len(find_blocks(semantic_only[128:], color))
    with pytest.raises(ValueError, match="at least one"):
        prediction_overlay(tiny, {})


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
