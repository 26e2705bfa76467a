"""Writing files so that a crash never leaves a half-written one: write aside, then rename.

Every artifact (embedding, video), catalog part and checkpoint goes through `atomic_write`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any], suffix: str | None = None) -> Path:
    """Call write_fn(tmp) on a hidden sibling file, then rename it to `path` (atomic on POSIX).

    The tmp name is `.<stem>.tmp-<uuid><suffix>`, suffix defaulting to path's own (ffmpeg picks the
    container from it). On any exception the tmp file is removed and the exception re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex}{path.suffix if suffix is None else suffix}")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


__all__ = ["atomic_write", "write_text"]
