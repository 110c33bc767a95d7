"""data_tools.resize: the pre-resized copy keeps layout, labels, flow vectors and depth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.resize import main as resize_main
from data_tools.resize import resize_dataset
from keras_mtl.data.layout import discover_frames
from keras_mtl.data.pipeline import load_frame, make_dataset
from keras_mtl.errors import UserError

HALF = (32, 64)  # the tiny dataset is 64x128


@pytest.fixture(scope="module")
def half_copy(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("half") / "data"
    counts = resize_dataset(tiny_dataset, out, HALF, workers=1, progress=False)
    return out, counts


def _block_mean(image: np.ndarray) -> np.ndarray:
    """2x2 block means: area interpolation for an exact halving."""
    h, w = image.shape[:2]
    return image.reshape(h // 2, 2, w // 2, 2, *image.shape[2:]).mean(axis=(1, 3))


def test_copy_has_every_frame_and_resumes(tiny_dataset, half_copy):
    out, counts = half_copy
    frames = {split: discover_frames(tiny_dataset, split) for split in ("train", "val")}
    assert counts == {"written": sum(len(f) for f in frames.values()), "skipped": 0}
    for split, source_frames in frames.items():
        assert [f.stem for f in discover_frames(out, split)] == [f.stem for f in source_frames]
    again = resize_dataset(tiny_dataset, out, HALF, workers=1, progress=False)
    assert again == {"written": 0, "skipped": counts["written"]}


def test_values_match_numpy_references(tiny_dataset, half_copy):
    out, _ = half_copy
    for frame in discover_frames(tiny_dataset, "val"):
        source = load_frame(tiny_dataset, "val", frame.stem)
        copy = load_frame(out, "val", frame.stem)
        for key in ("rgb", "flow", "depth", "semantic", "motion"):
            assert copy[key].shape[:2] == HALF, key
        # Labels: nearest neighbour of an exact halving = every other pixel.
        np.testing.assert_array_equal(copy["semantic"], source["semantic"][::2, ::2])
        np.testing.assert_array_equal(copy["motion"], source["motion"][::2, ::2])
        # RGB: block means, rounded to uint8.
        expected_rgb = _block_mean(source["rgb"].astype(np.float64))
        assert np.abs(copy["rgb"] - expected_rgb).max() <= 0.5 + 1e-6
        # Flow: block means of u, v in source pixels, halved (pixels of the new grid), rounded.
        expected_flow = _block_mean(source["flow"].astype(np.float64))
        expected_flow[..., :2] *= 0.5
        assert np.abs(copy["flow"] - expected_flow).max() <= 0.5 + 1e-4
        # Depth: the same metres at the sampled pixels (disparity and fx both halved), up to
        # the new disparity's rounding to 1/256 px: relative error <= (1/512) / d_new.
        expected_depth = source["depth"][::2, ::2]
        np.testing.assert_array_equal(copy["depth"] > 0, expected_depth > 0)
        valid = expected_depth > 0
        camera = json.loads(frame.camera.read_text())
        fx_baseline_new = 0.5 * camera["intrinsic"]["fx"] * camera["extrinsic"]["baseline"]
        disparity_new = fx_baseline_new / expected_depth[valid]
        relative = np.abs(copy["depth"][valid] - expected_depth[valid]) / expected_depth[valid]
        bound = (1 / 512) / (disparity_new - 1 / 512) + 1e-5
        assert np.all(relative <= bound)


def test_camera_intrinsics_follow_the_grid(tiny_dataset, half_copy):
    out, _ = half_copy
    frame = discover_frames(tiny_dataset, "train")[0]
    source = json.loads(frame.camera.read_text())
    copy = json.loads((out / frame.camera.relative_to(tiny_dataset)).read_text())
    for key in ("fx", "u0", "fy", "v0"):
        assert copy["intrinsic"][key] == pytest.approx(0.5 * source["intrinsic"][key])
    assert copy["extrinsic"] == source["extrinsic"]


def test_training_pipeline_reads_the_copy(half_copy):
    out, _ = half_copy
    inputs, targets = next(
        iter(make_dataset(out, "train", img_resize=(32, 64), batch_size=2, training=True))
    )
    assert inputs["rgb"].shape == (2, 32, 64, 3)
    assert targets["depth"].shape == (2, 32, 64, 1)


def test_enlarging_keeps_depth(tiny_dataset, tmp_path):
    out = tmp_path / "double"
    resize_dataset(tiny_dataset, out, (128, 256), splits=["val"], workers=1, progress=False)
    stem = discover_frames(tiny_dataset, "val")[0].stem
    source, copy = load_frame(tiny_dataset, "val", stem), load_frame(out, "val", stem)
    expected = np.repeat(np.repeat(source["depth"], 2, axis=0), 2, axis=1)
    valid = (expected > 0) & (copy["depth"] > 0)
    assert valid.mean() > 0.5
    relative = np.abs(copy["depth"][valid] - expected[valid]) / expected[valid]
    assert np.median(relative) < 1e-3


def test_bad_arguments_are_named(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="--out .* inside --data_path"):
        resize_dataset(tiny_dataset, tiny_dataset / "copy", HALF, progress=False)
    with pytest.raises(UserError, match="--size must be positive"):
        resize_dataset(tiny_dataset, tmp_path / "x", (0, 64), progress=False)
    with pytest.raises(UserError, match="--data_path"):
        resize_dataset(tmp_path / "missing", tmp_path / "x", HALF, progress=False)
    with pytest.raises(UserError, match="--workers"):
        resize_main(["--data_path", str(tiny_dataset), "--out", str(tmp_path / "y"),
                     "--size", "32", "64", "--workers", "0"])  # fmt: skip
