"""Atomic writes: a file is either the old one or the complete new one, never half-written."""

from __future__ import annotations

import subprocess
import sys
import threading
from unittest import mock

import pytest

from mtcore.io.fileio import atomic_write, remove_stale_temporaries
from mtcore.io.outroot import check_output_root


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


def test_check_output_root_from_many_runs_at_once(tmp_path):
    # runs started together on one output folder each probe it; one run's probe must never be
    # taken for (and removed as) another's
    out = tmp_path / "out"
    errors = []

    def probe():
        try:
            for _ in range(200):
                check_output_root(out)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=probe) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(out.iterdir()) == []


def test_a_killed_runs_write_probe_is_a_stale_temporary(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = []
    with mock.patch("mtcore.io.fileio.os.getpid", return_value=dead.pid), \
         mock.patch("mtcore.io.fileio.Path.unlink", lambda self, missing_ok=False: names.append(self.name)):
        check_output_root(tmp_path)
    (name,) = names
    assert (tmp_path / name).exists()
    assert remove_stale_temporaries(tmp_path) == [tmp_path / name]
    assert list(tmp_path.iterdir()) == []
