"""Model identity: the provenance string recorded in embeddings, cache keys and catalogs.

"hub:<id>@<revision>" for a hub model, "local:<sha256 of the folder's config and weight files>"
for a local folder (led by the family for families other than SVD: "wan-i2v:local:<sha256>"; a folder
of an unsupported pipeline class is refused here, so a run refuses it while planning), so a retrained local model never reuses stale artifacts. A model in a bucket
(s3://bucket/models/svd-xt) is a local folder once fetched into this machine's cache
(mtcore.io.modelcache), so it has the identity of the same folder on disk. Light on purpose
(no torch): planning a run, which only hashes, must not pay for importing the ML stack.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from mtcore.errors import InputError
from mtcore.method.family import family_of_folder, identity_prefix
from mtcore.io.locations import is_url, normalize

# The CPU default: the trained toy model (see docs/toy-model.md), a complete SVD pipeline folder.
DEFAULT_MODEL = Path(__file__).parents[1] / "assets" / "toy-svd"

# Files whose bytes define a local model (configs and weights); anything else in the folder is ignored.
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".txt")


_HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?")


def is_local(model: str | os.PathLike) -> bool:
    """A model reference is a local folder if it exists on disk (else it is a hub id)."""
    return Path(model).expanduser().exists()


def local_candidate(value: str, base: str | os.PathLike) -> Path | None:
    """The folder a model reference names when it is a local one (see `locate_model`), else None."""
    local = Path(os.path.normpath(Path(base) / Path(value).expanduser()))
    looks_like_path = value in (".", "..") or value.startswith(("./", "../", "/", "~")) or os.path.isabs(value)
    return local if looks_like_path or local.exists() else None


def locate_model(value: str, base: str | os.PathLike) -> tuple[str, bool]:
    """Where a model reference points: (absolute folder, True) or (hub id, False).

    The one rule for every place a user names a model (manifest `model:`, `--model`): a value that
    looks like a path (".", "..", "./x", "../x", "/x", "~/x") or names an existing folder relative to
    `base` is a local folder, which must exist; a URL (s3://bucket/models/x) is a model in a bucket;
    anything else must look like a hub id ("org/name").
    InputError says which rule failed.
    """
    if is_url(value):  # a bucket: fetched into the local cache when loaded or identified
        return normalize(value), False
    local = local_candidate(value, base)
    if local is not None:
        if not local.is_dir():
            state = "is not a folder" if local.exists() else "not found"
            raise InputError(repr(value), f"local model folder {state} ({local})")
        return str(local), True
    if not _HUB_ID_RE.fullmatch(value):
        raise InputError(repr(value), "neither a local folder nor a hub id like 'org/name'")
    return value, False


@lru_cache(maxsize=32)
def _folder_hash(folder: str, stamp: tuple) -> str:
    # `stamp` (sizes and mtimes) is only the cache key: a changed file re-hashes.
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in _IDENTITY_SUFFIXES:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def model_identity(model: str | os.PathLike, revision: str | None = None) -> str:
    """Provenance string for a model reference (see module docstring).

    A hub id without a revision is recorded as "@main": pin `revision` to a commit for
    reproducible cache keys when the hub branch may move.
    """
    if is_url(model):
        from mtcore.io.modelcache import fetch_model

        model = fetch_model(str(model))
    if is_local(model):
        root = Path(model).expanduser().resolve()
        if not (root / "model_index.json").is_file():
            raise InputError(root, "not a diffusers pipeline folder (no model_index.json)")
        stamp = tuple(
            (str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in _IDENTITY_SUFFIXES
        )
        return identity_prefix(family_of_folder(root)) + "local:" + _folder_hash(str(root), stamp)
    return f"hub:{model}@{revision or 'main'}"
