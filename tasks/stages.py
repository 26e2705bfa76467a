"""The Prefect tasks of a bulk run, one per stage: plan, invert, transfer, measure, record.

Thin by design: each takes its items from the plan, hands them to the worker pool, and commits
the rows that come back. Rows are flushed to the catalogs as work completes (every `FLUSH_ROWS`
rows or `FLUSH_SECONDS`), so a crash loses at most the rows of work in flight; the artifacts
themselves are already in the store and a re-run finds them by key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mtcore import METRICS_VERSION
from mtcore.catalog import append_rows, metric_keys, ok_keys
from mtcore.errors import redact
from mtcore.fileio import remove_stale_temporaries
from mtcore.manifest import load_manifest
from mtcore.storage import is_url
from tasks.claims import Claims, serve_claimed
from tasks.items import (InversionBatch, InversionJob, MetricsBatch, Rows, TransferBatch, TransferJob, Transfers,
                         TransferSet)
from tasks.plan import Plan, plan_run, stored
from tasks.feed import EmbeddingFeed
from tasks.pool import WorkerPool
from tasks.progress import StageProgress
from tasks.results import RunSummary, StageResult, WorkerStats
from tasks.rows import embedding_row, one_line, transfer_row

FLUSH_ROWS = 50
FLUSH_SECONDS = 30.0
METRICS_BATCH = 8  # cached transfers measured per work item
SERVE_CHUNK = 4096  # transfers made into work items and handed to the pool at a time
KEY_COLUMNS = {"embeddings": "embedding_key", "transfers": "transfer_key", "metrics": "transfer_key"}


class RowSink:
    """Buffers a stage's catalog rows per table, appends them as Parquet files, and tallies a StageResult.

    Rows of the stage's own table count as computed or failed; metrics rows count as measured. Once
    rows are in the catalog, the claims on their keys (`claim_key(table, row)`) are released.
    """

    def __init__(self, out: str | Path, table: str, result: StageResult, run_id: str, claims: Claims | None = None,
                 claim_key=None):
        self.out, self.table, self.result, self.run_id, self.claims = out, table, result, run_id, claims
        self.claim_key = claim_key or (lambda table, row: row[KEY_COLUMNS[table]] if table == self.table else None)
        """(table, row) -> the claim its item took (None: no claim)."""
        self.buffer: dict[str, list[dict]] = defaultdict(list)
        self.last = time.monotonic()

    def add(self, rows: Rows, recovered: bool = False) -> None:
        """Buffer rows; `recovered` rows (artifacts found in the store) count as available, not computed."""
        for table, table_rows in rows.items():
            for row in table_rows:
                row["run_id"] = self.run_id
                for column, value in row.items():  # no secrets in catalogs (tokens in paths, URLs, errors)
                    if isinstance(value, str):
                        row[column] = redact(value)
                if table == "metrics":
                    self.result.measured += 1
                elif row["status"] == "ok":
                    if recovered:
                        self.result.elsewhere += 1
                    else:
                        self.result.computed += 1
                    self.result.ok_keys.add(row[KEY_COLUMNS[table]])
                else:
                    self.result.failed += 1
                    self.result.failed_keys[row[KEY_COLUMNS[table]]] = row["error"]
                    self.result.errors.append(row["error"])
            self.buffer[table].extend(table_rows)
        if sum(map(len, self.buffer.values())) >= FLUSH_ROWS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        for table, rows in self.buffer.items():
            append_rows(self.out, table, rows)
            if self.claims is not None:
                # one take per row it served ("plan" rows never took one: failed inputs, lost references)
                self.claims.release([key for row in rows if row.get("worker") != "plan"
                                     and (key := self.claim_key(table, row)) is not None])
        self.buffer, self.last = defaultdict(list), time.monotonic()


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


def _available(out: str, table: str):
    """done_elsewhere for serve_claimed: the items whose keys have an ok row and a file in the store now."""
    def done(items: list) -> list:
        keys = lambda item: [j.key for j in item.jobs] if hasattr(item, "jobs") else [item.key]  # noqa: E731
        ok = ok_keys(out, table, among={k for i in items for k in keys(i)})
        here = stored(out, table, ok)
        return [i for i in items if all(k in here for k in keys(i))]
    return done


@task(name="invert", cache_policy=NONE)
def invert_stage(pool: WorkerPool, plan: Plan, out: str, run_id: str, claims: Claims | None = None,
                 batch_size: int = 1, feed: EmbeddingFeed | None = None) -> StageResult:
    """Invert every missing embedding on the pool, `batch_size` references per UNet call; one row per attempt.

    With `feed`, each embedding is published as it is settled (stored or failed), for a transfer stage
    running at the same time; the feed is closed when the stage ends, however it ends."""
    try:
        return _invert(pool, plan, out, run_id, claims, batch_size, feed)
    finally:
        if feed is not None:
            feed.close()


def _invert(pool: WorkerPool, plan: Plan, out: str, run_id: str, claims: Claims | None, batch_size: int,
            feed: EmbeddingFeed | None) -> StageResult:
    log = get_run_logger()
    publish = feed.publish if feed is not None else (lambda key, error=None: None)
    result = StageResult(ok_keys={j.key for j in plan.inversions_cached})
    sink = RowSink(out, "embeddings", result, run_id, claims)
    sink.add({"embeddings": [embedding_row(job, None, error, 0.0, "plan") for job, error in plan.failed_inversions]})
    for job, error in plan.failed_inversions:
        publish(job.key, error)
    progress = StageProgress(log, "inversions", len(plan.inversions_todo))

    def on_done(batch: InversionBatch, rows: Rows | Exception) -> None:
        if isinstance(rows, Exception):
            rows = {"embeddings": [embedding_row(job, None, one_line(rows), 0.0, "lost") for job in batch.jobs]}
        sink.add(rows)
        for job, row in zip(batch.jobs, rows["embeddings"]):
            publish(job.key, row["error"] if row["status"] != "ok" else None)
            progress.advance(1, row["status"] != "ok", lambda: "inversion %d/%d %s: %s in %.1f s on %s%s" % (
                progress.done, progress.total, job.reference_id, row["status"], row["seconds"], row["worker"],
                f" ({row['error']})" if row["error"] else ""), f"{job.reference_id}: {row['error']}")

    def elsewhere(batch: InversionBatch) -> None:
        for job in batch.jobs:
            result.ok_keys.add(job.key)
            result.elsewhere += 1
            publish(job.key)
            log.info("inversion %s: made by another run sharing %s", job.reference_id, out)

    todo = _recover(plan.inversions_todo, "embeddings", out, claims, sink,
                    lambda job: embedding_row(job, None, None, 0.0, "recovered"),
                    lambda job: elsewhere(InversionBatch((job,))), log)
    for key in list(result.ok_keys):  # cached, recovered from the store, or made by another run
        publish(key)
    serve_claimed(pool, inversion_batches(todo, batch_size), claims, lambda batch: [j.key for j in batch.jobs],
                  _available(out, "embeddings"), on_done, elsewhere, sink.flush)
    sink.flush()
    progress.finish()
    return result


def inversion_batches(jobs: list[InversionJob], batch_size: int) -> list[InversionBatch]:
    """Group inversions that share a config (one UNet call per step) and cut groups into batches."""
    groups: dict = defaultdict(list)
    for job in jobs:
        groups[job.config].append(job)
    return [InversionBatch(tuple(g[i : i + batch_size])) for g in groups.values() for i in range(0, len(g), batch_size)]


def _recover(jobs: list, table: str, out: str, claims: Claims | None, sink: RowSink, row_fn, on_elsewhere,
             log, here: set[str] | None = None, claim_of=lambda job: job.key) -> list:
    """Jobs whose artifact is already in the store but has no ok row (a run killed between writing the
    file and committing its row) get their row now, marked worker "recovered", instead of being
    computed again; the others are returned. An artifact is complete or absent (atomic writes); a key
    another live run holds is left to that run, and one whose row another run has committed since this
    run's plan is the stage's `on_elsewhere(job)` (no second row). `here`: the keys whose artifact is in
    the store, when the plan already listed it (else the store is asked)."""
    if here is None:
        here = stored(out, table, {job.key for job in jobs})
    mine = {job.key for job in jobs if job.key in here and (claims is None or claims.claim(claim_of(job)))}
    # read after claiming: a run releases a key only once its row is in the catalog
    committed = ok_keys(out, table, among=mine) if mine else set()
    todo, recovered = [], []
    for job in jobs:
        if job.key not in mine:
            todo.append(job)
        elif job.key in committed:
            if claims is not None:
                claims.release([claim_of(job)])
            on_elsewhere(job)
        else:
            recovered.append(row_fn(job))
    if recovered:
        sink.add({table: recovered}, recovered=True)
        log.info("%d %s were in the store without their row (a killed run): recorded, not recomputed",
                 len(recovered), table)
    return todo


def transfer_claim(embedding_key: str, transfer_key: str) -> str:
    """The claim covering a transfer: one of 16 ranges of its embedding's transfers (by the
    transfer key's first hex digit). A pure function of the transfer (its key fixes its embedding), so
    two runs of different manifests that share a video contend for the same claim."""
    return hashlib.sha256(f"transfers:{embedding_key}:{transfer_key[:1]}".encode()).hexdigest()


def _job_claim(job: TransferJob) -> str:
    return transfer_claim(job.embedding_key, job.key)


def transfer_batches(jobs: list[TransferJob], batch_size: int) -> list[TransferBatch]:
    """Group jobs that share an embedding and config (one UNet call) and cut groups into batches. A group
    of more than 16 batches is cut within its claim ranges (transfer_claim), so that a batch never waits
    on two ranges; a smaller one is cut in key order (batches stay full, a batch may span two ranges)."""
    groups: dict[tuple, list[TransferJob]] = defaultdict(list)
    for job in sorted(jobs, key=lambda job: job.key[:1]):
        groups[job.embedding_key, job.config].append(job)
    cut = []
    for group in groups.values():
        if len(group) > 16 * batch_size:
            ranges: dict[str, list[TransferJob]] = defaultdict(list)
            for job in group:
                ranges[job.key[:1]].append(job)
            cut += ranges.values()
        else:
            cut.append(group)
    return [TransferBatch(tuple(g[i : i + batch_size])) for g in cut for i in range(0, len(g), batch_size)]


@task(name="transfer", cache_policy=NONE)
def transfer_stage(pool: WorkerPool, plan: Plan, out: str, inversions: StageResult | None, batch_size: int,
                   run_id: str, claims: Claims | None = None, feed: EmbeddingFeed | None = None) -> StageResult:
    """Transfer every missing (embedding x target x seed) whose embedding exists; one row per attempt
    (and, with the plan's `metrics`, a metrics row per video made).

    After the invert stage (`inversions`: its result), or beside it (`feed`: streaming; a reference's
    transfers start once its embedding is stored, on this stage's own pool, loaded at once).
    The one place where a reference's failure fails its transfers: a transfer whose embedding failed,
    or was not available when the invert stage ended, fails with its reference's error. On a shared pool
    (WorkerPool.share) this stage's items go first; once it ends, nothing is held for it any more.
    """
    try:
        return _transfer(pool, plan, out, inversions, batch_size, run_id, claims, feed)
    finally:
        if feed is not None:
            pool.served(final=True)


def _transfer(pool: WorkerPool, plan: Plan, out: str, inversions: StageResult | None, batch_size: int, run_id: str,
              claims: Claims | None, feed: EmbeddingFeed | None) -> StageResult:
    log = get_run_logger()
    result = StageResult()
    sink = RowSink(out, "transfers", result, run_id, claims,
                   lambda table, row: transfer_claim(row["embedding_key"], row["transfer_key"]) if table == "transfers"
                   else None)
    sink.add({"transfers": [transfer_row(job, error, 0.0, "plan") for job, error in plan.failed_transfers]})
    progress = StageProgress(log, "transfers", len(plan.transfers_todo))
    started = time.monotonic()

    def on_done(batch: TransferBatch, rows: Rows | Exception) -> None:
        if isinstance(rows, Exception):
            rows = {"transfers": [transfer_row(j, one_line(rows), 0.0, "lost") for j in batch.jobs]}
        if progress.done == 0 and feed is not None:
            log.info("first videos %.1f s after the stages started", time.monotonic() - started)
        sink.add(rows)
        failed = [r for r in rows["transfers"] if r["status"] != "ok"]
        progress.advance(len(batch.jobs), len(failed), lambda: "transfers %d/%d (%s x %d targets) on %s%s" % (
            progress.done, progress.total, batch.jobs[0].reference_id, len(batch.jobs), rows["transfers"][0]["worker"],
            f"; {len(failed)} failed: {failed[0]['error']}" if failed else ""),
            failed[0]["error"] if failed else None)

    def elsewhere(batch: TransferBatch) -> None:
        result.elsewhere += len(batch.jobs)

    # settled embeddings: key -> None (stored) or its error
    if feed is None:
        settled: dict[str, str | None] = {**dict.fromkeys(inversions.ok_keys), **inversions.failed_keys}
        closed = True
    else:
        settled, closed = dict.fromkeys(j.key for j in plan.inversions_cached), False
        if plan.transfers_todo and plan.inversions_todo:  # load the model now, while inversions run
            pool.start()
    pending = list(plan.transfers_todo.parts)  # one TransferSet per embedding and config
    while True:
        ready = [p for p in pending if p.embedding.key in settled and settled[p.embedding.key] is None]
        lost = [p for p in pending if settled.get(p.embedding.key) is not None
                or (closed and p.embedding.key not in settled)]
        pending = [p for p in pending if p.embedding.key not in settled and not closed]
        for part in lost:
            error = settled.get(part.embedding.key) or "no embedding"
            sink.add({"transfers": [transfer_row(j, f"reference {j.reference_id}: its inversion failed: {error}", 0.0,
                                                 "plan") for j in part.jobs()]})
            progress.advance(len(part), len(part))
        for chunk in _chunks(ready, SERVE_CHUNK):  # TransferJobs are made a chunk at a time, never all at once
            jobs = [job for part in chunk for job in part.jobs()]
            jobs = _recover(jobs, "transfers", out, claims, sink, lambda job: transfer_row(job, None, 0.0, "recovered"),
                            lambda job: elsewhere(TransferBatch((job,))), log,
                            here=set().union(*(part.stored_keys() for part in chunk)),
                            claim_of=_job_claim)
            serve_claimed(pool, transfer_batches(jobs, batch_size), claims, lambda batch: list(map(_job_claim, batch.jobs)),
                          _available(out, "transfers"), on_done, elsewhere, sink.flush)
        pool.served()  # what was expected is served (or was not this stage's to serve): hold no worker for it
        if closed:
            break
        events, closed = feed.take()
        settled.update(events)
    sink.flush()
    progress.finish()
    return result


def _chunks(parts: list[TransferSet], size: int):
    """Consecutive runs of `parts` holding about `size` transfers each (a part is never cut)."""
    chunk, n = [], 0
    for part in parts:
        chunk.append(part)
        n += len(part)
        if n >= size:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


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
    chunks = (([j for part in chunk for j in part.jobs()] for chunk in _chunks(todo.parts, SERVE_CHUNK))
              if isinstance(todo, Transfers) else [list(todo)])
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

    for jobs in chunks:
        jobs.sort(key=lambda job: job.key)  # a batch in one claim range
        batches = [MetricsBatch(tuple(jobs[i : i + METRICS_BATCH])) for i in range(0, len(jobs), METRICS_BATCH)]
        serve_claimed(pool, batches, claims, lambda batch: [metrics_claim(j.key) for j in batch.jobs],
                      measured_elsewhere, on_done, lambda batch: None, sink.flush)
    sink.flush()
    progress.finish()
    return result


@task(name="record-run", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def record_run(run_id: str, plan: Plan, inversions: StageResult, transfers: StageResult, measured: StageResult,
               started_at: dt.datetime, wall_seconds: float, out: str, workers: list[WorkerStats]) -> RunSummary:
    """Append the run's row to catalog/runs; the run's summary."""
    summary = RunSummary(
        run_id=run_id, manifest_path=redact(plan.manifest_path), manifest_sha256=plan.manifest_sha256,
        started_at=started_at, finished_at=dt.datetime.now(dt.timezone.utc),
        inversions_computed=inversions.computed, inversions_cached=len(plan.inversions_cached) + inversions.elsewhere,
        transfers_computed=transfers.computed, transfers_cached=len(plan.transfers_cached) + transfers.elsewhere,
        failed=inversions.failed + transfers.failed, metrics_computed=transfers.measured + measured.measured,
        wall_seconds=round(wall_seconds, 2), out=out, workers=workers,
        errors=(inversions.errors + transfers.errors)[:20],
    )
    append_rows(out, "runs", [summary.catalog_row()])
    return summary
