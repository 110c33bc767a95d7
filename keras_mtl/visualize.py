"""Colour maps, prediction grids and training-curve plots.

Colour maps turn one modality into an RGB uint8 image: class maps through the Cityscapes
palettes of `keras_mtl.data.labels` (ignore 255 = black), optical flow through a
Middlebury-style colour wheel (hue = direction, saturation = speed, white = still), depth as
inverse depth through a perceptual colour map (near = bright, invalid = black).
`prediction_grid` stacks input, flow, and ground truth beside prediction for each task.
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
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from keras_mtl.data.labels import MOTION_PALETTE, palette
from keras_mtl.errors import UserError, run_cli
from keras_mtl.io import save_atomic

IGNORE_COLOR = (0, 0, 0)
PANEL_TITLE_HEIGHT = 14  # pixels of the caption strip above each panel of a grid
MIN_PANEL_WIDTH = 128  # narrower panels are upscaled by a whole factor


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


def inverse_depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(low, high) inverse depth (1/m) of the 2nd and 98th percentiles of the valid pixels."""
    valid = np.asarray(depth)[np.asarray(depth) > 0]
    if valid.size == 0:
        return 0.0, 1.0
    inverse = 1.0 / valid
    low, high = np.percentile(inverse, [2.0, 98.0])
    return float(low), float(max(high, low + 1e-6))


def colorize_depth(
    depth: np.ndarray,
    inverse_range: tuple[float, float] | None = None,
    colormap: int = cv2.COLORMAP_MAGMA,
) -> np.ndarray:
    """Inverse depth through a colour map (near = bright), invalid (<= 0) pixels black.

    Args:
        depth: metres [H, W] or [H, W, 1]; 0 = invalid.
        inverse_range: (low, high) of 1/depth mapped to the ends of the colour map; pass the
            ground truth's range to draw truth and prediction on the same scale. Default:
            `inverse_depth_range(depth)`.
        colormap: an OpenCV colour map id.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 3:
        depth = depth[..., 0]
    low, high = inverse_range if inverse_range is not None else inverse_depth_range(depth)
    valid = depth > 0
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    scaled = np.clip((inverse - low) / max(high - low, 1e-6), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(scaled * 255.0).astype(np.uint8), colormap)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def motion_overlay(rgb: np.ndarray, motion: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The RGB frame, darkened, with moving pixels (class 1) tinted in the motion colour."""
    rgb = np.asarray(rgb, dtype=np.float32)
    moving = np.asarray(motion) == 1
    color = np.asarray(MOTION_PALETTE[1], np.float32)
    out = rgb * 0.6
    out[moving] = (1.0 - alpha) * rgb[moving] + alpha * color
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _resize_to(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest upscaling by a whole factor, any dtype, channels kept."""
    return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


def _with_caption(panel: np.ndarray, caption: str) -> np.ndarray:
    strip = np.full((PANEL_TITLE_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    text_width = cv2.getTextSize(caption, font, scale, 1)[0][0]
    if text_width > panel.shape[1] - 4:  # shrink the caption to fit narrow panels
        scale *= (panel.shape[1] - 4) / text_width
    cv2.putText(strip, caption, (2, PANEL_TITLE_HEIGHT - 4), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def prediction_grid(
    rgb: np.ndarray,
    flow: np.ndarray | None,
    truth: Mapping[str, np.ndarray],
    prediction: Mapping[str, np.ndarray],
    semantic_classes: int = 5,
) -> np.ndarray:
    """One picture of a frame: inputs on top, then ground truth beside prediction per task.

    Rows: [RGB input | flow colour wheel], [depth truth | depth prediction] (inverse depth, same
    scale for both), [semantic truth | prediction] (palette), [motion truth | prediction]
    (overlay on the frame). Tasks missing from `prediction` are left out; panels are drawn at
    the size of the truth maps (the evaluation size; upscaled by a whole factor, nearest, when
    narrower than `MIN_PANEL_WIDTH`), each with a caption.

    Args:
        rgb: uint8 [H, W, 3] frame (any size; resized to the panel size).
        flow: [H, W, 2+] u, v in pixels, or None (the panel is left grey).
        truth: `depth` metres [h, w(, 1)], `semantic` and `motion` ids [h, w].
        prediction: the same keys as `truth`, same sizes.
        semantic_classes: palette to use (5 or 19).

    Returns:
        uint8 RGB image.

    Example:

    ```python
    grid = prediction_grid(rgb, flow, truth, prediction)
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
    if "depth" in prediction:
        depth_range = inverse_depth_range(truth["depth"])
        rows.append(
            (
                ("depth truth", colorize_depth(truth["depth"], depth_range)),
                ("depth prediction", colorize_depth(prediction["depth"], depth_range)),
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
    gap = np.full((size[0] + PANEL_TITLE_HEIGHT, 2, 3), 255, np.uint8)
    drawn_rows = [
        np.concatenate([_with_caption(left[1], left[0]), gap, _with_caption(right[1], right[0])], 1)
        for left, right in rows
    ]
    return np.concatenate(drawn_rows, axis=0)


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
