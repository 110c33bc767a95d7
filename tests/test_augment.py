"""Flow-aware augmentation on small tensors, checked against numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.data import augment


def _example(height: int = 6, width: int = 10, seed: int = 0) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    return {
        "rgb": tf.constant(rng.uniform(0, 255, (height, width, 3)), tf.float32),
        "flow": tf.constant(
            np.concatenate(
                [rng.uniform(-20, 20, (height, width, 2)), rng.uniform(0, 255, (height, width, 1))],
                axis=-1,
            ),
            tf.float32,
        ),
        "depth": tf.constant(rng.choice([0.0, 3.0, 40.0, 90.0], (height, width, 1)), tf.float32),
        "semantic": tf.constant(rng.choice([0, 1, 2, 3, 4, 255], (height, width, 1)), tf.int32),
        "motion": tf.constant(rng.choice([0, 1], (height, width, 1)), tf.int32),
    }


def _np(example: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in example.items()}


def test_flip_mirrors_everything_and_negates_u() -> None:
    example = _example()
    flipped = _np(augment.flip_horizontal(example))
    original = _np(example)
    for key in ("rgb", "depth", "semantic", "motion"):
        np.testing.assert_array_equal(flipped[key], original[key][:, ::-1])
    np.testing.assert_array_equal(flipped["flow"][..., 0], -original["flow"][:, ::-1, 0])
    np.testing.assert_array_equal(flipped["flow"][..., 1:], original["flow"][:, ::-1, 1:])


def test_resize_multiplies_flow_by_the_ratios() -> None:
    flow = np.zeros((8, 16, 3), np.float32)
    flow[..., 0], flow[..., 1], flow[..., 2] = 2.0, -3.0, 200.0
    resized = augment.resize({"flow": tf.constant(flow)}, (16, 48))["flow"].numpy()
    assert resized.shape == (16, 48, 3)
    np.testing.assert_allclose(resized[..., 0], 2.0 * 48 / 16)
    np.testing.assert_allclose(resized[..., 1], -3.0 * 16 / 8)
    np.testing.assert_allclose(resized[..., 2], 200.0)  # confidence is not a vector


def test_resize_uses_nearest_for_labels_and_depth() -> None:
    example = _example(4, 4)
    resized = _np(augment.resize(example, (8, 8)))
    original = _np(example)
    # Upsampling by 2 with nearest repeats every pixel twice in each direction.
    for key in ("depth", "semantic", "motion"):
        expected = original[key].repeat(2, axis=0).repeat(2, axis=1)
        np.testing.assert_array_equal(resized[key], expected)
    assert resized["semantic"].dtype == np.int32


def test_scale_crop_scales_flow_and_crops_at_offset() -> None:
    height, width = 4, 6
    flow = np.zeros((height, width, 3), np.float32)
    flow[..., 0], flow[..., 1] = 1.5, 0.5
    semantic = np.arange(height * width, dtype=np.int32).reshape(height, width, 1)
    example = {"flow": tf.constant(flow), "semantic": tf.constant(semantic)}
    out = _np(augment.scale_crop(example, (8, 18), (2, 5), (3, 4)))
    assert out["flow"].shape == (3, 4, 3) and out["semantic"].shape == (3, 4, 1)
    np.testing.assert_allclose(out["flow"][..., 0], 1.5 * 18 / 6)
    np.testing.assert_allclose(out["flow"][..., 1], 0.5 * 8 / 4)
    # Nearest x2 in height and x3 in width: resized[r, c] = semantic[r // 2, c // 3].
    rows, cols = np.arange(2, 5)[:, None], np.arange(5, 9)[None, :]
    np.testing.assert_array_equal(out["semantic"][..., 0], semantic[rows // 2, cols // 3, 0])


def test_rotation_by_90_degrees_rotates_pixels_and_vectors() -> None:
    size = 5
    example = _example(size, size, seed=3)
    rotated = _np(augment.rotate(example, math.pi / 2))
    original = _np(example)
    # Positive angles turn the picture clockwise on screen (y points down).
    for key in ("rgb", "depth", "semantic", "motion"):
        np.testing.assert_allclose(rotated[key], np.rot90(original[key], k=-1), atol=1e-3)
    # The vector field turns with it: (u, v) -> (-v, u), carried to the new pixel position.
    flow = np.rot90(original["flow"], k=-1)
    np.testing.assert_allclose(rotated["flow"][..., 0], -flow[..., 1], atol=1e-3)
    np.testing.assert_allclose(rotated["flow"][..., 1], flow[..., 0], atol=1e-3)
    np.testing.assert_allclose(rotated["flow"][..., 2], flow[..., 2], atol=1e-3)


@pytest.mark.parametrize("degrees", [5.0, -5.0, 30.0])
def test_rotation_turns_a_constant_flow_field(degrees: float) -> None:
    flow = np.zeros((21, 21, 3), np.float32)
    flow[..., 0], flow[..., 2] = 4.0, 255.0
    angle = math.radians(degrees)
    rotated = augment.rotate({"flow": tf.constant(flow)}, angle)["flow"].numpy()
    centre = rotated[8:13, 8:13]
    np.testing.assert_allclose(centre[..., 0], 4.0 * math.cos(angle), atol=1e-4)
    np.testing.assert_allclose(centre[..., 1], 4.0 * math.sin(angle), atol=1e-4)


def test_rotation_fills_outside_with_invalid_values() -> None:
    example = _example(9, 9, seed=5)
    example["depth"] = tf.fill([9, 9, 1], 7.0)
    example["semantic"] = tf.fill([9, 9, 1], 2)
    rotated = _np(augment.rotate(example, math.pi / 4))
    # Corners come from outside the image: depth 0 (invalid) and label 255 (ignore).
    assert rotated["depth"][0, 0, 0] == 0.0 and rotated["semantic"][0, 0, 0] == 255
    assert rotated["depth"][4, 4, 0] == 7.0 and rotated["semantic"][4, 4, 0] == 2
    assert set(np.unique(rotated["semantic"])) <= {2, 255}


def test_training_augmentation_shapes_values_and_seed() -> None:
    example = _example(12, 20, seed=1)
    example["rgb"] = tf.image.resize(example["rgb"], (24, 40))  # rgb bigger than flow
    outputs = [
        _np(augment.augment_for_training(example, (8, 16), tf.constant([s, 0], tf.int64)))
        for s in range(12)
    ]
    again = _np(augment.augment_for_training(example, (8, 16), tf.constant([0, 0], tf.int64)))
    for key, value in outputs[0].items():
        np.testing.assert_array_equal(value, again[key])
    original = _np(example)
    for seed, out in enumerate(outputs):
        assert out["rgb"].shape == (8, 16, 3) and out["flow"].shape == (8, 16, 3)
        assert out["semantic"].shape == (8, 16, 1) and out["semantic"].dtype == np.int32
        # Nearest resampling never invents values: only originals and the fill values (depth
        # divided by the zoom, see test_isotropic_zoom_divides_depth_by_the_magnification).
        assert set(np.unique(out["semantic"])) <= set(np.unique(original["semantic"])) | {255}
        params = augment.draw_training_params(
            tf.constant([seed, 0], tf.int64), tf.constant([12, 20]), (8, 16)
        )
        unzoomed = out["depth"] / np.float32(params["depth_factor"])
        expected = set(np.unique(original["depth"])) | {0.0}
        assert all(np.isclose(v, list(expected), rtol=1e-5).any() for v in np.unique(unzoomed))
        assert set(np.unique(out["motion"])) <= {0, 1, 255}
    distinct = {out["rgb"].tobytes() for out in outputs}
    assert len(distinct) > 6  # different seeds give different augmentations


def test_training_augmentation_keeps_flow_consistent_without_rotation() -> None:
    # A constant flow field stays constant under resize, crop and flip; only its scale and the
    # sign of u change. Seeds whose draws skip the rotation keep it exactly constant.
    flow = np.zeros((10, 20, 3), np.float32)
    flow[..., 0], flow[..., 1], flow[..., 2] = 3.0, 1.0, 100.0
    example = {"flow": tf.constant(flow), "rgb": tf.zeros((10, 20, 3))}
    seen_scales = set()
    for s in range(16):
        out = augment.augment_for_training(example, (10, 20), tf.constant([s, 9], tf.int64))
        u, v = out["flow"].numpy()[..., 0], out["flow"].numpy()[..., 1]
        if np.ptp(u) < 1e-5 and np.ptp(v) < 1e-5:  # not rotated
            scale_x, scale_y = abs(u[0, 0]) / 3.0, v[0, 0] / 1.0
            assert 1.0 - 1e-5 <= scale_x <= 2.0 + 0.1 and 1.0 - 1e-5 <= scale_y <= 2.0 + 0.1
            seen_scales.add((round(float(scale_x), 3), round(float(scale_y), 3)))
    assert len(seen_scales) >= 2  # both the plain resize (1, 1) and zooms occur


def test_validation_resize() -> None:
    example = _example(8, 16)
    out = _np(augment.resize_for_validation(example, (16, 64), output_size=(4, 8)))
    assert out["rgb"].shape == (16, 64, 3) and out["flow"].shape == (16, 64, 3)
    assert out["depth"].shape == (4, 8, 1) and out["semantic"].shape == (4, 8, 1)
    original = _np(example)
    np.testing.assert_array_equal(out["semantic"], original["semantic"][1::2, 1::2])
    np.testing.assert_allclose(
        out["flow"][..., 0].mean(), 4 * original["flow"][..., 0].mean(), rtol=1e-3, atol=1e-3
    )


def _sequential(example, params, img_resize):
    """Reference: the original's steps one after the other, with the same random choices."""
    out = augment.resize(example, tf.shape(example["flow"])[:2])
    angle = float(params["angle"])
    if angle != 0.0:
        out = augment.rotate(out, angle)
    out = augment.scale_crop(out, params["scaled_size"], params["offset"], img_resize)
    if bool(params["flip"]):
        out = augment.flip_horizontal(out)
    return _np(out)


