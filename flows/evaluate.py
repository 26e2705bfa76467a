"""The evaluate flow: measure every finished transfer of OUT that lacks the current metrics version.

For runs made with metrics off, or after a metrics change (a new METRICS_VERSION). Work goes to the
same model workers as `mt run` (the CLIP metrics need the model's image encoder), one model at a time.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from tasks.measure import plan_missing_metrics
from tasks.pool import PoolConfig, RaySession, WorkerPool
from tasks.stages import metrics_stage


@flow(name="evaluate")
def fill_metrics(out: str, ray_address: str | None = None, gpus_per_worker: float = 0.0,
                 workers: int | None = None) -> dict:
    """Measure what OUT lacks; {"measured", "unmeasurable", "missing_files"}."""
    from mtcore import METRICS_VERSION

    out = str(Path(out).resolve())
    run_id = str(flow_run.get_id() or uuid.uuid4())
    todo = plan_missing_metrics(out, METRICS_VERSION)
    measured = 0
    with RaySession(ray_address) as session:
        for plan in todo.plans:
            model = plan.models[0]
            with WorkerPool(session, model.model, model.revision, out, PoolConfig(workers=workers,
                                                                                     gpus_per_worker=gpus_per_worker)) as pool:
                measured += metrics_stage(pool, plan, out, run_id).measured
    return {"measured": measured, "unmeasurable": todo.unmeasurable, "missing_files": todo.missing_files}
