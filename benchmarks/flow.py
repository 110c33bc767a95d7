"""Optical flow accuracy and speed of each `data_tools.flow` method against known true flow.

Two kinds of image pairs with ground truth, none downloaded:

- `real`: the Middlebury "motorcycle" stereo pair with its ground-truth disparity, shipped in
  the scikit-image wheel (`skimage.data.stereo_motorcycle()`, 500x741). A rectified stereo
  pair is a flow pair with horizontal motion: the left image is the current frame, the right
  image the previous one, the true flow `u = disparity` (7-60 px), `v = 0`; pixels without a
  disparity (7%) are left out. `real_half` is the same pair at half size (area resampling,
  disparity halved: motions of 3.5-30 px).
- `synthetic HxW`: validation frame pairs of `data_tools.synthetic` (seed 0), whose true flow
  the renderer gives exactly from its geometry (`true_flow`); pixels with a valid depth (sky
  and bonnet left out, as in docs/data.md).

Per method and pair set: end-point error (EPE, px) over all scored pixels and over confident
ones (confidence > 200 of 255), the share of pixels that are confident, the share with an EPE
over 3 px, and frames/s of `compute_flow` (both directions and the confidence, what the flow
tool does per frame) on one OpenCV thread (the tool runs one thread per worker process),
median over frames after a warm-up: from the process's CPU time (`frames/s CPU`, what one
core does, steady on a shared machine) and from the wall clock. Flow is scored as float,
before the PNG's 1-px rounding.

Usage:

```
python benchmarks/flow.py [--quick] [--json OUT.json] [--methods farneback dis ...]
                          [--sizes 64x128 128x256 256x512] [--frames 10] [--threads 1]
```

`--quick` scores 3 synthetic frames at 64x128 and 128x256 (a smoke run of a few seconds).
Methods: `farneback` and `dis` (the tool's parameters), and the other DIS presets
`dis_fast`, `dis_ultrafast` for the speed/accuracy trade-off.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from data_tools.flow import DISParams, FlowParams, compute_flow, default_params  # noqa: E402
from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402

CONFIDENT = 200.0  # confidence (0..255) above which a pixel counts as confident
BAD_EPE = 3.0  # px: the share of pixels over this is reported
METHODS: dict[str, FlowParams] = {
    "farneback": default_params("farneback"),
    "dis": default_params("dis"),
    "dis_fast": DISParams.from_preset("fast"),
    "dis_ultrafast": DISParams.from_preset("ultrafast"),
}


@dataclass
class FlowPair:
    """Two frames and the true flow of the current one (data_tools.flow's direction).

    Attributes:
        current: HxWx3 uint8 RGB.
        previous: HxWx3 uint8 RGB.
        flow: float32 HxWx2 true (u, v): the point at (x, y) in `current` was at (x - u, y - v).
        valid: bool HxW, the pixels scored.
    """

    current: np.ndarray
    previous: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


def stereo_motorcycle_pair(scale: float = 1.0) -> FlowPair:
    """The Middlebury motorcycle stereo pair as a flow pair (scikit-image ships it).

    Args:
        scale: resize factor (0.5 = half size; disparity scaled with the image).

    Raises:
        UserError: scikit-image is not installed.

    Example:
        >>> pair = stereo_motorcycle_pair()
        >>> pair.current.shape, float(pair.flow[..., 0][pair.valid].max()) > 50
        ((500, 741, 3), True)
    """
    try:
        from skimage import data
    except ImportError:
        raise UserError(
            "the real pair needs scikit-image (pip install -r requirements.txt), "
            "or run with --skip_real"
        ) from None
    left, right, disparity = data.stereo_motorcycle()
    # Middlebury's disparity lives on the left image: left(r, c) ~ right(r, c - d) (warping
    # the right image this way matches the left one better than the reverse reading of
    # scikit-image's docstring example). With left as the current frame: u = d, v = 0.
    valid = np.isfinite(disparity)
    disparity = np.where(valid, disparity, 0.0).astype(np.float32)
    if scale != 1.0:
        height, width = disparity.shape
        size = (round(width * scale), round(height * scale))
        left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
        right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
        # Nearest for the truth: averaging would blend disparities across depth edges.
        disparity = cv2.resize(disparity, size, interpolation=cv2.INTER_NEAREST) * scale
        valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    flow = np.dstack([disparity, np.zeros_like(disparity)])
    return FlowPair(np.ascontiguousarray(left), np.ascontiguousarray(right), flow, valid)


def synthetic_pairs(height: int, width: int, frames: int, seed: int = 0) -> Iterator[FlowPair]:
    """Validation pairs of the synthetic generator with the renderer's exact flow.

    Example:
        >>> pair = next(synthetic_pairs(64, 128, 1))
    """
    from data_tools.synthetic import generate_sample, render_view, true_flow

    for index in range(frames):
        sample = generate_sample(seed, "val", index, height, width)
        truth = true_flow(sample.scene, render_view(sample.scene, 0.0))
        yield FlowPair(sample.current_rgb, sample.previous_rgb, truth, sample.depth > 0)


def score(flow: np.ndarray, pair: FlowPair) -> dict[str, float]:
    """EPE statistics of an estimated flow (HxWx3 with confidence) on the pair's valid pixels.

    Returns:
        `epe` (mean px), `epe_confident`, `confident_share`, `over_3px` (shares 0..1),
        `pixels` scored.

    Example:
        >>> score(compute_flow(pair.current, pair.previous), pair)["epe"]
    """
    error = np.linalg.norm(flow[..., :2] - pair.flow, axis=-1)[pair.valid]
    confident = flow[..., 2][pair.valid] > CONFIDENT
    return {
        "epe": float(error.mean()),
        "epe_confident": float(error[confident].mean()) if confident.any() else float("nan"),
        "confident_share": float(confident.mean()),
        "over_3px": float((error > BAD_EPE).mean()),
        "pixels": int(error.size),
    }


def benchmark(pairs: list[FlowPair], params: FlowParams, repeats: int = 1) -> dict[str, float]:
    """Scores and times `compute_flow` with `params` over `pairs` (pixel-weighted means).

    Args:
        pairs: the pair set.
        params: the method's parameters.
        repeats: timed runs per pair (the median time is used); the first run of the set is
            a warm-up and not timed.

    Returns:
        `epe`, `epe_confident`, `confident_share`, `over_3px` (as `score`), `fps_cpu` and
        `fps_wall` (frames/s from CPU and wall time), `frames`.

    Example:
        >>> benchmark(list(synthetic_pairs(64, 128, 3)), DISParams())["epe"]
    """
    compute_flow(pairs[0].current, pairs[0].previous, params)  # warm-up (allocations, caches)
    totals: dict[str, float] = {"epe": 0.0, "confident_error": 0.0, "confident": 0, "bad": 0}
    pixels = 0
    wall_seconds, cpu_seconds = [], []
    for pair in pairs:
        wall, cpu = [], []
        for _ in range(repeats):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            flow = compute_flow(pair.current, pair.previous, params)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
        wall_seconds.append(statistics.median(wall))
        cpu_seconds.append(statistics.median(cpu))
        result = score(flow, pair)
        pixels += result["pixels"]
        totals["epe"] += result["epe"] * result["pixels"]
        confident = result["confident_share"] * result["pixels"]
        totals["confident"] += confident
        if confident:
            totals["confident_error"] += result["epe_confident"] * confident
        totals["bad"] += result["over_3px"] * result["pixels"]
    confident = totals["confident"]
    return {
        "epe": totals["epe"] / pixels,
        "epe_confident": totals["confident_error"] / confident if confident else float("nan"),
        "confident_share": confident / pixels,
        "over_3px": totals["bad"] / pixels,
        "fps_cpu": 1.0 / max(statistics.median(cpu_seconds), 1e-6),
        "fps_wall": 1.0 / statistics.median(wall_seconds),
        "frames": len(pairs),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--sizes: expected HxW like 128x256, got {text!r}") from None
    if height < 32 or width < 32:
        raise UserError(f"--sizes: {text} is under the generator's 32 px minimum")
    return height, width


def _measure(
    methods: list[str], sizes: list[tuple[int, int]], frames: int, repeats: int, real: bool
) -> list[dict]:
    """Scores every method on every pair set, printing one table row per result."""
    pair_sets: dict[str, tuple[list[FlowPair], int]] = {}
    if real:
        pair_sets["real 500x741"] = ([stereo_motorcycle_pair()], repeats)
        pair_sets["real_half 250x370"] = ([stereo_motorcycle_pair(0.5)], repeats)
    for height, width in sizes:
        pair_sets[f"synthetic {height}x{width}"] = (
            list(synthetic_pairs(height, width, frames)),
            1,
        )

    results = []
    header = (
        f"{'pairs':<20} {'method':<14} {'EPE':>6} {'EPE conf.':>9} {'conf. share':>11} "
        f"{'> 3 px':>7} {'frames/s CPU':>12} {'wall':>7}"
    )
    print(
        f"optical flow on {cpu_name()} ({os.cpu_count()} cores), "
        f"{cv2.getNumThreads()} OpenCV thread(s), OpenCV {cv2.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )
    print(header)
    for pair_name, (pairs, pair_repeats) in pair_sets.items():
        for method in methods:
            result = benchmark(pairs, METHODS[method], pair_repeats)
            results.append({"pairs": pair_name, "method": method, **result})
            print(
                f"{pair_name:<20} {method:<14} {result['epe']:>6.2f} "
                f"{result['epe_confident']:>9.2f} {result['confident_share']:>11.0%} "
                f"{result['over_3px']:>7.1%} {result['fps_cpu']:>12.1f} {result['fps_wall']:>7.1f}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 frames at 64x128 and 128x256")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=", ".join(METHODS))
    parser.add_argument("--sizes", nargs="+", default=None, help="synthetic sizes HxW")
    parser.add_argument("--frames", type=int, default=None, help="synthetic frames per size")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the real pair")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (cv2)")
    parser.add_argument("--skip_real", action="store_true", help="only the synthetic pairs")
    args = parser.parse_args(argv)
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    frames = args.frames if args.frames is not None else (3 if args.quick else 10)
    if frames < 1:
        raise UserError(f"--frames must be >= 1, got {frames}")
    if args.repeats < 1 or args.threads < 1:
        raise UserError("--repeats and --threads must be >= 1")
    default_sizes = ["64x128", "128x256"] if args.quick else ["64x128", "128x256", "256x512"]
    sizes = [_parse_size(text) for text in (args.sizes or default_sizes)]
    # One thread by default, as each flow worker runs; the caller's setting is restored.
    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(args.threads)
    try:
        results = _measure(args.methods, sizes, frames, args.repeats, not args.skip_real)
    finally:
        cv2.setNumThreads(threads_before)
    if args.json:
        write_json_atomic(
            args.json,
            {
                "date": datetime.date.today().isoformat(),
                "machine": {
                    "cpu": cpu_name(),
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "opencv": cv2.__version__,
                "threads": args.threads,
                "confident_above": CONFIDENT,
                "bad_epe_px": BAD_EPE,
                "synthetic_frames": frames,
                "methods": {name: repr(METHODS[name]) for name in args.methods},
                "results": results,
            },
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
