"""The bulk-run flow: manifest -> plan -> inversions -> transfers -> catalogs. It only orchestrates.

Prefect runs on its ephemeral local API unless PREFECT_API_URL points at a server. Ray starts
locally unless `ray_address` is given; it is not started at all when everything is cached.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from tasks.pool import PoolConfig, WorkerPool
from tasks.stages import StageResult, invert_stage, plan_stage, record_run, transfer_stage

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
) -> dict:
    """Run every inversion and transfer of `manifest` that OUT's store lacks; returns the summary."""
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc)
    out = str(Path(out).resolve())
    m, plan = plan_stage(manifest, out)
    pool_cfg = PoolConfig(ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                          device=device, dtype=dtype)
    worker_stats: list[dict] = []
    if plan.inversions_todo or plan.transfers_todo:
        with WorkerPool(plan.model, plan.revision, pool_cfg) as pool:
            inv = invert_stage(pool, m, plan, out)
            tr = transfer_stage(pool, m, plan, out, inv.ok_keys, batch_size)
            worker_stats = pool.stats()
    else:  # nothing to compute: no Ray at all, only failed inputs (if any) to record
        inv = invert_stage(None, m, plan, out)
        tr = transfer_stage(None, m, plan, out, inv.ok_keys, batch_size)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    row = record_run(run_id, m, plan, inv, tr, started, out)
    return summary(row, out, time.perf_counter() - t0, worker_stats, inv, tr)


def summary(row: dict, out: str, seconds: float, workers: list[dict], inv: StageResult, tr: StageResult) -> dict:
    """What `mt run` prints: counts, wall time, where the catalogs are, per-worker loads, errors."""
    return {
        **{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()},
        "wall_seconds": round(seconds, 2),
        "out": out,
        "catalogs": str(Path(out) / "catalog"),
        "workers": workers,
        "errors": (inv.errors + tr.errors)[:20],
    }
