"""Flow-aware geometric augmentation of one decoded frame (TensorFlow ops, for tf.data).

A frame ("example") is a dict of HxWxC tensors:

| key        | dtype   | content                                   | resampling | fill |
|------------|---------|-------------------------------------------|------------|------|
| `rgb`      | float32 | RGB pixels 0..255                         | bilinear   | 0    |
| `flow`     | float32 | u, v in pixels (offset removed), conf     | bilinear   | 0    |
| `depth`    | float32 | metres, 0 = invalid                       | nearest    | 0    |
| `semantic` | int32   | class ids, 255 = ignore                   | nearest    | 255  |
| `motion`   | int32   | 0 static, 1 moving, 255 = ignore          | nearest    | 255  |

Every geometric operation moves the flow vectors with the pixels: resizing multiplies u and v by
the width and height ratios, rotating rotates (u, v) by the same angle, mirroring negates u.
Keys not in the table are passed through unchanged. Depth is resampled with nearest neighbour so
that no invalid (0) pixel is blended into a valid one.

Training augmentation follows the original system: resize everything to the flow's size; rotate
by U(-5, 5) degrees with p = 0.5; with p = 0.5 resize to `img_resize` scaled by U(1, 2)
and crop `img_resize` at a random place, otherwise resize to `img_resize`; mirror horizontally
with p = 0.5. The scale factors are relative to `img_resize` (the crop then covers 1/2..1 of
the frame in each direction), which is what zoom augmentation needs; relative to the 1024x2048
native size a 384x768 crop would cover a fifth of the frame.

Zoom and depth (`zoom`): magnifying a frame by `s` is what a camera with an `s` times longer
focal length sees, where everything looks `s` times closer. The original system zoomed height
and width independently and kept the depth targets, so half of its training frames taught the
depth head that the same picture lies at up to twice another depth. `zoom="isotropic"` (the
default) draws one factor for both axes and divides the depth targets by it, which keeps every
training frame a valid pinhole image with consistent depth; `zoom="original"` is the original
system's (for reproducing it).

`resize`, `rotate`, `scale_crop` and `flip_horizontal` are the single steps. The training
augmentation composes its steps into one affine map (`training_warp_matrices`) and samples every
tensor once, directly at `img_resize` (`warp`): about 3x faster than rotating and resizing full
1024x2048 frames, and one interpolation instead of two. The sampling itself runs in OpenCV
(`warp_affine`), about 10x faster on a CPU than TensorFlow's `ImageProjectiveTransformV3`, with
the same pixel conventions. Tests check the composition against the steps and OpenCV against
the TensorFlow op.

Example:

```python
example = {"rgb": rgb, "flow": flow, "depth": depth, "semantic": sem, "motion": mot}
augmented = augment_for_training(example, img_resize=(384, 768), seed=tf.constant([1, 2]))
```
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import tensorflow as tf

from keras_mtl.tasks import IGNORE_INDEX

ROTATION_DEGREES = 5.0
ROTATION_PROBABILITY = 0.5
SCALE_CROP_PROBABILITY = 0.5
SCALE_RANGE = (1.0, 2.0)
FLIP_PROBABILITY = 0.5
# "isotropic": one zoom factor, depth targets divided by it; "original": the original system's
# independent factors per axis, depth unchanged (see the module docstring).
ZOOM_MODES: tuple[str, ...] = ("isotropic", "original")

# key -> (bilinear?, fill value outside the image)
_RESAMPLING: dict[str, tuple[bool, float]] = {
    "rgb": (True, 0.0),
    "flow": (True, 0.0),
    "depth": (False, 0.0),
    "semantic": (False, float(IGNORE_INDEX)),
    "motion": (False, float(IGNORE_INDEX)),
}


def _size_of(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    shape = tf.shape(image)
    return shape[0], shape[1]


def _resize_one(image: tf.Tensor, size: tf.Tensor, bilinear: bool) -> tf.Tensor:
    method = "bilinear" if bilinear else "nearest"
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    # Skipping the no-op resize saves a full-resolution pass when sizes already match.
    resized = tf.cond(
        same,
        lambda: image,
        lambda: tf.cast(tf.image.resize(image, size, method=method), image.dtype),
    )
    return resized


def _scale_flow(flow: tf.Tensor, scale_x: tf.Tensor, scale_y: tf.Tensor) -> tf.Tensor:
    factors = tf.stack([scale_x, scale_y, tf.ones_like(scale_x)])
    return flow * tf.cast(factors, flow.dtype)


def resize(example: dict[str, tf.Tensor], size) -> dict[str, tf.Tensor]:
    """Resizes every entry to `size` (H, W); flow u, v are multiplied by the size ratios.

    Args:
        example: dict of HxWxC tensors (see the module table).
        size: target (height, width), ints or an int32 tensor of shape [2].
    """
    size = tf.cast(tf.convert_to_tensor(size), tf.int32)
    out = dict(example)
    for key, (bilinear, _) in _RESAMPLING.items():
        if key not in example:
            continue
        image = example[key]
        if key == "flow":
            height, width = _size_of(image)
            scale_x = tf.cast(size[1], tf.float32) / tf.cast(width, tf.float32)
            scale_y = tf.cast(size[0], tf.float32) / tf.cast(height, tf.float32)
            image = _scale_flow(image, scale_x, scale_y)
        out[key] = _resize_one(image, size, bilinear)
    return out


def rotation_transform(angle: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The 8-parameter projective transform (output -> input) rotating an image about its centre.

    Content at input pixel p moves to R(angle) (p - c) + c, with pixel centres at integer
    coordinates, x to the right and y down (so a positive angle turns the picture clockwise).
    """
    angle = tf.cast(angle, tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    center_x = (tf.cast(width, tf.float32) - 1.0) / 2.0
    center_y = (tf.cast(height, tf.float32) - 1.0) / 2.0
    # Inverse rotation R(-angle) maps each output pixel back to where it samples the input.
    return tf.stack(
        [
            cos,
            sin,
            center_x - cos * center_x - sin * center_y,
            -sin,
            cos,
            center_y + sin * center_x - cos * center_y,
            0.0,
            0.0,
        ]
    )


def rotate(example: dict[str, tf.Tensor], angle) -> dict[str, tf.Tensor]:
    """Rotates every entry by `angle` radians about the image centre; flow vectors turn too.

    Pixels that come from outside the image get the fill value of their kind (0 for images,
    flow and depth, 255 for labels).
    """
    angle = tf.cast(angle, tf.float32)
    out = dict(example)
    for key, (bilinear, fill) in _RESAMPLING.items():
        if key not in example:
            continue
        image = example[key]
        height, width = _size_of(image)
        if key == "flow":
            # (u, v) -> R(angle) (u, v): the same rotation the pixel positions undergo.
            cos, sin = tf.cos(angle), tf.sin(angle)
            u, v, conf = tf.unstack(image, axis=-1)
            image = tf.stack([cos * u - sin * v, sin * u + cos * v, conf], axis=-1)
        transform = rotation_transform(angle, height, width)[tf.newaxis]
        rotated = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[tf.newaxis],
            transforms=transform,
            output_shape=tf.stack([height, width]),
            fill_value=tf.constant(fill, tf.float32),
            interpolation="BILINEAR" if bilinear else "NEAREST",
            fill_mode="CONSTANT",
        )
        out[key] = rotated[0]
    return out


