"""Catalog rows of the embeddings and transfers tables, and errors made into one line.

Light (no torch): the flow's driver builds failed rows without importing the ML stack.
"""

from __future__ import annotations

import datetime as dt
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from mtcore.method.config import config_json
from mtcore.errors import InputError

if TYPE_CHECKING:  # items are data from the plan; importing it here at run time would be a cycle
    from tasks.items import InversionJob, TransferJob


def now() -> dt.datetime:
    """The current time, UTC (catalog timestamps are timezone-aware)."""
    return dt.datetime.now(dt.timezone.utc)


def one_line(exc: BaseException) -> str:
    """The error as one line: user errors as they are, others with their type and origin."""
    if isinstance(exc, InputError):
        return str(exc).splitlines()[0]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}{where}"


def embedding_row(job: InversionJob, num_frames: int | None, error: str | None, seconds: float, worker: str) -> dict:
    """The embeddings-table row of one inversion attempt (ok when `error` is None)."""
    return {
        "embedding_key": job.key, "reference_id": job.reference_id, "reference_sha256": job.reference_sha256,
        "model_id": job.model.model_id, "num_frames": num_frames, "tokens_per_frame": job.config.tokens_per_frame,
        "path": None if error else job.path, "status": "failed" if error else "ok", "error": error,
        "seconds": float(seconds), "worker": worker, "created_at": now(), "model": job.model.model,
        "inversion_config": config_json(job.config), "reference_path": job.reference_path,
    }


def transfer_row(job: TransferJob, error: str | None, seconds: float, worker: str) -> dict:
    """The transfers-table row of one transfer attempt (ok when `error` is None)."""
    embedding = job.embedding
    return {
        "transfer_key": job.key, "embedding_key": embedding.key, "reference_id": embedding.reference_id,
        "target_id": job.target_id, "target_sha256": job.target_sha256, "seed": int(job.seed),
        "model_id": embedding.model.model_id, "video_path": None if error else job.video_path,
        "status": "failed" if error else "ok", "error": error, "seconds": float(seconds),
        "worker": worker, "created_at": now(), "model": embedding.model.model,
        "inversion_config": config_json(embedding.config), "transfer_config": config_json(job.config),
        "reference_path": embedding.reference_path, "target_path": job.target_path,
    }


def metrics_row(job: TransferJob, metrics: dict, worker: str) -> dict:
    """The metrics-table row of one measured transfer (`metrics` from mtcore.metrics.timed_metrics)."""
    return {"transfer_key": job.key, **metrics, "worker": worker, "created_at": now()}
