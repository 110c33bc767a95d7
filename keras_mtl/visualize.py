"""Colour maps, prediction pictures with legends, and training-curve plots.

Colour maps turn one modality into an RGB uint8 image: class maps through the Cityscapes
palettes of `keras_mtl.data.labels` (ignore 255 = black), optical flow through a
Middlebury-style colour wheel (hue = direction, saturation = speed, white = still), depth as
inverse depth through a perceptual colour map (near = bright, far = dark) with invalid pixels
(depth 0, e.g. sky in the ground truth) hatched in two greys that no valid depth is drawn in.
`prediction_grid` stacks input, flow, and ground truth beside prediction for each task, above a
legend strip (class colours with names, the motion colour, a depth colour bar in metres).
`prediction_overlay` draws one frame without ground truth (semantic colours blended, moving
objects outlined, a depth map) above the same legend, for pictures of a user's video.
`plot_history` draws one or more runs' `history.csv`: losses, validation metrics and task-weight
trajectories.

Command line:

```
python -m keras_mtl.visualize --history runs/a/history.csv runs/b/history.csv --out curves.png
```
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from keras_mtl.data.labels import MOTION_PALETTE, class_names, palette
from keras_mtl.errors import UserError, run_cli
from keras_mtl.io import save_atomic

RGBColor = tuple[int, int, int]

IGNORE_COLOR = (0, 0, 0)
PANEL_TITLE_HEIGHT = 14  # pixels of the caption strip above each panel of a grid
MIN_PANEL_WIDTH = 128  # narrower panels are upscaled by a whole factor
MIN_OVERLAY_WIDTH = 256  # narrower frames are upscaled by a whole factor (legend room)
DEPTH_COLORMAP = cv2.COLORMAP_MAGMA
# Invalid depth is hatched in two neutral greys. Magma never comes within 75 RGB units of
# either (its dark end is near-black, its bright end pale yellow), so a far depth can no longer
# be mistaken for "no depth", as it could when invalid was black.
INVALID_DEPTH_COLORS: tuple[RGBColor, RGBColor] = ((112, 112, 112), (168, 168, 168))
# Colour maps that pass through grey (e.g. COLORMAP_BONE) get a magenta/green hatch instead.
FALLBACK_INVALID_DEPTH_COLORS: tuple[RGBColor, RGBColor] = ((255, 0, 255), (0, 160, 0))
MIN_INVALID_COLOR_DISTANCE = 48.0  # RGB distance from every entry of the colour map
HATCH_PERIOD = 8  # pixels per pair of hatch stripes
LEGEND_BASE_WIDTH = 700  # the legend is drawn one size larger per this many pixels of width
LEGEND_TEXT_COLOR: RGBColor = (24, 24, 24)
LEGEND_BACKGROUND: RGBColor = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BAR_MAX_WIDTH = 360  # colour bar width cap at legend scale 1 (pixels)
_BAR_MIN_WIDTH = 160  # below this the invalid swatch moves to its own row


def colorize_classes(class_map: np.ndarray, colors: np.ndarray | Sequence) -> np.ndarray:
    """RGB uint8 [H, W, 3] image of a class map; ids outside the palette (255) are black.

    Args:
        class_map: integer class ids [H, W].
        colors: (C, 3) RGB palette, e.g. `keras_mtl.data.labels.palette(5)`.
    """
    colors = np.asarray(colors, dtype=np.uint8)
    table = np.tile(np.asarray(IGNORE_COLOR, np.uint8), (256, 1))
    table[: len(colors)] = colors
    return table[np.clip(np.asarray(class_map).astype(np.int64), 0, 255)]


def colorize_semantic(class_map: np.ndarray, semantic_classes: int = 5) -> np.ndarray:
    """Semantic class map in the 5- or 19-class Cityscapes palette (ignore = black)."""
    return colorize_classes(class_map, palette(semantic_classes))


def colorize_flow(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury-style colour wheel of an optical flow field, RGB uint8 [H, W, 3].

    Hue is the direction of (u, v), saturation the speed relative to `max_magnitude`, value 1:
    still pixels are white, fast ones fully saturated.

    Args:
        flow: [H, W, 2+] with u, v in pixels first (a third confidence channel is ignored).
        max_magnitude: speed shown fully saturated; default the image's largest speed.
    """
    flow = np.asarray(flow, dtype=np.float32)
    u, v = flow[..., 0], flow[..., 1]
    magnitude = np.sqrt(u * u + v * v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max())
    max_magnitude = max(float(max_magnitude), 1e-6)
    angle = (np.degrees(np.arctan2(-v, -u)) + 180.0) % 360.0  # OpenCV hue in degrees for float
    hsv = np.stack(
        [angle, np.clip(magnitude / max_magnitude, 0.0, 1.0), np.ones_like(magnitude)], axis=-1
    )
    rgb = cv2.cvtColor(hsv.astype(np.float32), cv2.COLOR_HSV2RGB)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


