"""The transfer stage: every (embedding x target x seed) the store lacks, a batch of targets per UNet call.

It runs beside the invert stage and starts a reference's transfers as soon as its embedding is
stored. Claims cover key ranges (`transfer_claim`: 16 per embedding), not single videos, so a
million transfers take at most 16 claims per reference.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.claims import Claims, serve_claimed
from tasks.feed import EmbeddingFeed
from tasks.items import Rows, TransferBatch, TransferJob
from tasks.plan import Plan
from tasks.pool import WorkerPool
from tasks.progress import StageProgress
from tasks.results import StageResult
from tasks.rows import one_line, transfer_row
from tasks.sink import SERVE_CHUNK, RowSink, available, chunks, recover


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
        for chunk in chunks(ready, SERVE_CHUNK):  # TransferJobs are made a chunk at a time, never all at once
            jobs = [job for part in chunk for job in part.jobs()]
            jobs = recover(jobs, "transfers", out, claims, sink, lambda job: transfer_row(job, None, 0.0, "recovered"),
                            lambda job: elsewhere(TransferBatch((job,))), log,
                            here=set().union(*(part.stored_keys() for part in chunk)),
                            claim_of=_job_claim)
            serve_claimed(pool, transfer_batches(jobs, batch_size), claims, lambda batch: list(map(_job_claim, batch.jobs)),
                          available(out, "transfers"), on_done, elsewhere, sink.flush)
        pool.served()  # what was expected is served (or was not this stage's to serve): hold no worker for it
        if closed:
            break
        events, closed = feed.take()
        settled.update(events)
    sink.flush()
    progress.finish()
    return result


__all__ = ["transfer_stage", "transfer_claim", "transfer_batches"]
