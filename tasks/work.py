"""Work done inside a worker that holds the model: an inversion, a batch of transfers, or metrics.

Plain functions of a loaded `MotionModel` (no Ray, no Prefect), so they run the same in a Ray actor,
in a bare loop and in tests. `run_item` serves any work item of the plan (items are data; the work
is a function of a model and an item). Each reads its inputs and writes its artifact through the
storage layer (mtcore.io.storage: a local or shared folder, or object storage, which needs no shared
filesystem: a worker's local disk holds only scratch copies, removed after use) and returns the
catalog row(s); an exception fails only the row(s) it
concerns and is recorded as their error. Metrics are measured on the mp4 as written (what users
get), next to the frames; a metric that cannot be computed costs its row, never the transfer.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import numpy as np

from mtcore.data.catalog import store_relpath
from mtcore.method.embedding import load_embedding, save_embedding
from mtcore.errors import InputError
from mtcore.io.frames import signed_to_uint8
from mtcore.method.inversion import invert_fitting, read_reference
from mtcore.metrics import timed_metrics
from mtcore.metrics.appearance import model_encoder
from mtcore.method.family import MotionModel
from mtcore.method.sampling import transfer
from mtcore.io.storage import local_copy, storage
from mtcore.io.videoio import read_frames, read_image, read_video, write_mp4
from tasks.items import InversionBatch, InversionJob, MetricsBatch, Rows, TransferBatch, TransferJob
from tasks.rows import embedding_row, metrics_row, one_line, transfer_row

log = logging.getLogger(__name__)


def run_item(model: MotionModel, item, out: str, worker: str) -> Rows:
    """Serve one work item of the plan on a loaded model; its catalog rows, per table."""
    if isinstance(item, InversionJob):
        return {"embeddings": run_inversions(model, [item], out, worker)}
    if isinstance(item, InversionBatch):
        return {"embeddings": run_inversions(model, list(item.jobs), out, worker)}
    if isinstance(item, TransferBatch):
        return run_transfers(model, list(item.jobs), out, worker)
    if isinstance(item, MetricsBatch):
        return run_metrics(model, list(item.jobs), out, worker)
    if callable(getattr(item, "run", None)):  # another kind of work (tasks.pool.WorkItem) brings its own
        return item.run(model, out, worker)
    raise TypeError(f"not a work item: {type(item).__name__}")


def run_inversion(model: MotionModel, job: InversionJob, out: str, worker: str) -> dict:
    """Invert one reference video into OUT/<job.path>; returns its embeddings row."""
    return run_inversions(model, [job], out, worker)[0]


def run_inversions(model: MotionModel, jobs: list[InversionJob], out: str, worker: str) -> list[dict]:
    """Invert references that share a config together (mtcore.method.inversion.invert_batch), each into its
    OUT/<job.path>; one embeddings row per job. An unreadable reference fails alone."""
    t0 = time.perf_counter()
    if len({j.config for j in jobs}) != 1:
        raise ValueError("an inversion batch must share one config")
    config = jobs[0].config
    num_frames = model.resolve(config).num_frames
    errors: dict[int, str] = {}
    frames = {}
    for i, job in enumerate(jobs):
        try:
            with local_copy(job.reference_path) as path:
                frames[i] = read_reference(model, path, config)
        except InputError as exc:  # the reference itself: say which manifest entry and field
            errors[i] = located(job.where, exc)
    order = sorted(frames)
    try:
        if order:
            results = invert_fitting(model, [frames[i] for i in order], config, [jobs[i].reference_sha256 for i in order],
                                     captions=[jobs[i].caption or "" for i in order])
            for i, (embedding, _) in zip(order, results):
                with storage(str(out)).writing(jobs[i].path) as tmp:
                    save_embedding(embedding, tmp)
    except Exception as exc:  # the optimisation failed (e.g. diverged): every inversion of the batch fails
        errors.update({i: one_line(exc) for i in order})
    per_item = (time.perf_counter() - t0) / len(jobs)
    return [embedding_row(job, num_frames, errors.get(i), per_item, worker) for i, job in enumerate(jobs)]


def located(where: str, exc: Exception) -> str:
    """A user-input error as one line, led by the manifest entry and field it concerns (when known)."""
    return f"{where}: {one_line(exc)}" if where else one_line(exc)


def run_transfers(model: MotionModel, jobs: list[TransferJob], out: str, worker: str) -> Rows:
    """Sample transfers that share one embedding and config in one UNet call; a transfers row per job,
    and a metrics row per video written of the jobs to `measure`."""
    t0 = time.perf_counter()
    errors: dict[int, str] = {}
    images = {}
    try:
        if len({(j.embedding_key, j.config) for j in jobs}) != 1:
            raise ValueError("a transfer batch must share one embedding and one config")
        config = jobs[0].config
        embedding = _embedding(str(out), jobs[0].embedding_key, model.model_id, model.token_dim, model.family)
        full = model.resolve(config, num_frames=embedding.num_frames)
        for i, job in enumerate(jobs):
            try:
                with local_copy(job.target_path) as path:
                    images[i] = read_image(path, full.height, full.width)
            except InputError as exc:  # one unreadable target fails alone
                errors[i] = located(job.where, exc)
        if images:
            order = sorted(images)
            videos = transfer(model, [images[i] for i in order], embedding, config, seeds=[jobs[i].seed for i in order])
            for i, video in zip(order, videos):
                try:
                    with storage(str(out)).writing(jobs[i].video_path) as tmp:
                        write_mp4(video, tmp, fps=config.fps)
                except Exception as exc:
                    errors[i] = one_line(exc)
    except Exception as exc:  # the whole batch failed (embedding unreadable, sampling error)
        message = one_line(exc)
        errors.update({i: errors.get(i, message) for i in range(len(jobs))})
    per_item = (time.perf_counter() - t0) / len(jobs)
    rows: Rows = {"transfers": [transfer_row(job, errors.get(i), per_item, worker) for i, job in enumerate(jobs)]}
    to_measure = [j for i, j in enumerate(jobs) if i not in errors and j.measure]
    if to_measure:
        rows.update(run_metrics(model, to_measure, out, worker))
    return rows


def run_metrics(model: MotionModel, jobs: list[TransferJob], out: str, worker: str) -> Rows:
    """Measure finished transfers (their mp4 in the store); a metrics row for each one measured."""
    rows = []
    encoder = model_encoder(model)
    for job in jobs:
        try:
            with storage(str(out)).reading(job.video_path) as path:
                output = read_frames(path)  # (F, H, W, 3): the video as written
            f, h, w = output.shape[:3]
            reference = _reference_frames(job.embedding.reference_path, job.embedding.reference_sha256, f, h, w)
            with local_copy(job.target_path) as path:
                target = np.asarray(read_image(path, h, w))
            rows.append(metrics_row(job, timed_metrics(reference, output, target, encoder), worker))
        except Exception as exc:  # no row: `mt evaluate` (or the next run) tries again
            log.warning("metrics of transfer %s (%s x %s) failed: %s", job.key[:12], job.reference_id, job.target_id,
                        one_line(exc))
    return {"metrics": rows}


@lru_cache(maxsize=16)
def _embedding(out: str, key: str, model_id: str, token_dim: int, family: str):
    """The motion embedding of `key` in OUT's store, read once per worker for all of its transfer batches
    (a file of the store never changes: its name is its content's key; one GET per batch was a quarter of
    a video's requests on object storage, benchmarks/bench_execute.py)."""
    with storage(out).reading(store_relpath("embeddings", key)) as path:
        return load_embedding(path, model_id=model_id, token_dim=token_dim, family=family)


@lru_cache(maxsize=16)
def _reference_frames(path: str, sha256: str, frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 reference frames at the output's frame count and size (uniform sampling, as
    inversion reads them); cached per worker, since every transfer of a reference needs them (`sha256`
    keys the cache on content)."""
    with local_copy(path) as local:
        return signed_to_uint8(read_video(local, frames, height, width))