def scale_crop(
    example: dict[str, tf.Tensor], scaled_size, offset, crop_size
) -> dict[str, tf.Tensor]:
    """Resizes every entry to `scaled_size` (flow scaled) and crops `crop_size` at `offset`.

    Args:
        example: dict of HxWxC tensors.
        scaled_size: (H, W) to resize to first.
        offset: (top, left) of the crop in the resized frame.
        crop_size: (h, w) of the crop; must fit inside `scaled_size` at `offset`.
    """
    resized = resize(example, scaled_size)
    offset = tf.cast(tf.convert_to_tensor(offset), tf.int32)
    crop_size = tf.cast(tf.convert_to_tensor(crop_size), tf.int32)
    out = dict(resized)
    for key in _RESAMPLING:
        if key in resized:
            out[key] = resized[key][
                offset[0] : offset[0] + crop_size[0], offset[1] : offset[1] + crop_size[1]
            ]
    return out


def flip_horizontal(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Mirrors every entry left-right; flow u changes sign."""
    out = dict(example)
    for key in _RESAMPLING:
        if key not in example:
            continue
        image = tf.reverse(example[key], axis=[1])
        if key == "flow":
            image = image * tf.constant([-1.0, 1.0, 1.0], image.dtype)
        out[key] = image
    return out


def _with_static_size(example: dict[str, tf.Tensor], size: tuple[int, int]) -> dict[str, tf.Tensor]:
    out = dict(example)
    for key in _RESAMPLING:
        if key in example:
            channels = example[key].shape[-1]
            out[key] = tf.ensure_shape(example[key], (size[0], size[1], channels))
    return out


def check_zoom(zoom: str) -> str:
    """Returns `zoom`; ValueError unless it is one of `ZOOM_MODES`."""
    if zoom not in ZOOM_MODES:
        raise ValueError(f"unknown zoom mode {zoom!r}; choose one of {', '.join(ZOOM_MODES)}")
    return zoom


def draw_training_params(
    seed: tf.Tensor, source_size: tf.Tensor, img_resize: tuple[int, int], zoom: str = "isotropic"
) -> dict[str, tf.Tensor]:
    """Draws the random choices of one training augmentation.

    Args:
        seed: int tensor of shape [2]; the same seed gives the same choices.
        source_size: (H, W) of the frame after "resize everything to the flow's size".
        img_resize: (h, w) of the output.
        zoom: `isotropic` (one factor, depth divided by it) or `original` (one factor per
            axis, depth unchanged).

    Returns:
        dict with `angle` (radians, 0 when not rotated), `scaled_size` (H', W': the frame size
        before cropping; `img_resize` when not zooming), `offset` (top, left of the crop),
        `flip` (bool) and `depth_factor` (what depth targets are multiplied by: 1 / zoom for
        an isotropic zoom, else 1).
    """
    check_zoom(zoom)
    height, width = int(img_resize[0]), int(img_resize[1])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)

    def draw(index: int, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
        return tf.random.stateless_uniform([], seeds[index], minval=minval, maxval=maxval)

    del source_size  # zoom factors are relative to img_resize (see the module docstring)
    rotated = draw(0) < ROTATION_PROBABILITY
    angle = tf.where(rotated, draw(1, -ROTATION_DEGREES, ROTATION_DEGREES) * (math.pi / 180.0), 0.0)
    zoomed = draw(2) < SCALE_CROP_PROBABILITY
    if zoom == "isotropic":
        factors = tf.stack([draw(3, *SCALE_RANGE)] * 2)
    else:
        factors = tf.stack([draw(3, *SCALE_RANGE), draw(4, *SCALE_RANGE)])
    output = tf.constant([height, width], tf.int32)
    scaled = tf.cast(tf.round(tf.cast(output, tf.float32) * factors), tf.int32)
    scaled = tf.where(zoomed, tf.maximum(scaled, output), output)
    # The magnification actually applied (after rounding), the same on both axes up to a pixel.
    applied = tf.reduce_mean(tf.cast(scaled, tf.float32) / tf.cast(output, tf.float32))
    depth_factor = 1.0 / applied if zoom == "isotropic" else tf.constant(1.0)
    room = tf.cast(scaled - output + 1, tf.float32)
    offset = tf.minimum(tf.cast(tf.stack([draw(5), draw(6)]) * room, tf.int32), scaled - output)
    return {
        "angle": angle,
        "scaled_size": scaled,
        "offset": offset,
        "flip": draw(7) < FLIP_PROBABILITY,
        "depth_factor": depth_factor,
    }


def _matrix(rows: list[list]) -> tf.Tensor:
    return tf.stack([tf.stack([tf.cast(v, tf.float32) for v in row]) for row in rows])


def training_warp_matrices(
    params: dict[str, tf.Tensor], source_size: tf.Tensor, img_resize: tuple[int, int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """The whole training augmentation as one affine map.

    The steps rotate (about the centre of the source frame), resize to `scaled_size`, crop at
    `offset` and mirror, in the order of the original system. Composing them lets every tensor be
    sampled once, directly at the output size, instead of rotating and resizing full frames.

    Returns:
        (`output_to_source`: 3x3 matrix mapping output pixel coordinates (x, y, 1) to source
        pixel coordinates, pixel centres at integers; `vector_map`: 2x2 matrix that turns a
        flow vector (u, v) of the source into the output's).
    """
    source = tf.cast(source_size, tf.float32)
    scaled = tf.cast(params["scaled_size"], tf.float32)
    offset = tf.cast(params["offset"], tf.float32)
    out_width = float(img_resize[1])
    cos, sin = tf.cos(params["angle"]), tf.sin(params["angle"])
    centre_x, centre_y = (source[1] - 1.0) / 2.0, (source[0] - 1.0) / 2.0
    scale_x, scale_y = scaled[1] / source[1], scaled[0] / source[0]
    flip = tf.where(params["flip"], -1.0, 1.0)
    # Output -> cropped (undo the mirror): x_c = x if not flipped else (w - 1) - x.
    unflip = _matrix(
        [
            [flip, 0.0, tf.where(params["flip"], out_width - 1.0, 0.0)],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    # Cropped -> scaled frame, then scaled -> rotated source with half-pixel centres.
    uncrop = _matrix([[1.0, 0.0, offset[1]], [0.0, 1.0, offset[0]], [0.0, 0.0, 1.0]])
    unscale = _matrix(
        [
            [1.0 / scale_x, 0.0, 0.5 / scale_x - 0.5],
            [0.0, 1.0 / scale_y, 0.5 / scale_y - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )
    # Rotated -> source: R(-angle) about the centre.
    unrotate = _matrix(
        [
            [cos, sin, centre_x - cos * centre_x - sin * centre_y],
            [-sin, cos, centre_y + sin * centre_x - cos * centre_y],
            [0.0, 0.0, 1.0],
        ]
    )
    output_to_source = unrotate @ unscale @ uncrop @ unflip
    vector_map = (
        _matrix([[flip, 0.0], [0.0, 1.0]])
        @ _matrix([[scale_x, 0.0], [0.0, scale_y]])
        @ _matrix([[cos, -sin], [sin, cos]])
    )
    return output_to_source, vector_map


def _warp_affine_numpy(
    image: np.ndarray, matrix: np.ndarray, height: int, width: int, bilinear: bool, fill: float
) -> np.ndarray:
    flags = (cv2.INTER_LINEAR if bilinear else cv2.INTER_NEAREST) | cv2.WARP_INVERSE_MAP
    # OpenCV samples at most 4 channels at a time, and 2-channel float images through a
    # coarser fixed-point path (errors of 1/64 pixel): groups of 4, 3 or 1 channels.
    parts, start, channels = [], 0, image.shape[-1]
    while start < channels:
        size = min(4, channels - start)
        size = 1 if size == 2 else size
        part = cv2.warpAffine(
            np.ascontiguousarray(image[..., start : start + size]),
            matrix.astype(np.float64),
            (width, height),
            flags=flags,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(fill, fill, fill, fill),
        )
        parts.append(part.reshape(height, width, size))
        start += size
    return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def warp_affine(
    image: tf.Tensor, matrix: tf.Tensor, output_size: tuple[int, int], bilinear: bool, fill: float
) -> tf.Tensor:
    """Samples an HxWxC image at `matrix @ (x, y, 1)` for every output pixel (x, y).

    The same sampling as `ImageProjectiveTransformV3` (pixel centres at integers, constant
    `fill` outside, bilinear or nearest), computed by OpenCV's `warpAffine` on the host:
    about 10x faster on a CPU, which is where tf.data runs it (the augmentation was 60% of a
    pre-resized frame's input cost with the TensorFlow op). Tests check the two agree.

    Args:
        image: HxWxC tensor of any real dtype (labels are sampled exactly, as float32).
        matrix: 2x3 float32 affine map from output to input pixel coordinates.
        output_size: (H, W) of the result.
        bilinear: bilinear interpolation, else nearest neighbour.
        fill: value of samples outside the image.
    """
    height, width = int(output_size[0]), int(output_size[1])
    warped = tf.numpy_function(
        lambda array, affine: _warp_affine_numpy(array, affine, height, width, bilinear, fill),
        [tf.cast(image, tf.float32), tf.cast(matrix, tf.float32)],
        tf.float32,
        stateful=False,
    )
    warped = tf.ensure_shape(warped, (height, width, image.shape[-1]))
    return tf.cast(warped, image.dtype)


def warp(
    example: dict[str, tf.Tensor],
    output_to_source: tf.Tensor,
    source_size: tf.Tensor,
    vector_map: tf.Tensor,
    output_size: tuple[int, int],
    depth_factor: tf.Tensor | float = 1.0,
) -> dict[str, tf.Tensor]:
    """Samples every entry once at `output_size` through an affine map of the source grid.

    Entries whose native size differs from `source_size` are addressed through the half-pixel
    resize between the two grids (so "resize to the flow's size" costs nothing extra).
    Flow vectors are multiplied by `vector_map`, depth (0 = invalid stays 0) by `depth_factor`.
    """
    source = tf.cast(source_size, tf.float32)
    out = dict(example)
    for key, (bilinear, fill) in _RESAMPLING.items():
        if key not in example:
            continue
        image = example[key]
        own = tf.cast(tf.shape(image)[:2], tf.float32)
        ratio_x, ratio_y = own[1] / source[1], own[0] / source[0]
        source_to_own = _matrix(
            [
                [ratio_x, 0.0, 0.5 * ratio_x - 0.5],
                [0.0, ratio_y, 0.5 * ratio_y - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )
        matrix = source_to_own @ output_to_source
        warped = warp_affine(image, matrix[:2], output_size, bilinear, fill)
        if key == "flow":
            vectors = tf.einsum("ij,hwj->hwi", vector_map, warped[..., :2])
            warped = tf.concat([vectors, warped[..., 2:]], axis=-1)
        elif key == "depth":
            warped = warped * tf.cast(depth_factor, warped.dtype)
        out[key] = tf.ensure_shape(warped, (output_size[0], output_size[1], image.shape[-1]))
    return out


def augment_for_training(
    example: dict[str, tf.Tensor],
    img_resize: tuple[int, int],
    seed: tf.Tensor,
    zoom: str = "isotropic",
) -> dict[str, tf.Tensor]:
    """The training augmentation; every entry comes out at `img_resize`.

    Equivalent to `resize` to the flow's size, `rotate`, `scale_crop` (or `resize`) and
    `flip_horizontal` applied in turn with the choices of `draw_training_params` (and depth
    multiplied by its `depth_factor`), but computed as one sampling per tensor at the output
    size.

    Args:
        example: decoded frame (module table); entries may have different native sizes.
        img_resize: (H, W) of the output.
        seed: int32/int64 tensor of shape [2]; the same seed gives the same augmentation.
        zoom: `isotropic` (default: depth-consistent zoom) or `original` (see the module
            docstring).
    """
    img_resize = (int(img_resize[0]), int(img_resize[1]))
    source_size = tf.shape(example["flow"])[:2]
    params = draw_training_params(seed, source_size, img_resize, zoom)
    output_to_source, vector_map = training_warp_matrices(params, source_size, img_resize)
    return warp(
        example, output_to_source, source_size, vector_map, img_resize, params["depth_factor"]
    )


def resize_for_validation(
    example: dict[str, tf.Tensor],
    img_resize: tuple[int, int],
    output_size: tuple[int, int] | None = None,
) -> dict[str, tf.Tensor]:
    """Inputs (`rgb`, `flow`) to `img_resize` (flow scaled); targets (nearest) to `output_size`.

    Targets go to `img_resize` when `output_size` is None.
    """
    target_size = tuple(output_size) if output_size is not None else tuple(img_resize)
    inputs = {k: v for k, v in example.items() if k in ("rgb", "flow")}
    targets = {k: v for k, v in example.items() if k not in ("rgb", "flow")}
    out = dict(example)
    out.update(_with_static_size(resize(inputs, img_resize), img_resize))
    out.update(_with_static_size(resize(targets, target_size), target_size))
    return out
