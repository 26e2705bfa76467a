"""Writing files so that a crash never leaves a half-written one: write aside, then rename.

Every artifact (embedding, video), catalog part and checkpoint goes through `atomic_write`. The
temporary name says which process wrote it (`.<stem>.tmp-<host>-<pid>-<uuid8><suffix>`), so the
leftovers of a killed process can be told from files another live process is writing
(`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from mtcore.errors import InputError

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())
_TMP_RE = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}(\.[^.]*)?$")
FOREIGN_TMP_AGE = 24 * 3600.0
"""A temporary file written by another host is removed once it is this old (seconds)."""


def _tag() -> str:
    """`<host>-<pid>-<uuid8>`: which process names a temporary file, unique per call."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_CHUNK = 1 << 20  # 1 MiB: reference videos can be large, never read one whole into memory


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(f: BinaryIO) -> str:
    """Hex sha256 of what an open binary file yields, read in 1 MiB chunks (local files, fsspec files)."""
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def require_file(path: str | os.PathLike) -> Path:
    """The path of an input file that exists and is a file, else an InputError naming it.

    Cheap (no heavy imports): commands check their inputs with it before loading a model.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if not p.is_file():
        raise InputError(p, "not a file")
    return p


def temporary_name(path: Path, suffix: str | None = None) -> Path:
    """The hidden temporary sibling a write of `path` goes to first: `.<stem>.tmp-<host>-<pid>-<uuid8><suffix>`."""
    return path.with_name(f".{path.stem}.tmp-{_tag()}{path.suffix if suffix is None else suffix}")


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any], suffix: str | None = None) -> Path:
    """Call write_fn(tmp) on a hidden sibling file, then rename it to `path` (atomic on POSIX).

    The tmp name is `.<stem>.tmp-<host>-<pid>-<uuid8><suffix>`, suffix defaulting to path's own
    (ffmpeg picks the container from it). On any exception the tmp file is removed and the
    exception re-raised.
    """
    path = Path(path)
    with atomic_path(path, suffix) as tmp:
        write_fn(tmp)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """The hidden temporary sibling (`temporary_name`) to write `path` to: renamed onto it when the block
    succeeds, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files under `root` that no live process is writing; returns them.

    A tmp file is stale when the process that named it (this host, its pid) is gone, or when it
    came from another host and is older than FOREIGN_TMP_AGE.
    """
    removed = []
    for path in Path(root).rglob(".*.tmp-*"):
        match = _TMP_RE.match(path.name)
        if not match or not path.is_file():
            continue
        if match["host"] == _HOST:
            stale = not process_alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - path.stat().st_mtime > FOREIGN_TMP_AGE
            except FileNotFoundError:
                continue
        if stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


__all__ = ["sha256_file", "sha256_stream", "atomic_write", "atomic_path", "write_text", "remove_stale_temporaries", "process_alive", "temporary_name"]
