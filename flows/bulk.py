"""The bulk-run flow: manifest -> plan -> inversions -> transfers -> catalogs. It only orchestrates.

Prefect runs on its ephemeral local API unless PREFECT_API_URL points at a server. Ray starts
locally unless `ray_address` is given, and only when the first item needs a worker: a run where
everything is cached never starts it.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from tasks.pool import PoolConfig, WorkerPool
from tasks.results import RunSummary
from tasks.stages import invert_stage, plan_stage, record_run, transfer_stage

FLOW_NAME = "bulk-run"


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
) -> RunSummary:
    """Run every inversion and transfer of `manifest` that OUT's store lacks; returns the summary."""
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc)
    out = str(Path(out).resolve())
    plan = plan_stage(manifest, out)
    pool_config = PoolConfig(ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                             device=device, dtype=dtype)
    with WorkerPool(plan.model, plan.revision, out, pool_config) as pool:
        inversions = invert_stage(pool, plan, out)
        transfers = transfer_stage(pool, plan, out, inversions, batch_size)
        worker_stats = pool.stats()
    run_id = str(flow_run.get_id() or uuid.uuid4())
    return record_run(run_id, plan, inversions, transfers, started, time.perf_counter() - t0, out, worker_stats)
