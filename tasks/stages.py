"""The Prefect tasks of a bulk run, one per stage: plan, invert, transfer, record.

Thin by design: each takes its items from the plan, hands them to the worker pool, and commits
the rows that come back. Rows are flushed to the catalogs as work completes (every `FLUSH_ROWS`
rows or `FLUSH_SECONDS`), so a crash loses at most the rows of work in flight; the artifacts
themselves are already in the store and a re-run finds them by key.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore.catalog import append_rows
from mtcore.manifest import load_manifest
from tasks.plan import InversionJob, Plan, TransferBatch, TransferJob, plan_run
from tasks.pool import WorkerPool
from tasks.results import RunSummary, StageResult, WorkerStats
from tasks.rows import embedding_row, one_line, transfer_row

FLUSH_ROWS = 50
FLUSH_SECONDS = 30.0


class RowSink:
    """Buffers one table's catalog rows, appends them as Parquet files, and tallies a StageResult."""

    def __init__(self, out: str | Path, table: str, key_column: str, result: StageResult):
        self.out, self.table, self.key_column, self.result = out, table, key_column, result
        self.buffer: list[dict] = []
        self.last = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            if row["status"] == "ok":
                self.result.computed += 1
                self.result.ok_keys.add(row[self.key_column])
            else:
                self.result.failed += 1
                self.result.failed_keys[row[self.key_column]] = row["error"]
                self.result.errors.append(row["error"])
        self.buffer.extend(rows)
        if len(self.buffer) >= FLUSH_ROWS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        append_rows(self.out, self.table, self.buffer)
        self.buffer, self.last = [], time.monotonic()


@task(name="plan", cache_policy=NONE)
def plan_stage(manifest_path: str, out: str) -> Plan:
    """Read the manifest, hash inputs, derive keys, split cached from to-do."""
    plan = plan_run(load_manifest(manifest_path), out)
    get_run_logger().info(
        "plan: model %s; inversions %d to do, %d cached; transfers %d to do, %d cached; %d failed inputs",
        plan.model_id, len(plan.inversions_todo), len(plan.inversions_cached), len(plan.transfers_todo),
        len(plan.transfers_cached), len(plan.failed_inversions) + len(plan.failed_transfers),
    )
    return plan


@task(name="invert", cache_policy=NONE)
def invert_stage(pool: WorkerPool, plan: Plan, out: str) -> StageResult:
    """Invert every missing embedding on the pool; record one row per attempt."""
    log = get_run_logger()
    result = StageResult(ok_keys={j.key for j in plan.inversions_cached})
    sink = RowSink(out, "embeddings", "embedding_key", result)
    sink.add([embedding_row(job, plan.model_id, None, error, 0.0, "plan") for job, error in plan.failed_inversions])
    done = [0]

    def on_done(job: InversionJob, rows: list[dict] | Exception) -> None:
        if isinstance(rows, Exception):
            rows = [embedding_row(job, plan.model_id, None, one_line(rows), 0.0, "lost")]
        sink.add(rows)
        done[0] += 1
        row = rows[0]
        log.info("inversion %d/%d %s: %s in %.1f s on %s%s", done[0], len(plan.inversions_todo), job.reference_id,
                 row["status"], row["seconds"], row["worker"], f" ({row['error']})" if row["error"] else "")

    pool.map(plan.inversions_todo, on_done)
    sink.flush()
    return result


def transfer_batches(jobs: list[TransferJob], batch_size: int) -> list[TransferBatch]:
    """Group jobs that share an embedding and config (one UNet call) and cut groups into batches."""
    groups: dict[tuple, list[TransferJob]] = defaultdict(list)
    for job in jobs:
        groups[job.embedding_key, job.config].append(job)
    return [TransferBatch(tuple(g[i : i + batch_size])) for g in groups.values() for i in range(0, len(g), batch_size)]


@task(name="transfer", cache_policy=NONE)
def transfer_stage(pool: WorkerPool, plan: Plan, out: str, inversions: StageResult, batch_size: int) -> StageResult:
    """Transfer every missing (embedding x target x seed) whose embedding exists; one row per attempt.

    The one place where a reference's failure fails its transfers: a transfer whose embedding is
    not available after the invert stage fails with its reference's error.
    """
    log = get_run_logger()
    result = StageResult()
    sink = RowSink(out, "transfers", "transfer_key", result)
    sink.add([transfer_row(job, plan.model_id, error, 0.0, "plan") for job, error in plan.failed_transfers])
    ready = [j for j in plan.transfers_todo if j.embedding_key in inversions.ok_keys]
    sink.add([
        transfer_row(j, plan.model_id, f"reference {j.reference_id}: its inversion failed: "
                                       f"{inversions.failed_keys.get(j.embedding_key, 'no embedding')}", 0.0, "plan")
        for j in plan.transfers_todo if j.embedding_key not in inversions.ok_keys
    ])
    done = [0]

    def on_done(batch: TransferBatch, rows: list[dict] | Exception) -> None:
        if isinstance(rows, Exception):
            rows = [transfer_row(j, plan.model_id, one_line(rows), 0.0, "lost") for j in batch.jobs]
        sink.add(rows)
        done[0] += len(rows)
        failed = [r for r in rows if r["status"] != "ok"]
        log.info("transfers %d/%d (%s x %d targets) on %s%s", done[0], len(ready), batch.jobs[0].reference_id,
                 len(batch.jobs), rows[0]["worker"], f"; {len(failed)} failed: {failed[0]['error']}" if failed else "")

    pool.map(transfer_batches(ready, batch_size), on_done)
    sink.flush()
    return result


@task(name="record-run", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def record_run(run_id: str, plan: Plan, inversions: StageResult, transfers: StageResult, started_at: dt.datetime,
               wall_seconds: float, out: str, workers: list[WorkerStats]) -> RunSummary:
    """Append the run's row to catalog/runs; the run's summary."""
    summary = RunSummary(
        run_id=run_id, manifest_path=plan.manifest_path, manifest_sha256=plan.manifest_sha256,
        started_at=started_at, finished_at=dt.datetime.now(dt.timezone.utc),
        inversions_computed=inversions.computed, inversions_cached=len(plan.inversions_cached),
        transfers_computed=transfers.computed, transfers_cached=len(plan.transfers_cached),
        failed=inversions.failed + transfers.failed, wall_seconds=round(wall_seconds, 2), out=out,
        workers=workers, errors=(inversions.errors + transfers.errors)[:20],
    )
    append_rows(out, "runs", [summary.catalog_row()])
    return summary
