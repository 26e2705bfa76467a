"""Atomic writes: a file is either the old one or the complete new one, never half-written."""

from __future__ import annotations

import pytest

from mtcore.fileio import atomic_write


def test_atomic_write_keeps_suffix_and_renames(tmp_path):
    target = tmp_path / "sub" / "clip.mp4"
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"video")

    assert atomic_write(target, write) == target
    assert target.read_bytes() == b"video"
    (tmp,) = seen
    assert tmp.parent == target.parent and tmp.name.startswith(".clip.tmp-") and tmp.suffix == ".mp4"
    assert not tmp.exists()


def test_atomic_write_removes_tmp_on_error_and_keeps_old_file(tmp_path):
    target = tmp_path / "x.parquet"
    target.write_bytes(b"old")

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]
