"""Writes a copy of a Cityscapes-layout dataset at one smaller size: a pre-resized training cache.

Reading a 1024x2048 frame costs the training pipeline far more than augmenting it: decoding five
full-size PNGs and converting them to float tensors take ~80% of the per-frame time, the
augmentation's single sampling at `img_resize` the rest (`benchmarks/input_pipeline.py
--pre_resize`, docs/data.md). A copy at about the training size removes most of that cost, and
since it keeps the layout, `train.py --data_path COPY` (and every other tool) reads it unchanged.

Per modality (`r_x`, `r_y` = new / old width and height of that file):

- `rgb`: area interpolation when shrinking, bilinear when enlarging.
- flow (`u + 128`, `v + 128`, confidence, uint8): resampled the same way; u and v are multiplied
  by `r_x` and `r_y` (pixels of the new grid) and stored again with the 128 offset, rounded.
- semantic (`*_gtFine_labelTrainIds.png` and/or `*_gtFine_labelIds.png`), motion: nearest.
- disparity (uint16, `d = (p - 1) / 256`, 0 invalid): nearest, `d` multiplied by `r_x` (pixels
  of the new grid); the camera JSON's `fx`, `u0` are multiplied by `r_x` and `fy`, `v0` by `r_y`,
  so depth `fx * baseline / d` is kept up to the 1/256-pixel quantisation of the new disparity.

Previous frames are not copied (flow is already computed). Each file is written atomically and
existing outputs are skipped unless `--overwrite`, so an interrupted run resumes.

Evaluate on the full-size dataset: the copy's labels are at the smaller size.

Command line:
    python -m data_tools.resize --data_path SRC --out DST --size H W [--splits train val]
                                [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_tools import (
    map_jobs,
    read_png,
    require_data_path,
    write_json_atomic,
    write_png_atomic,
)
from keras_mtl.data.layout import (
    FIVE_CLASS_SUFFIX,
    FLOW_OFFSET,
    LABEL_IDS_SUFFIX,
    FrameFiles,
    discover_frames,
    splits_with_flow,
)
from keras_mtl.errors import UserError, run_cli

# Camera JSON keys scaled with the width and with the height.
_WIDTH_KEYS = ("fx", "u0")
_HEIGHT_KEYS = ("fy", "v0")


@dataclass(frozen=True)
class _FrameJob:
    """One frame: its source files and where they go (paths as str, picklable)."""

    sources: dict[str, str]  # modality -> source path
    outputs: dict[str, str]  # modality -> output path
    size: tuple[int, int]


def _smooth_interpolation(old: tuple[int, int], new: tuple[int, int]) -> int:
    shrinking = new[0] <= old[0] and new[1] <= old[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 to `size` (H, W): area when shrinking, bilinear otherwise."""
    interpolation = _smooth_interpolation(image.shape[:2], size)
    return cv2.resize(image, (size[1], size[0]), interpolation=interpolation)


