"""The first and the last task of a bulk run: the plan (what is to do) and the run's record (what was done).

The stages between them, in the order a run starts them: tasks.invert, tasks.transfer (beside the
invert stage: streaming), tasks.measure; flows.bulk orchestrates them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore import METRICS_VERSION
from mtcore.data.catalog import append_rows
from mtcore.data.manifest import load_manifest
from mtcore.io.fileio import remove_stale_temporaries
from mtcore.io.storage import is_url
from tasks.plan import Plan, plan_run
from tasks.results import RunSummary, StageResult, WorkerStats


@task(name="plan", cache_policy=NONE)
def plan_stage(manifest_path: str, out: str) -> Plan:
    """Read the manifest, hash inputs, derive keys, split cached from to-do."""
    plan = plan_run(load_manifest(manifest_path), out, METRICS_VERSION)
    # what a killed run left half-written (its temporaries; no live process writes them). Object stores
    # have none: an object is complete or absent.
    leftovers = [] if is_url(out) else [p for folder in ("store", "catalog")
                                        for p in remove_stale_temporaries(Path(out) / folder)]
    if leftovers:
        get_run_logger().info("removed %d temporary file(s) a killed run left behind", len(leftovers))
    get_run_logger().info(
        "plan: %d model(s); inversions %d to do, %d cached; transfers %d to do, %d cached; %d to measure; "
        "%d failed inputs", len(plan.models), len(plan.inversions_todo), len(plan.inversions_cached),
        len(plan.transfers_todo), len(plan.transfers_cached), len(plan.metrics_todo),
        len(plan.failed_inversions) + len(plan.failed_transfers),
    )
    return plan


@task(name="record-run", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def record_run(run_id: str, plan: Plan, inversions: StageResult, transfers: StageResult, measured: StageResult,
               started_at: dt.datetime, wall_seconds: float, out: str, workers: list[WorkerStats]) -> RunSummary:
    """Append the run's row to catalog/runs; the run's summary."""
    summary = RunSummary.of(run_id, plan, inversions, transfers, measured, started_at, wall_seconds, out, workers)
    append_rows(out, "runs", [summary.catalog_row()])
    return summary


__all__ = ["plan_stage", "record_run"]
