"""Work done inside a worker that holds the model: one inversion, or one batch of transfers.

Plain functions of a loaded `SVDModel` (no Ray, no Prefect), so they run the same in a Ray actor,
in a bare loop and in tests. Each writes its artifact into the store (mtcore writes every file
aside and renames it) and returns the catalog row(s); an exception fails only the row(s) it
concerns and is recorded as their error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mtcore.catalog import store_path
from mtcore.embedding import load_embedding, save_embedding
from mtcore.errors import InputError
from mtcore.inversion import invert, read_reference
from mtcore.models import SVDModel
from mtcore.sampling import transfer
from mtcore.videoio import read_image, write_mp4
from tasks.rows import embedding_row, one_line, transfer_row

if TYPE_CHECKING:  # items are data from the plan; importing it here at run time would be a cycle
    from tasks.plan import InversionJob, TransferJob


def run_inversion(model: SVDModel, job: InversionJob, out: Path, worker: str) -> dict:
    """Invert one reference video into OUT/<job.path>; returns its embeddings row."""
    t0 = time.perf_counter()
    num_frames = model.resolve(job.config).num_frames
    try:
        frames = read_reference(model, job.reference_path, job.config)
        embedding, _ = invert(model, frames, job.config, reference_sha256=job.reference_sha256)
        save_embedding(embedding, out / job.path)
        error = None
    except Exception as exc:  # one failed row, the run goes on
        error = one_line(exc)
    return embedding_row(job, model.model_id, num_frames, error, time.perf_counter() - t0, worker)


def run_transfers(model: SVDModel, jobs: list[TransferJob], out: Path, worker: str) -> list[dict]:
    """Sample transfers that share one embedding and config in one UNet call; one row per job."""
    t0 = time.perf_counter()
    errors: dict[int, str] = {}
    images = {}
    try:
        if len({(j.embedding_key, j.config) for j in jobs}) != 1:
            raise ValueError("a transfer batch must share one embedding and one config")
        config = jobs[0].config
        embedding = load_embedding(store_path(out, "embeddings", jobs[0].embedding_key), model_id=model.model_id,
                                   token_dim=model.token_dim)
        full = model.resolve(config, num_frames=embedding.num_frames)
        for i, job in enumerate(jobs):
            try:
                images[i] = read_image(job.target_path, full.height, full.width)
            except InputError as exc:  # one unreadable target fails alone
                errors[i] = one_line(exc)
        if images:
            order = sorted(images)
            videos = transfer(model, [images[i] for i in order], embedding, config, seeds=[jobs[i].seed for i in order])
            for i, video in zip(order, videos):
                try:
                    write_mp4(video, out / jobs[i].video_path, fps=config.fps)
                except Exception as exc:
                    errors[i] = one_line(exc)
    except Exception as exc:  # the whole batch failed (embedding unreadable, sampling error)
        message = one_line(exc)
        errors.update({i: errors.get(i, message) for i in range(len(jobs))})
    per_item = (time.perf_counter() - t0) / len(jobs)
    return [transfer_row(job, model.model_id, errors.get(i), per_item, worker) for i, job in enumerate(jobs)]
