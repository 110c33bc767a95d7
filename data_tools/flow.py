"""Farneback optical flow with a forward-backward confidence, in the Cityscapes multitask layout.

Direction: the flow is defined on the CURRENT frame's pixel grid and is the image motion since
the previous frame: a point seen at `(x, y)` in the current frame was at `(x - u, y - v)` in the
previous frame (`u > 0`: the content moved right). It is computed as the negated Farneback flow
from the current frame to the previous one (`previous(x - u, y - v) ~ current(x, y)`).

Confidence: with `b(x)` the current -> previous Farneback flow and `f` the previous -> current
flow, the round-trip error is `e = |b(x) + f(x + b(x))|` (f sampled bilinearly) and

    confidence = 255 * exp(-e^2 / (2 * s^2)),   s^2 = 0.25 + 0.01 * (|b(x)|^2 + |f(x + b(x))|^2)

(pixels, as in Sundaram et al. 2010: tolerance grows with the motion); 0 where `x + b(x)` falls
outside the previous frame.

Stored form: a 3-channel uint8 PNG whose channels, in RGB order, are `u + 128`, `v + 128`
(rounded, clipped to 0..255) and the confidence; see `encode_flow` / `decode_flow`.

Command line:
    python -m data_tools.flow --data_path DIR [--splits train val] [--workers K] [--overwrite]
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from data_tools import (
    find_child_dir,
    map_jobs,
    read_png,
    require_data_path,
    write_png_atomic,
)
from keras_mtl.data.layout import (
    FLOW_DIR,
    FLOW_OFFSET,
    PREVIOUS_DIR,
    RGB_DIR,
    RGB_SUFFIX,
    SEQUENCE_DIR,
)
from keras_mtl.errors import UserError, run_cli

STEM_PATTERN = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)$")


@dataclass(frozen=True)
class FarnebackParams:
    """Parameters of `cv2.calcOpticalFlowFarneback` (OpenCV's names).

    Args:
        pyr_scale: ratio between pyramid levels.
        levels: pyramid levels including the full-size image. OpenCV stops adding levels
            before the short side falls under 32 px, so small images get fewer (64 px: 2).
        winsize: averaging window (px); larger is smoother and more robust to noise.
        iterations: iterations per pyramid level.
        poly_n: neighbourhood of the per-pixel polynomial expansion (px).
        poly_sigma: Gaussian sigma of that expansion (1.1-1.2 for poly_n 5).
        gaussian_window: Gaussian instead of box averaging window (more accurate, slower).
    """

    pyr_scale: float = 0.5
    levels: int = 5
    winsize: int = 21
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    gaussian_window: bool = True


DEFAULT_PARAMS = FarnebackParams()


def _farneback(from_gray: np.ndarray, to_gray: np.ndarray, params: FarnebackParams) -> np.ndarray:
    """Farneback flow d on `from_gray`'s grid with to_gray(x + d(x)) ~ from_gray(x)."""
    flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if params.gaussian_window else 0
    return cv2.calcOpticalFlowFarneback(
        from_gray,
        to_gray,
        None,
        params.pyr_scale,
        params.levels,
        params.winsize,
        params.iterations,
        params.poly_n,
        params.poly_sigma,
        flags,
    )


def _to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {image.dtype}")
    return image


def compute_flow(
    current_rgb: np.ndarray, previous_rgb: np.ndarray, params: FarnebackParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Flow of the current frame since the previous one, with a confidence.

    Args:
        current_rgb: HxWx3 (or HxW) uint8 current frame.
        previous_rgb: the previous frame, same shape.
        params: Farneback parameters.

    Returns:
        float32 HxWx3: `u`, `v` in pixels (motion since the previous frame, see the module
        docstring for the direction) and the confidence in 0..255.

    Example:
        >>> flow = compute_flow(current, previous)
        >>> u, v, confidence = flow[..., 0], flow[..., 1], flow[..., 2]
    """
    current = _to_gray(current_rgb)
    previous = _to_gray(previous_rgb)
    if current.shape != previous.shape:
        raise ValueError(f"frame shapes differ: {current.shape} vs {previous.shape}")
    height, width = current.shape
    backward = _farneback(current, previous, params)  # current grid -> previous frame
    forward = _farneback(previous, current, params)  # previous grid -> current frame

    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    target_x = grid_x + backward[..., 0]
    target_y = grid_y + backward[..., 1]
    forward_at_target = cv2.remap(
        forward, target_x, target_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    round_trip = backward + forward_at_target
    error_sq = np.sum(round_trip**2, axis=-1)
    tolerance_sq = 0.25 + 0.01 * (
        np.sum(backward**2, axis=-1) + np.sum(forward_at_target**2, axis=-1)
    )
    confidence = 255.0 * np.exp(-error_sq / (2.0 * tolerance_sq))
    inside = (target_x >= 0) & (target_x <= width - 1) & (target_y >= 0) & (target_y <= height - 1)
    confidence = np.where(inside, confidence, 0.0)
    return np.dstack([-backward[..., 0], -backward[..., 1], confidence]).astype(np.float32)


def encode_flow(flow: np.ndarray) -> np.ndarray:
    """Stored form of a flow: uint8 HxWx3 (u + 128, v + 128, confidence), rounded and clipped.

    Args:
        flow: float HxWx3 (u, v in pixels, confidence 0..255), as `compute_flow` returns.
    """
    flow = np.asarray(flow, dtype=np.float32)
    encoded = np.empty(flow.shape, dtype=np.float32)
    encoded[..., 0:2] = flow[..., 0:2] + FLOW_OFFSET
    encoded[..., 2] = flow[..., 2]
    return np.clip(np.rint(encoded), 0, 255).astype(np.uint8)


def decode_flow(encoded: np.ndarray) -> np.ndarray:
    """Inverse of `encode_flow`: float32 HxWx3 (u, v in pixels, confidence 0..255)."""
    flow = np.asarray(encoded, dtype=np.float32).copy()
    flow[..., 0:2] -= FLOW_OFFSET
    return flow


def previous_frame_candidates(data_path: Path, split: str, city: str, stem: str) -> list[Path]:
    """Where the previous frame of `stem` may be, in the order they are tried.

    `leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame - 1>_leftImg8bit.png` (as in
    Cityscapes' sequence package), then
    `leftImg8bit_previous/<split>/<city>/<stem>_leftImg8bit.png`.
    """
    candidates = []
    match = STEM_PATTERN.match(stem)
    if match and int(match["frame"]) > 0:
        frame_width = len(match["frame"])
        previous_stem = f"{match['city']}_{match['seq']}_{int(match['frame']) - 1:0{frame_width}d}"
        folder = find_child_dir(data_path, SEQUENCE_DIR) or data_path / SEQUENCE_DIR
        candidates.append(folder / split / city / f"{previous_stem}{RGB_SUFFIX}")
    folder = find_child_dir(data_path, PREVIOUS_DIR) or data_path / PREVIOUS_DIR
    candidates.append(folder / split / city / f"{stem}{RGB_SUFFIX}")
    return candidates


@dataclass(frozen=True)
class _FlowJob:
    current: str
    previous: str
    output: str
    params: dict


def _run_job(job: _FlowJob) -> str:
    cv2.setNumThreads(1)  # one frame per process; avoid oversubscribing the cores
    current = read_png(job.current, rgb=True)
    previous = read_png(job.previous, rgb=True)
    if current.shape != previous.shape:
        raise UserError(
            f"{job.previous} has shape {previous.shape} but {job.current} has {current.shape}; "
            "the previous frame must have the current frame's size"
        )
    flow = compute_flow(current, previous, FarnebackParams(**job.params))
    write_png_atomic(job.output, encode_flow(flow), rgb=True)
    return job.output


def _plan_jobs(
    data_path: Path, splits: Sequence[str], overwrite: bool, params: FarnebackParams, strict: bool
) -> tuple[list[_FlowJob], int]:
    rgb_root = find_child_dir(data_path, RGB_DIR)
    if rgb_root is None:
        raise UserError(f"{data_path / RGB_DIR} does not exist; --data_path must hold {RGB_DIR}/")
    flow_root = find_child_dir(data_path, FLOW_DIR) or data_path / FLOW_DIR
    jobs, skipped, frames = [], 0, 0
    for split in splits:
        split_dir = rgb_root / split
        if not split_dir.is_dir():
            if strict:
                raise UserError(f"--splits: {split_dir} does not exist")
            continue
        for current in sorted(split_dir.glob(f"*/*{RGB_SUFFIX}")):
            frames += 1
            city = current.parent.name
            stem = current.name[: -len(RGB_SUFFIX)]
            output = flow_root / split / city / current.name
            if output.exists() and not overwrite:
                skipped += 1
                continue
            candidates = previous_frame_candidates(data_path, split, city, stem)
            previous = next((path for path in candidates if path.is_file()), None)
            if previous is None:
                looked = " or ".join(str(path) for path in candidates)
                raise UserError(
                    f"no previous frame for {stem} ({split}): looked for {looked}; add the "
                    "previous frame there (e.g. from Cityscapes' leftImg8bit_sequence package)"
                )
            jobs.append(_FlowJob(str(current), str(previous), str(output), asdict(params)))
    if frames == 0:
        raise UserError(
            f"no *{RGB_SUFFIX} frames under {rgb_root} for splits {list(splits)}; "
            "check --data_path and --splits"
        )
    return jobs, skipped


def run_flow(
    data_path: str | os.PathLike,
    splits: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    params: FarnebackParams = DEFAULT_PARAMS,
    progress: bool = True,
) -> dict[str, int]:
    """Writes the flow PNG of every frame of `splits` under `data_path`.

    Args:
        data_path: dataset root (holding leftImg8bit/ and the previous frames).
        splits: splits to process; None = train and val, skipping those that do not exist.
        workers: processes (None = CPU count, at most 8; 1 = in this process).
        overwrite: recompute flows that already exist.
        params: Farneback parameters.
        progress: show a tqdm progress bar.

    Returns:
        `{"written": n, "skipped": m}` (skipped: already present).

    Raises:
        UserError: missing folders, no frames, or a frame without a previous frame.
    """
    root = require_data_path(data_path)
    strict = splits is not None
    jobs, skipped = _plan_jobs(root, splits or ("train", "val"), overwrite, params, strict)
    for _ in map_jobs(_run_job, jobs, workers=workers, desc="flow", progress=progress):
        pass
    return {"written": len(jobs), "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.flow",
        description="Farneback flow + forward-backward confidence for every frame of a "
        "Cityscapes-format dataset (written to " + FLOW_DIR + ").",
    )
    parser.add_argument("--data_path", required=True, help="dataset root")
    parser.add_argument("--splits", nargs="+", default=None, help="default: train val")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="recompute existing flows")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    counts = run_flow(args.data_path, args.splits, workers=args.workers, overwrite=args.overwrite)
    print(f"flow: wrote {counts['written']} files, skipped {counts['skipped']} existing")
    return 0


if __name__ == "__main__":
    run_cli(main)