@functools.cache
def colormap_colors(colormap: int = DEPTH_COLORMAP) -> np.ndarray:
    """The 256 RGB uint8 entries (read-only, [256, 3]) of an OpenCV colour map, index 0 first.

    Args:
        colormap: an OpenCV colour map id, e.g. `cv2.COLORMAP_MAGMA`.

    Example:

    ```python
    colormap_colors()[255]  # magma's brightest entry, used for the nearest depth
    ```
    """
    ramp = np.arange(256, dtype=np.uint8)[None]
    colors = cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)[0]
    colors.flags.writeable = False
    return colors


@functools.cache
def invalid_depth_colors(colormap: int = DEPTH_COLORMAP) -> tuple[RGBColor, RGBColor]:
    """The two hatch colours of invalid depth, both far from every colour of `colormap`.

    The grey pair `INVALID_DEPTH_COLORS` when every entry of the colour map is at least
    `MIN_INVALID_COLOR_DISTANCE` away from both greys (true of magma, inferno, viridis, turbo,
    jet); otherwise whichever of the grey and the magenta/green pair is farther.

    Args:
        colormap: the OpenCV colour map id that valid depth is drawn with.

    Example:

    ```python
    invalid_depth_colors()  # ((112, 112, 112), (168, 168, 168)) for magma
    ```
    """
    entries = colormap_colors(colormap).astype(np.float64)

    def margin(colors: tuple[RGBColor, RGBColor]) -> float:
        return min(float(np.linalg.norm(entries - color, axis=-1).min()) for color in colors)

    if margin(INVALID_DEPTH_COLORS) >= MIN_INVALID_COLOR_DISTANCE:
        return INVALID_DEPTH_COLORS
    return max((INVALID_DEPTH_COLORS, FALLBACK_INVALID_DEPTH_COLORS), key=margin)


