"""keras_mtl.io: atomic writes keep nothing half-written and give files ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from keras_mtl.io import (
    is_partial_write,
    remove_partial_writes,
    save_atomic,
    write_json_atomic,
    write_text_atomic,
)


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


def test_temp_files_of_interrupted_writes_are_recognised(tmp_path):
    names = [".checkpoint.k2j4h5g6.partial.keras", ".history.csv.ab_d1234.partial"]
    names += [".history.csv.abcd1234.tmp", ".model_best.abcd1234.keras"]  # earlier naming
    kept = ["checkpoint.keras", "run.lock", ".model_best.ab.keras", "notes.partial"]
    for name in names + kept:
        (tmp_path / name).write_text("x")
    assert all(is_partial_write(name) for name in names)
    assert sorted(p.name for p in remove_partial_writes(tmp_path)) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_the_writers_temp_names_are_recognised(tmp_path, monkeypatch):
    temp_names = []
    real_replace = os.replace

    def recording_replace(source, target):
        temp_names.append(os.path.basename(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_text_atomic(tmp_path / "history.csv", "epoch\n")
    save_atomic(lambda path: open(path, "w").close(), tmp_path / "checkpoint.keras")
    assert len(temp_names) == 2 and all(is_partial_write(name) for name in temp_names)
    assert temp_names[1].endswith(".partial.keras")  # Keras wants the suffix
