"""Atomic file writes: a temp file in the same folder, then `os.replace`.

An interrupted run never leaves a half-written file under the final name. A process killed
while writing leaves its temp file behind: temp files are named `.<name>.<random>.partial`
(`.<stem>.<random>.partial<suffix>` for `save_atomic`, whose writers want the suffix), and
`remove_partial_writes` deletes them when a run starts in the folder. TensorFlow-free, so
`data_tools` uses it too.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTIAL_MARKER = ".partial"
# Temp files of these writers: `.<name>.<8 random chars>.partial[<suffix>]`, and those written
# before the marker existed, `.<name>.<8 random chars>.tmp` and `.<stem>.<8 random chars>.keras`.
_PARTIAL_NAME = re.compile(
    r"^\..+\.[a-z0-9_]{8}(" + re.escape(PARTIAL_MARKER) + r"(\.\w+)?|\.tmp|\.keras)$"
)


@functools.cache
def _new_file_mode() -> int:
    """The mode `open()` gives a new file under the process umask (mkstemp's is 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically, creating the parent folder if needed.

    The file gets the permissions a plain `open()` would give it, so that datasets and exports
    can be shared; the temp file's private mode is not kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_MARKER)
    try:
        os.fchmod(handle, _new_file_mode())
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, sort_keys: bool = True) -> None:
    """Writes `data` as indented JSON to `path` atomically (keys sorted: stable diffs)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def save_atomic(save_fn: Callable[[str], None], path: str | os.PathLike) -> None:
    """Calls `save_fn(tmp_path)` with a temp path of the same suffix beside `path`, then renames.

    For writers that take a path (`model.save`): the temp name does not exist when `save_fn`
    runs, since Keras refuses to overwrite without asking.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=PARTIAL_MARKER + path.suffix, dir=path.parent
    )
    os.close(handle)
    os.remove(tmp)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def is_partial_write(path: str | os.PathLike) -> bool:
    """True for the name of a temp file these writers use (see the module docstring)."""
    return bool(_PARTIAL_NAME.match(Path(path).name))


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temp files that interrupted atomic writes left directly in `folder`.

    Call it only while no other process writes there (a run holds the folder's lock).

    Args:
        folder: the folder (a missing folder holds nothing).

    Returns:
        The paths removed.

    Example:

    ```python
    remove_partial_writes("runs/a")  # [PosixPath("runs/a/.checkpoint.k2j4h5g6.partial.keras")]
    ```
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_partial_write(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
