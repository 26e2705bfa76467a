"""The measure stage: metrics of cached videos that lack a row of the current METRICS_VERSION.

New videos are measured by the transfer stage next to their frames; this stage measures the rest
(runs made with metrics off, a new metrics version), `METRICS_BATCH` videos per work item.
"""

from __future__ import annotations

import hashlib

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore import METRICS_VERSION
from mtcore.data.catalog import metric_keys
from tasks.claims import Claims, serve_claimed
from tasks.items import MetricsBatch, Rows, Transfers
from tasks.plan import Plan
from tasks.pool import WorkerPool
from tasks.progress import StageProgress
from tasks.results import StageResult
from tasks.rows import one_line
from tasks.sink import SERVE_CHUNK, RowSink, chunks


METRICS_BATCH = 8  # cached transfers measured per work item


def metrics_claim(transfer_key: str) -> str:
    """The claim covering the measuring of a transfer with the current metrics version: one of 256 key
    ranges (by the transfer key's first two hex digits)."""
    return hashlib.sha256(f"metrics:{METRICS_VERSION}:{transfer_key[:2]}".encode()).hexdigest()


@task(name="measure", cache_policy=NONE)
def metrics_stage(pool: WorkerPool, plan: Plan, out: str, run_id: str, claims: Claims | None = None) -> StageResult:
    """Measure cached transfers that lack a metrics row of the current version (new ones are measured
    by the transfer stage, next to their frames)."""
    log = get_run_logger()
    result = StageResult()
    sink = RowSink(out, "metrics", result, run_id, claims, lambda table, row: metrics_claim(row["transfer_key"]))
    todo = plan.metrics_todo if plan.metrics else []
    # MetricsBatches are made a chunk at a time (a new metrics version re-measures every cached video)
    if isinstance(todo, Transfers):
        job_chunks = ([j for part in chunk for j in part.jobs()] for chunk in chunks(todo.parts, SERVE_CHUNK))
    elif hasattr(todo, "chunks"):  # catalog rows (tasks.plan_metrics.RowJobs: mt evaluate)
        job_chunks = todo.chunks(SERVE_CHUNK)
    else:
        job_chunks = [list(todo)]
    progress = StageProgress(log, "measuring", len(todo))

    def on_done(batch: MetricsBatch, rows: Rows | Exception) -> None:
        measured = set() if isinstance(rows, Exception) else {row["transfer_key"] for row in rows.get("metrics", [])}
        if claims is not None:  # a video whose measuring failed has no row to give its claim back: give it now
            claims.release([metrics_claim(j.key) for j in batch.jobs if j.key not in measured])
        if isinstance(rows, Exception):
            log.warning("metrics of %d transfers failed: %s", len(batch.jobs), one_line(rows))
            return
        sink.add(rows)
        progress.advance(len(batch.jobs), 0, lambda: f"measured {result.measured}/{len(todo)} cached transfers")

    def measured_elsewhere(batches: list[MetricsBatch]) -> list[MetricsBatch]:
        done = metric_keys(out, METRICS_VERSION, among={j.key for b in batches for j in b.jobs})
        return [b for b in batches if all(j.key in done for j in b.jobs)]

    for jobs in job_chunks:
        jobs.sort(key=lambda job: job.key)  # a batch in one claim range
        batches = [MetricsBatch(tuple(jobs[i : i + METRICS_BATCH])) for i in range(0, len(jobs), METRICS_BATCH)]
        serve_claimed(pool, batches, claims, lambda batch: [metrics_claim(j.key) for j in batch.jobs],
                      measured_elsewhere, on_done, lambda batch: None, sink.flush)
    sink.flush()
    progress.finish()
    return result


__all__ = ["metrics_stage", "metrics_claim", "METRICS_BATCH"]
