"""Models in a bucket (`model: s3://bucket/models/svd-xt`): a local copy per machine, downloaded once.

`fetch_model(url)` lists the model's objects (one listing: names, sizes, ETags), and returns the local
folder `<cache>/<key>`, where the key is the sha256 of that listing: the same objects give the same
folder, replaced or added objects a new one. The first caller on a machine downloads; every other
process or thread asking for the same model at once waits on a lock file (`fcntl.flock`) and then finds
the folder there. A download goes to a hidden sibling folder renamed into place once every file has its
listed size, so the folder is complete or absent, even after a crash. The cache lives in MT_MODEL_CACHE,
else ~/.cache/motion-transfer/models (per node: nodes share nothing).

A missing model (nothing under the URL, or no model_index.json) and a partial one (a component that
model_index.json names with no folder, or a model component without a weights file) are refused with
one line, before anything is downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path, PurePosixPath

from mtcore.errors import InputError
from mtcore.io.locations import normalize
from mtcore.io.storage import input_error, storage

log = logging.getLogger(__name__)

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")
"""Suffixes of weight files: a model component needs one."""
SETTINGS_ONLY = ("scheduler_config.json", "preprocessor_config.json", "tokenizer_config.json")
"""A component folder holding one of these instead of a config.json has no weights (a scheduler, a
feature extractor, a tokenizer)."""


def cache_root() -> Path:
    """Where models are cached on this machine."""
    return Path(os.environ.get("MT_MODEL_CACHE") or Path.home() / ".cache" / "motion-transfer" / "models")


def listing(url: str) -> dict[str, tuple[int, str]]:
    """relative path -> (size, ETag) of every object under `url` (one listing)."""
    store = storage(url)
    try:
        found = store.fs.find(store.path(), detail=True)
    except FileNotFoundError:
        found = {}
    except Exception as exc:  # credentials, endpoint, permissions
        raise input_error(url, exc) from None
    base = store.path().rstrip("/") + "/"
    return {name[len(base):]: (int(info.get("size") or 0), str(info.get("ETag") or info.get("etag") or ""))
            for name, info in found.items() if name.startswith(base) and info.get("type", "file") == "file"}


def check_complete(url: str, files: dict[str, tuple[int, str]], index: dict) -> None:
    """InputError (one line) when the listing lacks a component of model_index.json or its weights."""
    missing = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[:1] == [None]:
            continue
        inside = [PurePosixPath(rel).name for rel in files if rel.startswith(f"{name}/")]
        if not inside:
            missing.append(f"{name}/ (no files)")
        elif "config.json" in inside and not any(n.endswith(WEIGHTS) for n in inside):
            missing.append(f"{name}/ (no weights file)")
        elif "config.json" not in inside and not any(n in SETTINGS_ONLY for n in inside):
            missing.append(f"{name}/ (no config)")
    if missing:
        raise InputError(url, f"incomplete model: missing {', '.join(missing)}; upload the whole pipeline folder")


def fetch_model(url: str) -> Path:
    """The local folder holding the model at `url` (see the module): cached, or downloaded now."""
    url = normalize(url)
    files = listing(url)
    if not files:
        raise InputError(url, "no model there (nothing under this location)")
    if "model_index.json" not in files:
        raise InputError(url, "not a diffusers pipeline (no model_index.json under this location)")
    key = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:32]
    root = cache_root()
    folder = root / key
    if (folder / "model_index.json").is_file():
        return folder
    store = storage(url)
    try:
        index = json.loads(store.read_bytes("model_index.json"))
    except (ValueError, OSError) as exc:
        raise InputError(url, f"model_index.json unreadable ({exc})") from None
    check_complete(url, files, index)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{key}.lock"):
        if (folder / "model_index.json").is_file():  # another process downloaded it while this one waited
            return folder
        for stale in root.glob(f".{key}.partial-*"):  # a crashed download: the lock is ours now
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f".{key}.partial-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        try:
            for rel, (size, _) in sorted(files.items()):
                local = partial / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                store.fs.get_file(store.path(rel), str(local))
                if local.stat().st_size != size:
                    raise InputError(url, f"{rel}: downloaded {local.stat().st_size} bytes, listed {size} "
                                          "(replaced while downloading?); run again")
            os.rename(partial, folder)
        except InputError:
            raise
        except Exception as exc:
            raise input_error(url, exc) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        log.info("model %s: downloaded %d files (%.1f MB) into %s in %.1f s", url, len(files),
                 sum(s for s, _ in files.values()) / 2**20, folder, time.perf_counter() - t0)
    return folder


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one download per machine; the others wait here
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = ["fetch_model", "cache_root", "listing", "check_complete"]
