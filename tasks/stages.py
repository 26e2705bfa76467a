"""The Prefect tasks of a bulk run, one per stage: plan, invert, transfer, record.

Thin by design: each resolves what to do from the plan, hands items to the worker pool, and
commits the rows that come back. Rows are flushed to the catalogs as work completes (every
`FLUSH_ROWS` rows or `FLUSH_SECONDS`), so a crash loses at most the rows of work in flight;
the artifacts themselves are already in the store and a re-run finds them by key.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore.catalog import append_rows
from mtcore.manifest import Manifest, load_manifest
from tasks.plan import InversionJob, Plan, TransferJob, plan_run
from tasks.pool import WorkerPool
from tasks.rows import embedding_row, one_line, transfer_row

FLUSH_ROWS = 50
FLUSH_SECONDS = 30.0


class RowSink:
    """Buffers catalog rows and appends them as Parquet files; counts ok and failed."""

    def __init__(self, out: str | Path, table: str):
        self.out, self.table = out, table
        self.buffer: list[dict] = []
        self.last = time.monotonic()
        self.ok = self.failed = 0
        self.errors: list[str] = []

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            if row["status"] == "ok":
                self.ok += 1
            else:
                self.failed += 1
                self.errors.append(row["error"])
        self.buffer.extend(rows)
        if len(self.buffer) >= FLUSH_ROWS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        append_rows(self.out, self.table, self.buffer)
        self.buffer, self.last = [], time.monotonic()


@dataclass
class StageResult:
    computed: int = 0
    failed: int = 0
    ok_keys: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


@task(name="plan", cache_policy=NONE)
def plan_stage(manifest_path: str, out: str) -> tuple[Manifest, Plan]:
    """Read the manifest, hash inputs, derive keys, split cached from to-do."""
    manifest = load_manifest(manifest_path)
    plan = plan_run(manifest, out)
    get_run_logger().info(
        "plan: model %s; inversions %d to do, %d cached; transfers %d to do, %d cached; %d failed inputs",
        plan.model_id, len(plan.inversions_todo), len(plan.inversions_cached), len(plan.transfers_todo),
        len(plan.transfers_cached), len(plan.failed_inversions) + len(plan.failed_transfers),
    )
    return manifest, plan


@task(name="invert", cache_policy=NONE)
def invert_stage(pool: WorkerPool | None, manifest: Manifest, plan: Plan, out: str) -> StageResult:
    """Invert every missing embedding on the pool; record one row per attempt."""
    log = get_run_logger()
    sink = RowSink(out, "embeddings")
    sink.add([embedding_row(j, plan.model_id, manifest.inversion, None, err, 0.0, "plan") for j, err in plan.failed_inversions])
    result = StageResult(ok_keys={j.key for j in plan.inversions_cached})
    total = len(plan.inversions_todo)

    def on_done(item, rows):
        job: InversionJob = item[0]
        if isinstance(rows, Exception):
            rows = [embedding_row(job, plan.model_id, manifest.inversion, None, one_line(rows), 0.0, "lost")]
        sink.add(rows)
        result.ok_keys.update(r["embedding_key"] for r in rows if r["status"] == "ok")
        row = rows[0]
        log.info("inversion %d/%d %s: %s in %.1f s on %s%s", sink.ok + sink.failed - len(plan.failed_inversions),
                 total, job.reference_id, row["status"], row["seconds"], row["worker"],
                 f" ({row['error']})" if row["error"] else "")

    if pool is not None and total:
        pool.map("invert", [(job, manifest.inversion, out) for job in plan.inversions_todo], on_done)
    sink.flush()
    result.computed, result.failed, result.errors = sink.ok, sink.failed, sink.errors
    return result


def transfer_batches(jobs: list[TransferJob], batch_size: int) -> list[list[TransferJob]]:
    """Group jobs by embedding (they share one UNet call) and cut groups into batches."""
    groups: dict[str, list[TransferJob]] = defaultdict(list)
    for job in jobs:
        groups[job.embedding_key].append(job)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


@task(name="transfer", cache_policy=NONE)
def transfer_stage(
    pool: WorkerPool | None, manifest: Manifest, plan: Plan, out: str, embeddings_ok: set[str], batch_size: int
) -> StageResult:
    """Transfer every missing (embedding x target x seed) whose embedding exists; one row per attempt."""
    log = get_run_logger()
    sink = RowSink(out, "transfers")
    sink.add([transfer_row(j, plan.model_id, err, 0.0, "plan") for j, err in plan.failed_transfers])
    ready = [j for j in plan.transfers_todo if j.embedding_key in embeddings_ok]
    sink.add([transfer_row(j, plan.model_id, f"reference {j.reference_id}: its inversion failed", 0.0, "plan")
              for j in plan.transfers_todo if j.embedding_key not in embeddings_ok])
    done = [0]

    def on_done(item, rows):
        batch: list[TransferJob] = item[0]
        if isinstance(rows, Exception):
            rows = [transfer_row(j, plan.model_id, one_line(rows), 0.0, "lost") for j in batch]
        sink.add(rows)
        done[0] += len(rows)
        failed = [r for r in rows if r["status"] != "ok"]
        log.info("transfers %d/%d (%s x %d targets) on %s%s", done[0], len(ready), batch[0].reference_id,
                 len(batch), rows[0]["worker"], f"; {len(failed)} failed: {failed[0]['error']}" if failed else "")

    if pool is not None and ready:
        pool.map("transfer", [(b, manifest.transfer, out) for b in transfer_batches(ready, batch_size)], on_done)
    sink.flush()
    return StageResult(computed=sink.ok, failed=sink.failed, errors=sink.errors)


@task(name="record-run", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def record_run(run_id: str, manifest: Manifest, plan: Plan, inv: StageResult, tr: StageResult,
               started_at: dt.datetime, out: str) -> dict:
    """Append the run's row to catalog/runs and return it."""
    row = {
        "run_id": run_id, "manifest_path": str(manifest.path), "manifest_sha256": manifest.sha256,
        "started_at": started_at, "finished_at": dt.datetime.now(dt.timezone.utc),
        "inversions_computed": inv.computed, "inversions_cached": len(plan.inversions_cached),
        "transfers_computed": tr.computed, "transfers_cached": len(plan.transfers_cached),
        "failed": inv.failed + tr.failed,
    }
    append_rows(out, "runs", [row])
    return row