def resize_flow(stored: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stored flow (uint8 `u + 128`, `v + 128`, confidence) at `size`, vectors rescaled."""
    ratio_y, ratio_x = size[0] / stored.shape[0], size[1] / stored.shape[1]
    values = stored[..., :3].astype(np.float32)
    values[..., :2] -= FLOW_OFFSET
    interpolation = _smooth_interpolation(stored.shape[:2], size)
    resized = cv2.resize(values, (size[1], size[0]), interpolation=interpolation)
    resized[..., 0] *= ratio_x
    resized[..., 1] *= ratio_y
    resized[..., :2] += FLOW_OFFSET
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map (any integer dtype) at `size`, nearest neighbour."""
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def resize_disparity(stored: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stored disparity (uint16 `p = 256 d + 1`, 0 invalid) at `size`, in pixels of the new grid."""
    ratio_x = size[1] / stored.shape[1]
    nearest = resize_labels(stored, size)
    valid = nearest > 0
    disparity = (nearest.astype(np.float64) - 1.0) / 256.0 * ratio_x
    packed = np.clip(np.rint(disparity * 256.0) + 1.0, 1, np.iinfo(np.uint16).max)
    return np.where(valid, packed, 0).astype(np.uint16)


def resize_camera(camera: dict, old_size: tuple[int, int], size: tuple[int, int]) -> dict:
    """The camera JSON for the resized disparity: intrinsics in pixels of the new grid."""
    ratio_y, ratio_x = size[0] / old_size[0], size[1] / old_size[1]
    resized = json.loads(json.dumps(camera))
    intrinsic = resized.get("intrinsic", {})
    for keys, ratio in ((_WIDTH_KEYS, ratio_x), (_HEIGHT_KEYS, ratio_y)):
        for key in keys:
            if key in intrinsic:
                intrinsic[key] = float(intrinsic[key]) * ratio
    return resized


def _resize_frame(job: _FrameJob) -> None:
    size = job.size
    disparity_size = None
    for modality, source in job.sources.items():
        output = job.outputs[modality]
        if modality == "camera":
            continue
        if modality == "rgb":
            write_png_atomic(output, resize_rgb(read_png(source, rgb=True), size), rgb=True)
        elif modality == "flow":
            stored = read_png(source, rgb=True)
            write_png_atomic(output, resize_flow(stored, size), rgb=True)
        elif modality == "disparity":
            stored = read_png(source)
            if stored.dtype != np.uint16 or stored.ndim != 2:
                raise UserError(f"{source}: disparity must be a 16-bit single-channel PNG")
            disparity_size = stored.shape[:2]
            write_png_atomic(output, resize_disparity(stored, size))
        else:
            write_png_atomic(output, resize_labels(read_png(source), size))
    # The camera last: it depends on the disparity's size, and its presence marks a done frame.
    source = job.sources["camera"]
    try:
        camera = json.loads(Path(source).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{source}: not a readable camera JSON ({error})") from None
    if disparity_size is None:
        disparity_size = read_png(job.sources["disparity"]).shape[:2]
    write_json_atomic(job.outputs["camera"], resize_camera(camera, disparity_size, size))


def _frames_of_split(root: Path, split: str) -> list[FrameFiles]:
    """The split's frames, with 5-class labels if every frame has them, else labelIds."""
    try:
        return discover_frames(root, split, semantic_classes=5)
    except UserError as five_class_error:
        try:
            return discover_frames(root, split, semantic_classes=19)
        except UserError:
            raise five_class_error from None


def _frame_job(root: Path, out: Path, frame: FrameFiles, size: tuple[int, int]) -> _FrameJob:
    sources = {
        "rgb": frame.rgb,
        "flow": frame.flow,
        "motion": frame.motion,
        "disparity": frame.disparity,
    }
    # Both label files when both exist: the copy serves 5- and 19-class training alike.
    label_dir, stem = frame.semantic.parent, frame.stem
    for name, suffix in (("semantic_5", FIVE_CLASS_SUFFIX), ("semantic_19", LABEL_IDS_SUFFIX)):
        path = label_dir / f"{stem}{suffix}"
        if path.is_file():
            sources[name] = path
    sources["camera"] = frame.camera
    return _FrameJob(
        sources={k: str(v) for k, v in sources.items()},
        outputs={k: str(out / Path(v).relative_to(root)) for k, v in sources.items()},
        size=size,
    )


def resize_dataset(
    data_path: str | os.PathLike,
    out: str | os.PathLike,
    size: Sequence[int],
    splits: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Writes the frames of `splits` under `out` at `size` (H, W), in the same layout.

    Args:
        data_path: source dataset root (Cityscapes multitask layout, flow included).
        out: destination root; created if needed. Must not be `data_path` or inside it.
        size: (height, width) of every output image.
        splits: splits to copy; None = every split with frames and flow (not Cityscapes'
            `test`, which has no flow).
        workers: processes (None = CPU count, at most 8; 1 = in this process).
        overwrite: rewrite frames already in `out`.
        progress: show a tqdm progress bar.

    Returns:
        `{"written": frames written, "skipped": frames already present}`.

    Raises:
        UserError: bad size, `out` inside `data_path`, or a source problem (named).
    """
    root = require_data_path(data_path).resolve()
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"--size must be two integers H W, got {size!r}") from None
    if height <= 0 or width <= 0:
        raise UserError(f"--size must be positive, got {height} {width}")
    out_root = Path(out).resolve()
    if out_root == root or root in out_root.parents:
        raise UserError(f"--out {out} is inside --data_path {data_path}; choose another folder")
    splits = list(splits) if splits else splits_with_flow(root)
    if not splits:
        raise UserError(
            f"--data_path {data_path}: no split has both frames and flow; check the path, or "
            "compute flow with `python -m data_tools.flow`"
        )
    jobs, skipped = [], 0
    for split in splits:
        for frame in _frames_of_split(root, split):
            job = _frame_job(root, out_root, frame, (height, width))
            if not overwrite and Path(job.outputs["camera"]).is_file():
                skipped += 1
                continue
            jobs.append(job)
    for _ in map_jobs(_resize_frame, jobs, workers=workers, desc="resize", progress=progress):
        pass
    return {"written": len(jobs), "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.resize",
        description="Copy a Cityscapes-layout dataset at one size (flow vectors, disparity and "
        "camera intrinsics rescaled): a pre-resized cache that makes training input cheaper.",
    )
    parser.add_argument("--data_path", required=True, help="source dataset root")
    parser.add_argument("--out", required=True, help="destination root (a new folder)")
    parser.add_argument(
        "--size", required=True, nargs=2, type=int, metavar=("H", "W"), help="output size"
    )
    parser.add_argument(
        "--splits", nargs="+", default=None, help="default: every split that has flow"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing frames")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    counts = resize_dataset(
        args.data_path,
        args.out,
        args.size,
        args.splits,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(f"resize: wrote {counts['written']} frames, skipped {counts['skipped']} existing")
    return 0


if __name__ == "__main__":
    run_cli(main)