def _ramp_example(height: int, width: int, seed: int) -> dict[str, tf.Tensor]:
    # Linear content: bilinear sampling reproduces it exactly, so one composed sampling and
    # several successive samplings must agree wherever no fill value is involved.
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    rgb = np.stack([2.0 * x + y, x - 3.0 * y + 100, 0.5 * x + 0.5 * y], axis=-1)
    flow = np.stack([0.1 * x - 5.0, 0.2 * y + 1.0, np.full_like(x, 200.0)], axis=-1)
    blocks = rng.integers(0, 5, (height // 8, width // 8)).repeat(8, 0).repeat(8, 1)
    return {
        "rgb": tf.constant(rgb),
        "flow": tf.constant(flow),
        "depth": tf.constant(blocks[..., None] * 10.0 + 1.0, tf.float32),
        "semantic": tf.constant(blocks[..., None], tf.int32),
        "motion": tf.constant((blocks[..., None] > 2).astype(np.int32)),
    }


@pytest.mark.parametrize("seed", range(10))
def test_composed_augmentation_equals_the_steps(seed: int) -> None:
    img_resize = (16, 24)
    example = _ramp_example(24, 40, seed)
    seed_tensor = tf.constant([seed, 7], tf.int64)
    params = augment.draw_training_params(
        seed_tensor, tf.constant([24, 40]), img_resize, zoom="original"
    )
    composed = _np(augment.augment_for_training(example, img_resize, seed_tensor, "original"))
    steps = _sequential(example, params, img_resize)
    valid = steps["semantic"][..., 0] != 255  # pixels that came from inside the frame
    interior = np.zeros_like(valid)
    interior[2:-2, 2:-2] = True
    inside = valid & interior
    if float(params["angle"]) == 0.0:
        np.testing.assert_array_equal(composed["semantic"], steps["semantic"])
        np.testing.assert_array_equal(composed["depth"], steps["depth"])
    else:
        # Two nearest samplings vs one: labels agree almost everywhere.
        agree = (composed["semantic"] == steps["semantic"])[..., 0][inside].mean()
        assert agree > 0.85
    np.testing.assert_allclose(composed["rgb"][inside], steps["rgb"][inside], atol=1e-2)
    np.testing.assert_allclose(composed["flow"][inside], steps["flow"][inside], atol=1e-3)


def test_composed_augmentation_resizes_other_sizes_to_the_flow_first() -> None:
    example = _ramp_example(24, 40, 0)
    example["rgb"] = tf.image.resize(example["rgb"], (48, 80))  # rgb at twice the flow's size
    seed_tensor = tf.constant([3, 1], tf.int64)
    params = augment.draw_training_params(
        seed_tensor, tf.constant([24, 40]), (16, 24), zoom="original"
    )
    composed = _np(augment.augment_for_training(example, (16, 24), seed_tensor, "original"))
    steps = _sequential(example, params, (16, 24))
    inside = steps["semantic"][2:-2, 2:-2, 0] != 255
    np.testing.assert_allclose(
        composed["rgb"][2:-2, 2:-2][inside], steps["rgb"][2:-2, 2:-2][inside], atol=1e-2
    )


@pytest.mark.parametrize("bilinear", [True, False])
def test_warp_affine_equals_the_tensorflow_op(bilinear: bool) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(7)
    if bilinear:
        image = rng.uniform(0, 255, (24, 40, 6)).astype(np.float32)  # > 4 channels: 4 + 1 + 1
    else:
        image = rng.integers(0, 5, (24, 40, 1)).astype(np.int32)
    angle, scale = math.radians(4.0), 0.8
    matrix = np.array(
        [
            [scale * math.cos(angle), scale * math.sin(angle), 3.25],
            [-scale * math.sin(angle), scale * math.cos(angle), -2.5],
        ],
        np.float32,
    )
    fill = 0.0 if bilinear else 255.0
    warped = augment.warp_affine(tf.constant(image), tf.constant(matrix), (20, 36), bilinear, fill)
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(image)[tf.newaxis],
        transforms=tf.constant(np.concatenate([matrix.ravel(), [0.0, 0.0]])[None], tf.float32),
        output_shape=tf.constant([20, 36]),
        fill_value=tf.constant(fill),
        interpolation="BILINEAR" if bilinear else "NEAREST",
        fill_mode="CONSTANT",
    )[0]
    assert warped.dtype == image.dtype and warped.shape == (20, 36, image.shape[-1])
    assert np.any(reference.numpy() == fill)  # part of the output lies outside the input
    if bilinear:
        np.testing.assert_allclose(warped.numpy(), reference.numpy(), atol=0.01)
    else:
        # Nearest neighbour may round a sample lying exactly between two pixels either way.
        assert np.mean(warped.numpy() == reference.numpy()) > 0.999


def test_isotropic_zoom_divides_depth_by_the_magnification() -> None:
    # A zoomed frame looks like one taken with a longer focal length: everything `s` times
    # closer. The depth targets follow, so no frame teaches two depths for one picture.
    example = _ramp_example(24, 40, 0)
    example["depth"] = tf.fill((24, 40, 1), 20.0)
    example["depth"] = tf.tensor_scatter_nd_update(example["depth"], [[0, 0, 0]], [0.0])
    zoomed_seen = 0
    for seed in range(12):
        seed_tensor = tf.constant([seed, 3], tf.int64)
        params = augment.draw_training_params(seed_tensor, tf.constant([24, 40]), (16, 24))
        scaled = params["scaled_size"].numpy()
        magnification = scaled / np.array([16, 24])
        assert abs(magnification[0] - magnification[1]) < 0.07  # one factor, up to rounding
        out = _np(augment.augment_for_training(example, (16, 24), seed_tensor))
        depth = out["depth"][..., 0]
        valid = depth > 0
        expected = 20.0 * float(params["depth_factor"])
        np.testing.assert_allclose(depth[valid], expected, rtol=1e-6)
        assert expected == pytest.approx(20.0 / magnification.mean(), rel=1e-5)
        zoomed_seen += int(magnification.mean() > 1.01)
        # The seed's mode keeps depth and draws the two factors independently.
        original = _np(augment.augment_for_training(example, (16, 24), seed_tensor, "original"))
        assert set(np.unique(original["depth"])) <= {0.0, 20.0}
    assert zoomed_seen >= 3
    with pytest.raises(ValueError, match="zoom"):
        augment.augment_for_training(example, (16, 24), tf.constant([0, 0], tf.int64), "wide")
