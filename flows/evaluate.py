"""The evaluate flow: measure every finished transfer of OUT that lacks the current metrics version.

For runs made with metrics off, or after a metrics change (a new METRICS_VERSION). Work goes to the
same model workers as `mt run` (the CLIP metrics need the model's image encoder), one model at a time.
"""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.runtime import flow_run

from mtcore.io.outroot import remove_probe, write_probe
from mtcore.io.storage import normalize
from tasks.plan_metrics import plan_missing_metrics
from tasks.pool import PoolConfig, RaySession, WorkerPool
from tasks.measure import metrics_stage


@flow(name="evaluate")
def fill_metrics(out: str, ray_address: str | None = None, gpus_per_worker: float = 0.0,
                 workers: int | None = None) -> dict:
    """Measure what OUT lacks; {"measured", "unmeasurable", "missing_files"}."""
    from mtcore import METRICS_VERSION

    out = normalize(out)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    todo = plan_missing_metrics(out, METRICS_VERSION)
    measured = 0
    probe = (write_probe(out, run_id), run_id) if todo.plans else None
    try:
        with RaySession(ray_address) as session:
            for plan in todo.plans:
                model = plan.models[0]
                config = PoolConfig(workers=workers, gpus_per_worker=gpus_per_worker)
                with WorkerPool(session, model.model, model.revision, out, config, probe) as pool:
                    measured += metrics_stage(pool, plan, out, run_id).measured
    finally:
        if probe:
            remove_probe(out, probe[0])
    return {"measured": measured, "unmeasurable": todo.unmeasurable, "missing_files": todo.missing_files}
