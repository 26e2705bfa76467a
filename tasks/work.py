"""Work done inside a worker that holds the model: one inversion, or one batch of transfers.

Plain functions of a loaded `SVDModel` (no Ray, no Prefect), so they run the same in a Ray actor,
in a bare loop and in tests. Each writes its artifact atomically into the store and returns the
catalog row(s); an exception fails only the row(s) it concerns and is recorded as their error.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from mtcore.catalog import atomic_write, store_path
from mtcore.config import InversionConfig, TransferConfig
from mtcore.embedding import load_embedding, save_embedding
from mtcore.errors import InputError
from mtcore.inversion import invert
from mtcore.models import SVDModel
from mtcore.sampling import transfer
from mtcore.videoio import read_image, read_video, write_mp4
from tasks.plan import InversionJob, TransferJob
from tasks.rows import embedding_row, one_line, transfer_row


def resolved(model: SVDModel, cfg: InversionConfig | TransferConfig):
    """The config with frame count and size filled in from the model's defaults."""
    h, w = model.default_size
    return replace(cfg, num_frames=cfg.num_frames or model.default_num_frames, height=cfg.height or h, width=cfg.width or w)


def invert_job(model: SVDModel, job: InversionJob, cfg: InversionConfig, out: Path, worker: str) -> dict:
    """Invert one reference video into OUT/<job.path>; returns its embeddings row."""
    t0 = time.perf_counter()
    full = resolved(model, cfg)
    try:
        frames = read_video(job.reference_path, full.num_frames, full.height, full.width, cfg.frame_sampling)
        emb, _ = invert(model, frames, cfg, reference_sha256=job.reference_sha256)
        atomic_write(Path(out) / job.path, lambda tmp: save_embedding(emb, tmp))
        error = None
    except Exception as exc:  # one failed row, the run goes on
        error = one_line(exc)
    return embedding_row(job, model.identity, cfg, full.num_frames, error, time.perf_counter() - t0, worker)


def transfer_jobs(model: SVDModel, jobs: list[TransferJob], cfg: TransferConfig, out: Path, worker: str) -> list[dict]:
    """Sample a batch of transfers that share one embedding in one UNet call; one row per job."""
    t0 = time.perf_counter()
    out = Path(out)
    full = resolved(model, cfg)
    errors: dict[int, str] = {}
    images = {}
    try:
        emb_key = {j.embedding_key for j in jobs}
        if len(emb_key) != 1:
            raise ValueError("a transfer batch must share one embedding")
        emb = load_embedding(store_path(out, "embeddings", emb_key.pop()), model_id=model.identity, token_dim=model.token_dim)
        for i, job in enumerate(jobs):
            try:
                images[i] = read_image(job.target_path, full.height, full.width)
            except InputError as exc:  # one unreadable target fails alone
                errors[i] = one_line(exc)
        if images:
            order = sorted(images)
            videos = transfer(model, [images[i] for i in order], emb, cfg, seeds=[jobs[i].seed for i in order])
            for i, video in zip(order, videos):
                try:
                    atomic_write(out / jobs[i].video_path, lambda tmp, v=video: write_mp4(v, tmp, fps=cfg.fps))
                except Exception as exc:
                    errors[i] = one_line(exc)
    except Exception as exc:  # the whole batch failed (embedding unreadable, sampling error)
        message = one_line(exc)
        errors.update({i: errors.get(i, message) for i in range(len(jobs))})
    per_item = (time.perf_counter() - t0) / len(jobs)
    return [transfer_row(job, model.identity, errors.get(i), per_item, worker) for i, job in enumerate(jobs)]