def hatch_pattern(
    height: int, width: int, colors: Sequence[RGBColor], period: int = HATCH_PERIOD
) -> np.ndarray:
    """Diagonal stripes alternating between two colours, RGB uint8 [height, width, 3].

    Args:
        height, width: size of the pattern in pixels.
        colors: the two stripe colours.
        period: pixels per pair of stripes along a row.

    Example:

    ```python
    hatch_pattern(12, 12, INVALID_DEPTH_COLORS)  # the legend's "invalid" swatch
    ```
    """
    rows, cols = np.indices((height, width))
    stripe = ((rows + cols) // max(period // 2, 1)) % 2
    return np.asarray(colors, np.uint8)[stripe]


def inverse_depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(low, high) inverse depth (1/m) of the 2nd and 98th percentiles of the valid pixels."""
    valid = np.asarray(depth)[np.asarray(depth) > 0]
    if valid.size == 0:
        return 0.0, 1.0
    inverse = 1.0 / valid
    low, high = np.percentile(inverse, [2.0, 98.0])
    return float(low), float(max(high, low + 1e-6))


def depth_range_to_inverse(depth_range: Sequence[float]) -> tuple[float, float]:
    """(low, high) inverse depth (1/m) of a (near, far) depth range in metres.

    Args:
        depth_range: (near, far) metres, 0 < near < far (far may be `math.inf`).

    Raises:
        ValueError: the range is not 0 < near < far.

    Example:

    ```python
    depth_range_to_inverse((2.0, 100.0))  # (0.01, 0.5)
    ```
    """
    near, far = (float(value) for value in depth_range)
    if not (0.0 < near < far) or math.isnan(far):
        raise ValueError(
            f"depth_range must be (near, far) metres with 0 < near < far, got {depth_range}"
        )
    return 1.0 / far, 1.0 / near


def colorize_depth(
    depth: np.ndarray,
    inverse_range: tuple[float, float] | None = None,
    colormap: int = DEPTH_COLORMAP,
) -> np.ndarray:
    """Inverse depth through a colour map (near = bright), invalid (<= 0, NaN) pixels hatched.

    Valid pixels always take an entry of `colormap` (`colormap_colors`); invalid ones a stripe
    of `invalid_depth_colors(colormap)`, so the two never share a colour.

    Args:
        depth: metres [H, W] or [H, W, 1]; 0 = invalid.
        inverse_range: (low, high) of 1/depth mapped to the ends of the colour map; pass the
            ground truth's range to draw truth and prediction on the same scale, or
            `depth_range_to_inverse((near, far))` for a fixed scale. Default:
            `inverse_depth_range(depth)`.
        colormap: an OpenCV colour map id.

    Example:

    ```python
    picture = colorize_depth(depth, depth_range_to_inverse((2.0, 100.0)))
    ```
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 3:
        depth = depth[..., 0]
    low, high = inverse_range if inverse_range is not None else inverse_depth_range(depth)
    valid = depth > 0
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    scaled = np.clip((inverse - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgb = colormap_colors(colormap)[np.round(scaled * 255.0).astype(np.uint8)]
    if not valid.all():
        hatch = hatch_pattern(*depth.shape, invalid_depth_colors(colormap))
        rgb[~valid] = hatch[~valid]
    return rgb


def motion_overlay(rgb: np.ndarray, motion: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The RGB frame, darkened, with moving pixels (class 1) tinted in the motion colour."""
    rgb = np.asarray(rgb, dtype=np.float32)
    moving = np.asarray(motion) == 1
    color = np.asarray(MOTION_PALETTE[1], np.float32)
    out = rgb * 0.6
    out[moving] = (1.0 - alpha) * rgb[moving] + alpha * color
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- legend


def legend_scale(width: int) -> int:
    """Whole size factor of a legend drawn under a picture `width` pixels wide (1 up to 1399).

    Small pictures keep the legend at its smallest legible size; large ones (a 2048-wide grid)
    get it proportionally larger, so that it stays readable when the picture is shown scaled
    down to a screen.
    """
    return max(1, int(width) // LEGEND_BASE_WIDTH)


def _font_scale(scale: int) -> float:
    return 0.4 * scale


def _font_thickness(scale: int) -> int:
    return max(1, round(0.75 * scale))


def _text_size(text: str, scale: int) -> tuple[int, int]:
    """(width, height above the baseline) of `text` in the legend font."""
    (width, height), _ = cv2.getTextSize(text, _FONT, _font_scale(scale), _font_thickness(scale))
    return width, height


def _put_text(image: np.ndarray, text: str, left: int, baseline: int, scale: int) -> None:
    cv2.putText(
        image,
        text,
        (left, baseline),
        _FONT,
        _font_scale(scale),
        LEGEND_TEXT_COLOR,
        _font_thickness(scale),
        cv2.LINE_AA,
    )


def _tick_label(metres: float) -> str:
    return f"{metres:g}" if metres >= 0.1 else f"{metres:.2g}"


def _two_digits(value: float, up: bool) -> float:
    """`value` rounded to two significant digits, up or down (to stay inside a range)."""
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    rounded = (math.ceil if up else math.floor)(value / step - (1e-9 if up else -1e-9)) * step
    return float(f"{rounded:.2g}")


def _tick_label_left(x: int, label_width: int, bar_width: int, scale: int) -> int:
    """Left edge of a label centred under x, overhanging the bar's ends by at most 4 * scale."""
    overhang = 4 * scale
    return int(min(max(x - label_width // 2, -overhang), bar_width + overhang - label_width))


def depth_ticks(
    inverse_range: tuple[float, float], bar_width: int, scale: int = 1
) -> list[tuple[float, int]]:
    """Labelled ticks of a depth colour bar as drawn by the legend: (metres, x), near first.

    The bar maps inverse depth linearly, near (`1 / high`) at x = 0 to far (`1 / low`) at
    x = bar_width - 1, exactly as `colorize_depth` does, so round depths crowd towards the far
    end. Candidates are the range's ends (two significant digits, rounded inwards; the far end
    unless infinite), then 1, 10, 100 m..., then 2, 5, 20, 50 m..., each kept when its label
    stays clear of the kept ones; then 3, 4, 6, 7, 8, 9 x 10^k m where the bar is bare (a wider
    clearance).

    Args:
        inverse_range: (low, high) inverse depth (1/m) of the bar's ends.
        bar_width: bar length in pixels.
        scale: legend scale (`legend_scale`), which sets the label font size.

    Returns:
        (depth in metres, x offset in the bar in pixels) per labelled tick, by increasing depth.

    Example:

    ```python
    depth_ticks((1 / 100, 1 / 2), 256)  # [(2.0, 0), (3.0, 87), (5.0, 156), (10.0, 208), ...]
    ```
    """
    low, high = float(inverse_range[0]), float(inverse_range[1])
    span = max(high - low, 1e-12)
    near = 1.0 / high
    far = 1.0 / low if low > 0 else math.inf
    kept: list[tuple[float, int, int, int]] = []  # metres, x, label left, label right

    def x_of(metres: float) -> int:
        return round((high - 1.0 / metres) / span * (bar_width - 1))

    def place(metres: float, gap: int) -> None:
        if any(math.isclose(metres, other) for other, *_ in kept):
            return
        x = x_of(metres)
        label_width = _text_size(_tick_label(metres), scale)[0]
        left = _tick_label_left(x, label_width, bar_width, scale)
        right = left + label_width
        if all(
            right + gap <= other_left or left >= other_right + gap
            for *_, other_left, other_right in kept
        ):
            kept.append((metres, x, left, right))

    def in_range(mantissas: Sequence[int]) -> list[float]:
        values = [mantissa * 10.0**exponent for exponent in range(-2, 5) for mantissa in mantissas]
        return [value for value in values if near * (1 - 1e-9) <= value <= far * (1 + 1e-9)]

    # The bar's ends first (to two significant digits, rounded inwards), so the range is read.
    place(_two_digits(near, up=True), 5 * scale)
    if math.isfinite(far):
        place(_two_digits(far, up=False), 5 * scale)
    for mantissas in ((1,), (2, 5)):
        for metres in in_range(mantissas):
            place(metres, 5 * scale)
    # In-between depths only where the bar is otherwise bare (its near end, in inverse depth).
    for metres in in_range((3, 4, 6, 7, 8, 9)):
        place(metres, 24 * scale)
    return [(metres, x) for metres, x, *_ in sorted(kept)]


def _swatch(
    image: np.ndarray, left: int, top: int, size: int, fill: np.ndarray, scale: int
) -> None:
    """A square swatch of `fill` ([size, size, 3]) with a thin dark frame, clipped to `image`."""
    visible = image[top : top + size, left : left + size]
    visible[...] = fill[: visible.shape[0], : visible.shape[1]]
    frame = max(1, scale // 2)
    cv2.rectangle(
        image,
        (left - frame, top - frame),
        (left + size + frame - 1, top + size + frame - 1),
        (90, 90, 90),
        frame,
    )


def _entry_width(name: str, scale: int) -> int:
    return 12 * scale + 5 * scale + _text_size(name, scale)[0]


def _draw_entry(
    image: np.ndarray, left: int, top: int, fill: np.ndarray, name: str, scale: int
) -> None:
    """Swatch and name on one legend row whose top is `top`."""
    size = 12 * scale
    swatch_top = top + 3 * scale
    _swatch(image, left, swatch_top, size, fill, scale)
    text_height = _text_size("Ag", scale)[1]
    _put_text(image, name, left + size + 5 * scale, swatch_top + (size + text_height) // 2, scale)


def _solid(color: Sequence[int], scale: int) -> np.ndarray:
    return np.tile(np.asarray(color, np.uint8), (12 * scale, 12 * scale, 1))


def _outline(color: Sequence[int], scale: int) -> np.ndarray:
    """A swatch drawn like the overlay's moving objects: a thick outline around the frame."""
    size = 12 * scale
    fill = np.full((size, size, 3), 200, np.uint8)
    border = max(2, 3 * scale)
    fill[:border], fill[-border:], fill[:, :border], fill[:, -border:] = (color,) * 4
    return fill


def legend_strip(
    width: int,
    *,
    semantic_classes: int | None = None,
    inverse_range: tuple[float, float] | None = None,
    motion: bool = False,
    show_ignore: bool = False,
    motion_style: str = "fill",
    colormap: int = DEPTH_COLORMAP,
    scale: int | None = None,
) -> np.ndarray:
    """A legend `width` pixels wide to put under a prediction picture, RGB uint8 on white.

    Rows, each section titled on the left: the semantic classes (colour swatch and name, in
    columns; "ignore" in black with `show_ignore`), the motion colour ("moving"), and a depth
    colour bar in the inverse-depth mapping of `colorize_depth` with ticks labelled in metres
    (`depth_ticks`) and the hatched "invalid" swatch. The height depends only on the width, the
    sections and the scale, never on the depth range, so frames of a video match.

    Args:
        width: strip width in pixels (the picture's width).
        semantic_classes: 5 or 19 to list the classes; None leaves the section out.
        inverse_range: (low, high) inverse depth of the colour bar; None leaves it out.
        motion: whether to show the motion section.
        show_ignore: add a black "ignore" swatch to the classes (ground truth is shown).
        motion_style: "fill" (a swatch of the motion colour, as `motion_overlay` tints) or
            "outline" (as `prediction_overlay` outlines moving objects).
        colormap: the colour map of the depth bar.
        scale: whole size factor; default `legend_scale(width)`.

    Returns:
        uint8 RGB [h, width, 3].

    Example:

    ```python
    strip = legend_strip(grid.shape[1], semantic_classes=5, inverse_range=(0.01, 0.5))
    picture = np.concatenate([grid, strip], axis=0)
    ```
    """
    if motion_style not in ("fill", "outline"):
        raise ValueError(f"motion_style must be 'fill' or 'outline', got {motion_style!r}")
    scale = legend_scale(width) if scale is None else max(1, int(scale))
    margin, row_height = 6 * scale, 18 * scale
    titles = {
        "semantic": semantic_classes is not None,
        "motion": motion,
        "depth (m)": inverse_range is not None,
    }
    shown_titles = [title for title, shown in titles.items() if shown]
    if not shown_titles:
        return np.zeros((0, width, 3), np.uint8)
    content_left = margin + max(_text_size(t, scale)[0] for t in shown_titles) + 10 * scale
    content_width = max(width - content_left - margin, 1)
    # Each row: its title (or ""), its height, and functions drawing its items given the row top.
    rows: list[tuple[str, int, list[Callable[..., None]]]] = []

    def entry(left: int, name: str, fill: np.ndarray) -> Callable[..., None]:
        return functools.partial(_draw_entry, left=left, fill=fill, name=name, scale=scale)

    if semantic_classes is not None:
        entries = list(zip(class_names(semantic_classes), palette(semantic_classes), strict=True))
        if show_ignore:
            entries.append(("ignore", np.asarray(IGNORE_COLOR, np.uint8)))
        cell = max(_entry_width(name, scale) for name, _ in entries) + 12 * scale
        columns = max(1, min(len(entries), (content_width + 12 * scale) // cell))
        for first in range(0, len(entries), columns):
            draws = [
                entry(content_left + column * cell, name, _solid(color, scale))
                for column, (name, color) in enumerate(entries[first : first + columns])
            ]
            rows.append(("semantic" if first == 0 else "", row_height, draws))
    if motion:
        style = _outline if motion_style == "outline" else _solid
        rows.append(
            ("motion", row_height, [entry(content_left, "moving", style(MOTION_PALETTE[1], scale))])
        )
    if inverse_range is not None:
        invalid = hatch_pattern(12 * scale, 12 * scale, invalid_depth_colors(colormap))
        invalid_width = _entry_width("invalid", scale) + 14 * scale
        bar_width = min(content_width - invalid_width, _BAR_MAX_WIDTH * scale)
        invalid_beside = bar_width >= _BAR_MIN_WIDTH * scale
        if not invalid_beside:  # too narrow: the bar takes the row, "invalid" the next one
            bar_width = min(content_width, _BAR_MAX_WIDTH * scale)
        bar_row_height = 3 * scale + 12 * scale + 6 * scale + _text_size("0", scale)[1] + 5 * scale
        draws = [
            functools.partial(
                _draw_depth_bar,
                left=content_left,
                bar_width=bar_width,
                inverse_range=inverse_range,
                colormap=colormap,
                scale=scale,
            )
        ]
        if invalid_beside:
            draws.append(entry(content_left + bar_width + 14 * scale, "invalid", invalid))
        rows.append(("depth (m)", bar_row_height, draws))
        if not invalid_beside:
            rows.append(("", row_height, [entry(content_left, "invalid", invalid)]))

    height = 2 * (4 * scale) + sum(row_h for _, row_h, _ in rows)
    strip = np.full((height, width, 3), LEGEND_BACKGROUND, np.uint8)
    top = 4 * scale
    text_height = _text_size("Ag", scale)[1]
    for title, row_h, draws in rows:
        if title:
            baseline = top + 3 * scale + (12 * scale + text_height) // 2
            _put_text(strip, title, margin, baseline, scale)
        for draw in draws:
            draw(strip, top=top)
        top += row_h
    return strip


def _draw_depth_bar(
    image: np.ndarray,
    left: int,
    top: int,
    bar_width: int,
    inverse_range: tuple[float, float],
    colormap: int,
    scale: int,
) -> None:
    """Colour bar near (left) to far (right) in the inverse-depth mapping, ticks labelled in m.

    `top` is the legend row's top; the bar starts 3 * scale below it, like the swatches.
    """
    top += 3 * scale
    bar_height = 12 * scale
    # Pixel x shows the inverse depth high - x / (bar_width - 1) * (high - low): the same
    # rounding to a colour-map index as colorize_depth, so a depth's colour sits at its tick.
    fraction = 1.0 - np.arange(bar_width) / max(bar_width - 1, 1)
    colors = colormap_colors(colormap)[np.round(fraction * 255.0).astype(np.uint8)]
    image[top : top + bar_height, left : left + bar_width] = colors[None]
    frame = max(1, scale // 2)
    cv2.rectangle(
        image,
        (left - frame, top - frame),
        (left + bar_width + frame - 1, top + bar_height + frame - 1),
        (90, 90, 90),
        frame,
    )
    tick_top = top + bar_height + frame
    tick_bottom = tick_top + 3 * scale
    baseline = tick_bottom + 3 * scale + _text_size("0", scale)[1]
    for metres, x in depth_ticks(inverse_range, bar_width, scale):
        cv2.line(
            image,
            (left + x, tick_top),
            (left + x, tick_bottom),
            LEGEND_TEXT_COLOR,
            max(1, scale // 2),
        )
        label = _tick_label(metres)
        label_left = _tick_label_left(x, _text_size(label, scale)[0], bar_width, scale)
        _put_text(image, label, left + label_left, baseline, scale)


# --------------------------------------------------------------------------- pictures


def _resize_to(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest upscaling by a whole factor, any dtype, channels kept."""
    return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


def _with_caption(panel: np.ndarray, caption: str, scale: int = 1) -> np.ndarray:
    """The panel under a white strip of `PANEL_TITLE_HEIGHT * scale` pixels holding `caption`."""
    height = PANEL_TITLE_HEIGHT * scale
    strip = np.full((height, panel.shape[1], 3), 255, np.uint8)
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale
    text_width = cv2.getTextSize(caption, font, font_scale, scale)[0][0]
    if text_width > panel.shape[1] - 4:  # shrink the caption to fit narrow panels
        font_scale *= (panel.shape[1] - 4) / text_width
    cv2.putText(
        strip,
        caption,
        (2 * scale, height - 4 * scale),
        font,
        font_scale,
        (0, 0, 0),
        scale,
        cv2.LINE_AA,
    )
    return np.concatenate([strip, panel], axis=0)


def prediction_grid(
    rgb: np.ndarray,
    flow: np.ndarray | None,
    truth: Mapping[str, np.ndarray],
    prediction: Mapping[str, np.ndarray],
    semantic_classes: int = 5,
    *,
    depth_range: Sequence[float] | None = None,
    legend: bool = True,
) -> np.ndarray:
    """One picture of a frame: inputs on top, then ground truth beside prediction per task.

    Rows: [RGB input | flow colour wheel], [depth truth | depth prediction] (inverse depth, same
    scale for both, invalid hatched grey), [semantic truth | prediction] (palette), [motion
    truth | prediction] (overlay on the frame), then a legend strip (`legend_strip`): class
    colours and names, "moving", and the depth colour bar with ticks in metres. Tasks missing
    from `prediction` are left out of rows and legend; panels are drawn at the size of the truth
    maps (the evaluation size; upscaled by a whole factor, nearest, when narrower than
    `MIN_PANEL_WIDTH`), each with a caption `PANEL_TITLE_HEIGHT` pixels high (times
    `legend_scale` of the grid's width, so 1 up to 698-pixel panels).

    Args:
        rgb: uint8 [H, W, 3] frame (any size; resized to the panel size).
        flow: [H, W, 2+] u, v in pixels, or None (the panel is left grey).
        truth: `depth` metres [h, w(, 1)], `semantic` and `motion` ids [h, w].
        prediction: the same keys as `truth`, same sizes.
        semantic_classes: palette to use (5 or 19).
        depth_range: (near, far) metres of the depth colour scale, fixed across frames; default
            the truth's 2nd to 98th percentile (`inverse_depth_range`).
        legend: draw the legend strip under the grid.

    Returns:
        uint8 RGB image.

    Example:

    ```python
    grid = prediction_grid(rgb, flow, truth, prediction, depth_range=(3.0, 80.0))
    cv2.imwrite("frame_vis.png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    ```
    """
    tasks = [task for task in ("depth", "semantic", "motion") if task in prediction]
    if not tasks:
        raise ValueError("prediction_grid needs at least one of depth, semantic, motion")
    size = tuple(np.asarray(truth[tasks[0]]).shape[:2])
    # Tiny evaluation sizes are upscaled (nearest, whole factors) so that the grid stays legible.
    zoom = max(1, math.ceil(MIN_PANEL_WIDTH / size[1]))
    if zoom > 1:
        size = (size[0] * zoom, size[1] * zoom)
        truth = {k: _resize_to(np.asarray(v), size, nearest=True) for k, v in truth.items()}
        prediction = {
            k: _resize_to(np.asarray(v), size, nearest=True) for k, v in prediction.items()
        }
    frame = _resize_to(np.asarray(rgb, np.uint8), size)
    if flow is not None:
        flow_panel = _resize_to(colorize_flow(flow), size)
    else:
        flow_panel = np.full(size + (3,), 128, np.uint8)
    rows = [(("input", frame), ("flow", flow_panel))]
    inverse_range = None
    if "depth" in prediction:
        if depth_range is not None:
            inverse_range = depth_range_to_inverse(depth_range)
        else:
            inverse_range = inverse_depth_range(truth["depth"])
        rows.append(
            (
                ("depth truth", colorize_depth(truth["depth"], inverse_range)),
                ("depth prediction", colorize_depth(prediction["depth"], inverse_range)),
            )
        )
    if "semantic" in prediction:
        rows.append(
            (
                ("semantic truth", colorize_semantic(truth["semantic"], semantic_classes)),
                (
                    "semantic prediction",
                    colorize_semantic(prediction["semantic"], semantic_classes),
                ),
            )
        )
    if "motion" in prediction:
        rows.append(
            (
                ("motion truth", motion_overlay(frame, truth["motion"])),
                ("motion prediction", motion_overlay(frame, prediction["motion"])),
            )
        )
    # Captions grow with the legend so that they stay readable on a 2048-wide grid.
    caption_scale = legend_scale(2 * size[1] + 2)
    gap = np.full((size[0] + PANEL_TITLE_HEIGHT * caption_scale, 2, 3), 255, np.uint8)
    drawn_rows = [
        np.concatenate(
            [
                _with_caption(left[1], left[0], caption_scale),
                gap,
                _with_caption(right[1], right[0], caption_scale),
            ],
            axis=1,
        )
        for left, right in rows
    ]
    if legend:
        drawn_rows.append(
            legend_strip(
                drawn_rows[0].shape[1],
                semantic_classes=semantic_classes if "semantic" in prediction else None,
                inverse_range=inverse_range,
                motion="motion" in prediction,
                show_ignore=True,  # the truth panels show ignore pixels in black
            )
        )
    return np.concatenate(drawn_rows, axis=0)


def _class_map(value: np.ndarray) -> np.ndarray:
    """Class ids [H, W] from ids [H, W(, 1)] or logits / probabilities [H, W, C]."""
    value = np.asarray(value)
    if value.ndim == 3 and value.shape[-1] > 1:
        return np.argmax(value, axis=-1).astype(np.int32)
    return value.reshape(value.shape[:2]).astype(np.int32)


def _resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear depth resize that keeps invalid (<= 0) pixels invalid instead of blending them."""
    depth = np.asarray(depth, np.float32)
    depth = depth.reshape(depth.shape[:2])
    if depth.shape == size:
        return depth
    resized = _resize_to(depth, size)
    invalid = _resize_to((depth > 0).astype(np.uint8), size, nearest=True) == 0
    resized[invalid] = 0.0
    return resized


def prediction_overlay(
    rgb: np.ndarray,
    prediction: Mapping[str, np.ndarray],
    semantic_classes: int = 5,
    depth_range: Sequence[float] | None = None,
    *,
    semantic_alpha: float = 0.5,
    legend: bool = True,
) -> np.ndarray:
    """One picture of a frame's prediction without ground truth, e.g. for each frame of a video.

    Panels at the frame's size (upscaled by a whole factor, nearest, when narrower than
    `MIN_OVERLAY_WIDTH`): the frame with the semantic colours blended in and moving
    objects outlined in the motion colour, and the depth colour map (inverse depth, near =
    bright, invalid hatched grey). They are stacked top to bottom for landscape frames and side
    by side for portrait ones, above a legend strip (`legend_strip`: class colours and names,
    "moving", the depth colour bar with ticks in metres). Tasks missing from `prediction` are
    left out. With a fixed `depth_range` and frames of one size, every frame of a video gets
    the same picture size, colour scale and legend.

    Args:
        rgb: uint8 [H, W, 3] frame; the picture is drawn at this size.
        prediction: any of `depth` metres [h, w(, 1)], `semantic` and `motion` class ids
            [h, w] or logits [h, w, C] (argmax), at any size (resized to the frame: depth
            bilinearly, classes nearest).
        semantic_classes: palette and names (5 or 19).
        depth_range: (near, far) metres of the depth colour scale; default this frame's 2nd to
            98th percentile, which changes from frame to frame.
        semantic_alpha: weight of the class colours over the frame.
        legend: draw the legend strip.

    Returns:
        uint8 RGB image.

    Example:

    ```python
    outputs = model(inputs, training=False)
    picture = prediction_overlay(
        frame, {task: outputs[task][0] for task in outputs}, depth_range=(3.0, 80.0)
    )
    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))  # a cv2.VideoWriter
    ```
    """
    tasks = [task for task in ("depth", "semantic", "motion") if task in prediction]
    if not tasks:
        raise ValueError("prediction_overlay needs at least one of depth, semantic, motion")
    frame = np.asarray(rgb, np.uint8)
    # Tiny frames (the network's size) are upscaled by a whole factor so that the legend fits.
    frame = _zoom(frame, max(1, math.ceil(MIN_OVERLAY_WIDTH / frame.shape[1])))
    size = frame.shape[:2]
    scale = legend_scale(frame.shape[1])
    picture = frame.copy()
    if "semantic" in prediction:
        classes = _resize_to(_class_map(prediction["semantic"]), size, nearest=True)
        colors = colorize_semantic(classes, semantic_classes).astype(np.float32)
        blended = (1.0 - semantic_alpha) * frame.astype(np.float32) + semantic_alpha * colors
        picture = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if "motion" in prediction:
        moving = _resize_to(_class_map(prediction["motion"]), size, nearest=True) == 1
        # An outline rather than a tint, so that the class colours underneath stay readable.
        contours, _ = cv2.findContours(
            moving.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
        )
        thickness = max(2, round(min(size) / 160))
        cv2.drawContours(picture, contours, -1, MOTION_PALETTE[1], thickness, cv2.LINE_8)
    panels = [picture]
    inverse_range = None
    if "depth" in prediction:
        depth = _resize_depth(prediction["depth"], size)
        if depth_range is not None:
            inverse_range = depth_range_to_inverse(depth_range)
        else:
            inverse_range = inverse_depth_range(depth)
        panels.append(colorize_depth(depth, inverse_range))
    stack_vertically = size[1] >= size[0]
    if len(panels) == 2:
        gap_shape = (2 * scale, size[1], 3) if stack_vertically else (size[0], 2 * scale, 3)
        panels.insert(1, np.full(gap_shape, 255, np.uint8))
    body = np.concatenate(panels, axis=0 if stack_vertically else 1)
    if not legend:
        return body
    strip = legend_strip(
        body.shape[1],
        semantic_classes=semantic_classes if "semantic" in prediction else None,
        inverse_range=inverse_range,
        motion="motion" in prediction,
        motion_style="outline",
        scale=scale,
    )
    return np.concatenate([body, strip], axis=0)


# --------------------------------------------------------------------------- history plots


def read_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a Keras CSVLogger `history.csv` into {column: float array} (blank = NaN).

    Raises:
        UserError: the file is missing, empty, or has no `epoch` column.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--history {path} does not exist: pass a run's history.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "epoch" not in rows[0]:
        raise UserError(
            f"--history {path} has no rows or no 'epoch' column: pass the history.csv a "
            "training run writes"
        )
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(math.nan)
        columns[name] = np.asarray(values, dtype=np.float64)
    return columns


def _run_label(path: Path, labels: Sequence[str] | None, index: int) -> str:
    if labels is not None and index < len(labels):
        return labels[index]
    return path.parent.name or path.stem


def _history_panels(columns: Sequence[str]) -> dict[str, list[str]]:
    # The trainer writes loss_<task> and val_loss_<task>; Keras' own logs use <task>_loss.
    losses = [c for c in columns if "loss" in c.split("_")]
    losses = [c for c in losses if not c.startswith("val_")] + [
        c for c in losses if c.startswith("val_")
    ]
    metrics = [
        c
        for c in columns
        if c.startswith("val_") and "loss" not in c.split("_") and not c.startswith("val_weight_")
    ]
    weights = [c for c in columns if c.startswith("weight_")]
    return {"losses": losses, "validation metrics": metrics, "task weights": weights}


def plot_history(
    history_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    labels: Sequence[str] | None = None,
) -> Path:
    """Plots losses, validation metrics and task-weight trajectories of one or more runs.

    One subplot per loss / metric / weight column (columns `loss`, `*_loss`, `val_*`,
    `weight_*`); each run is one line (labelled by its folder name or `labels`), so several
    weighting methods can be compared on one figure. Written atomically.

    Args:
        history_paths: `history.csv` files (Keras CSVLogger format, `epoch` column).
        out_path: image file to write (format from the extension, e.g. `.png`).
        labels: optional run names, in the order of `history_paths`.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = [Path(p) for p in history_paths]
    if not paths:
        raise UserError("--history needs at least one history.csv")
    histories = [read_history(p) for p in paths]
    columns: list[str] = []
    for history in histories:
        columns += [c for c in history if c not in columns]
    panels = _history_panels(columns)
    plotted = [(group, name) for group, names in panels.items() for name in names]
    if not plotted:
        raise UserError(
            f"--history {paths[0]} has no loss, val_* or weight_* columns to plot: pass the "
            "history.csv a training run writes"
        )
    num_cols = min(4, len(plotted))
    num_rows = math.ceil(len(plotted) / num_cols)
    figure, axes = plt.subplots(
        num_rows, num_cols, figsize=(4.0 * num_cols, 3.0 * num_rows), squeeze=False
    )
    for axis, (group, name) in zip(axes.flat, plotted, strict=False):
        for index, (path, history) in enumerate(zip(paths, histories, strict=True)):
            if name in history and np.isfinite(history[name]).any():
                axis.plot(history["epoch"], history[name], label=_run_label(path, labels, index))
        axis.set_title(f"{name} ({group})", fontsize=9)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.3)
        if len(paths) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(plotted) :]:
        axis.axis("off")
    figure.tight_layout()
    out_path = Path(out_path)
    try:
        save_atomic(lambda tmp: figure.savefig(tmp, dpi=100), out_path)
    finally:
        plt.close(figure)
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_mtl.visualize",
        description="Plot losses, validation metrics and task weights from history.csv files.",
    )
    parser.add_argument("--history", nargs="+", required=True, help="one or more history.csv")
    parser.add_argument("--out", required=True, help="output image, e.g. curves.png")
    parser.add_argument("--labels", nargs="+", help="run names for the legend, one per CSV")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.history):
        raise UserError(
            f"--labels has {len(args.labels)} names for {len(args.history)} --history files: "
            "give one name per file"
        )
    written = plot_history(args.history, args.out, args.labels)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    run_cli(main)
