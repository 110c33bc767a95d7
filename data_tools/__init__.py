"""Dataset tools: synthetic Cityscapes-format scenes and drives, optical flow, label conversion.

Each tool is a command line (`python -m data_tools.synthetic`, `python -m data_tools.flow`,
`python -m data_tools.labels`) and a set of plain functions. The helpers below are shared by
the tools: every file is written atomically (a temporary file in the destination folder, then
`os.replace`), so an interrupted run never leaves a half-written PNG behind.

None of the tools import TensorFlow.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from keras_mtl.data import layout
from keras_mtl.errors import UserError
from keras_mtl.io import write_bytes_atomic, write_json_atomic

__all__ = [
    "default_workers",
    "find_child_dir",
    "map_jobs",
    "read_png",
    "require_data_path",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_png_atomic",
]


def write_png_atomic(path: str | os.PathLike, image: np.ndarray, *, rgb: bool = False) -> None:
    """Encodes `image` as PNG and writes it atomically.

    Args:
        path: destination `.png` file.
        image: HxW (uint8 or uint16) or HxWx3 uint8 array.
        rgb: True when a 3-channel `image` is in RGB order (it is stored so that any PNG reader
            returns the same RGB order); False for single-channel images.
    """
    if rgb:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    write_bytes_atomic(path, buffer.tobytes())


def read_png(path: str | os.PathLike, *, rgb: bool = False) -> np.ndarray:
    """Reads a PNG unchanged (keeps 16-bit depth); 3-channel images come back in RGB order.

    Raises:
        UserError: the file is missing or is not a readable image.
    """
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"cannot read image {path}: the file is missing or not a valid PNG")
    if rgb:
        if image.ndim != 3 or image.shape[2] < 3:
            raise UserError(f"{path} must be a 3-channel image, got shape {image.shape}")
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    return image


def require_data_path(data_path: str | os.PathLike, flag: str = "--data_path") -> Path:
    """Returns `data_path` as a Path, or raises UserError naming `flag` when it is not a folder."""
    path = Path(data_path)
    if not path.is_dir():
        raise UserError(
            f"{flag} {os.fspath(data_path)!r} is not a folder; point it at the dataset root "
            "(the folder holding leftImg8bit/, gtFine/, ...)"
        )
    return path


def find_child_dir(root: Path, name: str) -> Path | None:
    """`root/name`, matching the folder name case-insensitively (None when absent)."""
    try:
        return layout.find_child_dir(root, name, "folder")
    except UserError:
        return None


def default_workers() -> int:
    """A worker count that leaves the machine usable: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def map_jobs(
    function: Callable[[Any], Any],
    jobs: Sequence[Any],
    *,
    workers: int | None,
    desc: str,
    progress: bool = True,
    chunksize: int = 4,
) -> Iterator[Any]:
    """Yields `function(job)` for every job (in any order) under a tqdm progress bar.

    Args:
        function: a module-level function (it is pickled to spawned processes).
        jobs: picklable arguments, one per call.
        workers: processes (None = `default_workers()`; 1 = in this process).
        desc: progress bar label.
        progress: show the progress bar.
        chunksize: jobs handed to a process at a time.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    with tqdm(total=len(jobs), desc=desc, unit="frame", disable=not progress or not jobs) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield function(job)
                bar.update()
        else:
            # spawn, not fork: TensorFlow or OpenCV threads in the parent do not survive a fork.
            with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for result in pool.imap_unordered(function, jobs, chunksize=chunksize):
                    yield result
                    bar.update()
