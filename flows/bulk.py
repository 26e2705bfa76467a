"""The bulk-run flow: manifest -> plan -> per model: inversions, transfers, metrics -> catalogs.

It only orchestrates. Prefect runs on its ephemeral local API unless PREFECT_API_URL points at a
server. Ray starts locally unless `ray_address` is given, and only when the first item needs a
worker: a run where everything is cached never starts it. A sweep over several models runs them
one after the other, each with its own pool of workers holding that model (one pool at a time:
a worker holds one multi-GB model, and the next model's items start when the last one's end).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from dataclasses import replace

import pyarrow as pa
from prefect import flow
from prefect.runtime import flow_run

from flows.cached import FLOW_NAME

from mtcore.io.outroot import check_output_root, remove_probe, write_probe
from tasks.claims import Claims
from tasks.feed import EmbeddingFeed
from tasks.invert import invert_stage
from tasks.measure import metrics_stage
from tasks.pool import PoolConfig, RaySession, WorkerPool
from tasks.results import RunSummary, StageResult
from tasks.retry import retry_stage
from tasks.plan import parse_part
from tasks.run import plan_stage, record_run
from tasks.transfer import transfer_stage
from tasks.upkeep import compact_stage

DEFAULT_INVERSION_BATCH = 4
"""References inverted together per worker call on CPU workers when not given (measured: benchmarks/bench_core.py)."""
GPU_INVERSION_GROUP = 8
"""On GPU workers, references sent to a worker together when not given; the worker inverts as many at a
time as its free memory holds (mtcore.method.inversion.invert_fitting)."""


STAGE_POOL_FIELDS = ("gpus_per_worker", "workers", "max_workers", "cpus_per_worker", "resources")
"""What a stage's pool may set for itself (`invert_pool`, `transfer_pool`, `mt run --invert-* / --transfer-*`)."""


def stage_config(base: PoolConfig, overrides: dict | None) -> PoolConfig:
    """The pool of one stage: `base` with `overrides` (only STAGE_POOL_FIELDS; None values keep base's)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(STAGE_POOL_FIELDS))
    if unknown:
        raise ValueError(f"a stage's pool sets only {', '.join(STAGE_POOL_FIELDS)}; got {', '.join(unknown)}")
    return replace(base, **overrides)


def _hint(pool, waiting: set[str]):
    """A feed listener: when an embedding with transfers to do is stored, tell the pool they are coming (a
    shared pool holds the worker the inversion freed for them)."""
    def listen(key: str, error: str | None) -> None:
        if error is None and key in waiting:
            pool.expect()
    return listen


@flow(name=FLOW_NAME)
def bulk_run(
    manifest: str,
    out: str = "mt-out",
    ray_address: str | None = None,
    gpus_per_worker: float = 0.0,
    workers: int | None = None,
    batch_size: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    min_free_mb: float = 256.0,
    inversion_batch: int | None = None,
    resources: dict[str, float] | None = None,
    invert_pool: dict | None = None,
    transfer_pool: dict | None = None,
    part: str | None = None,
    max_workers: int | None = None,
) -> RunSummary:
    """Run every inversion and transfer of `manifest` that OUT's store lacks; returns the summary.

    `manifest` and `out` are local paths or URLs (s3://bucket/prefix, ...: mtcore.io.storage); on a cluster of
    several hosts OUT must be reachable from every node (object storage, or a shared mount), which each
    worker checks before loading a model. `resources`: custom Ray resources each worker requests.

    Pools per stage: `invert_pool` / `transfer_pool` override, for that stage's workers, fields of the pool
    the other arguments describe (`gpus_per_worker`, `workers`, `cpus_per_worker`, `resources`), so that
    inversions (about 32 GiB on SVD) go to large GPUs and transfers to small ones. Stages whose pools are
    alike share their workers (the model loads once; a freed worker serves a waiting transfer before the
    next inversion: tasks.dispatch); otherwise each stage has its own pool. Either way the two stages run
    at once, streaming: a reference's transfers start as soon as its embedding is stored, while other
    inversions still run (tasks.feed).

    `max_workers`: an elastic pool of `workers` to `max_workers` workers (WorkerPool.grow): it starts on
    what fits and grows onto nodes that join mid-run.

    Several runs may share OUT at once: each claims a key before computing it (tasks.claims), so no
    item is computed twice and each finishes what the others leave. `part` "I/N": this run does part I of
    N disjoint ranges of the transfer keys (Plan.part), so that N drivers, each with its own cluster, split
    a run that one driver cannot feed, without contending for the same claims.
    """
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    out = check_output_root(out, int(min_free_mb * 2**20))
    plan = plan_stage(manifest, out)
    pa.default_memory_pool().release_unused()  # planning's Arrow scratch (216 MB at 10^6), kept by mimalloc otherwise
    if part:
        plan = plan.part(*parse_part(part))
    pool_config = PoolConfig(workers=workers, max_workers=max_workers, gpus_per_worker=gpus_per_worker, device=device,
                             dtype=dtype, resources=dict(resources or {}))
    inverting, transferring = stage_config(pool_config, invert_pool), stage_config(pool_config, transfer_pool)
    on_gpu = inverting.gpus_per_worker > 0 or (device or "").startswith("cuda")
    default_batch = GPU_INVERSION_GROUP if on_gpu else DEFAULT_INVERSION_BATCH
    inversions, transfers, measured, worker_stats = StageResult(), StageResult(), StageResult(), []
    probe = (write_probe(out, run_id), run_id)  # every worker must read it back before loading a model
    try:
        with RaySession(ray_address) as session, Claims(out, run_id) as claims:
            for model in plan.models:
                part = plan.for_model(model)
                with contextlib.ExitStack() as pools:
                    inverters = pools.enter_context(WorkerPool(session, model.model, model.revision, out, inverting, probe))
                    if transferring == inverting:  # one pool, shared: its workers serve transfers first
                        transferrers = inverters.share()
                    else:  # a pool per stage
                        transferrers = pools.enter_context(WorkerPool(session, model.model, model.revision, out,
                                                                      transferring, probe))
                    # streaming: a reference's transfers start once its embedding is stored
                    feed = EmbeddingFeed()
                    # on a shared pool, the worker an inversion frees waits for that reference's transfers
                    # (registered before the stages start, so that no settled embedding is missed)
                    feed.listen(_hint(transferrers, {p.embedding.key for p in part.transfers_todo.parts}
                                      - {j.key for j in part.inversions_cached}))
                    inverting_run = invert_stage.submit(inverters, part, out, run_id, claims,
                                                        inversion_batch or default_batch, feed)
                    transferring_run = transfer_stage.submit(transferrers, part, out, None, batch_size, run_id,
                                                             claims, feed)
                    inverted, transferred = inverting_run.result(), transferring_run.result()
                    measured = measured.merge(metrics_stage(transferrers, part, out, run_id, claims))
                    if plan.retry is not None and plan.metrics:  # more seeds for pairs whose outputs fail
                        more, more_measured = retry_stage(transferrers, part, model, out, batch_size, run_id, claims)
                        transferred, measured = transferred.merge(more), measured.merge(more_measured)
                    worker_stats += inverters.stats() + (transferrers.stats() if transferring != inverting else [])
                inversions, transfers = inversions.merge(inverted), transfers.merge(transferred)
    finally:
        remove_probe(out, probe[0])
    summary = record_run(run_id, plan, inversions, transfers, measured, started, time.perf_counter() - t0, out,
                         worker_stats)
    compact_stage(out)
    return summary
