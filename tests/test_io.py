"""keras_mtl.io: atomic writes keep nothing half-written and give files ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from keras_mtl.io import save_atomic, write_json_atomic, write_text_atomic


def test_atomic_files_get_the_umask_mode_not_mkstemps_private_one(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)  # read it back unchanged
    write_text_atomic(tmp_path / "a" / "note.txt", "hello")
    write_json_atomic(tmp_path / "report.json", {"b": 1, "a": 2})
    for path in (tmp_path / "a" / "note.txt", tmp_path / "report.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert (tmp_path / "a" / "note.txt").read_text() == "hello"
    assert list(json.loads((tmp_path / "report.json").read_text())) == ["a", "b"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")

    def failing_save(path: str) -> None:
        with open(path, "w") as stream:
            stream.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic(failing_save, target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
