"""motion-transfer's ML core: motion-textual inversion on Stable Video Diffusion (diffusers).

Never imports prefect or ray: usable and testable alone. Sub-packages by concern, each importing
only those before it in this order (tests/test_layering.py enforces it):

    errors    the one error type a user acts on (this package's root, importable by all)
    io        bytes in and out: storage (local or s3://), atomic writes, video and image files, YAML
    method    the method: loading the model, routing, the motion embedding, inversion, transfer
    data      the data model: manifests, pairs, content-addressed keys, Parquet catalogs
    metrics   measuring a transfer (motion fidelity, appearance, temporal consistency)
    eval      looking at results: evaluation tables, the HTML report, contact sheets
    toy       the toy world and the built-in CPU model trained on it

The entry points a library user calls are importable from here (loaded on first use, so that
`import mtcore.errors` stays light):

    model = mtcore.load_model()                          # the built-in model, or a folder / hub id
    frames = mtcore.read_reference(model, "wave.mp4")
    embedding, stats = mtcore.invert(model, frames, mtcore.InversionConfig(steps=300))
    videos = mtcore.transfer(model, [image], embedding)  # (B, F, 3, H, W) in [0, 1]
    manifest = mtcore.load_manifest("manifests/demo.yaml")
    transfers = mtcore.read_table("mt-out", "transfers")  # a pandas DataFrame of a catalog
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Bumped whenever a change alters what an inversion or transfer produces; part of every cache key.
CODE_VERSION = "1"
# Bumped whenever a change alters a metric's value (mtcore.metrics); a new version is computed where missing.
# Here, not in mtcore.metrics, so planning a run knows it without importing OpenCV and scikit-image.
METRICS_VERSION = "1"

# name -> the module that defines it (imported on first use: PEP 562)
_ENTRY_POINTS = {
    "InputError": "mtcore.errors",
    "load_model": "mtcore.method.models",
    "InversionConfig": "mtcore.method.config",
    "TransferConfig": "mtcore.method.config",
    "read_reference": "mtcore.method.inversion",
    "invert": "mtcore.method.inversion",
    "transfer": "mtcore.method.sampling",
    "MotionEmbedding": "mtcore.method.embedding",
    "save_embedding": "mtcore.method.embedding",
    "load_embedding": "mtcore.method.embedding",
    "load_manifest": "mtcore.data.manifest",
    "read_table": "mtcore.data.catalog",
}

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from mtcore.data.catalog import read_table
    from mtcore.data.manifest import load_manifest
    from mtcore.errors import InputError
    from mtcore.method.config import InversionConfig, TransferConfig
    from mtcore.method.embedding import MotionEmbedding, load_embedding, save_embedding
    from mtcore.method.inversion import invert, read_reference
    from mtcore.method.models import load_model
    from mtcore.method.sampling import transfer


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENTRY_POINTS))


__all__ = ["CODE_VERSION", "METRICS_VERSION", *_ENTRY_POINTS]
