"""The invert stage: a motion embedding for every reference the store lacks, on the pool's workers.

Each settled embedding (stored or failed) is published on the feed as it is settled, so that the
transfer stage, running beside this one, starts that reference's transfers at once (tasks.feed).
"""

from __future__ import annotations

from collections import defaultdict

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.claims import Claims, serve_claimed
from tasks.feed import EmbeddingFeed
from tasks.items import InversionBatch, InversionJob, Rows
from tasks.plan import Plan
from tasks.pool import WorkerPool
from tasks.progress import StageProgress
from tasks.results import StageResult
from tasks.rows import embedding_row, one_line
from tasks.sink import RowSink, available, recover


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

    todo = recover(plan.inversions_todo, "embeddings", out, claims, sink,
                    lambda job: embedding_row(job, None, None, 0.0, "recovered"),
                    lambda job: elsewhere(InversionBatch((job,))), log)
    for key in list(result.ok_keys):  # cached, recovered from the store, or made by another run
        publish(key)
    serve_claimed(pool, inversion_batches(todo, batch_size), claims, lambda batch: [j.key for j in batch.jobs],
                  available(out, "embeddings"), on_done, elsewhere, sink.flush)
    sink.flush()
    progress.finish()
    return result


def inversion_batches(jobs: list[InversionJob], batch_size: int) -> list[InversionBatch]:
    """Group inversions that share a config (one UNet call per step) and cut groups into batches."""
    groups: dict = defaultdict(list)
    for job in jobs:
        groups[job.config].append(job)
    return [InversionBatch(tuple(g[i : i + batch_size])) for g in groups.values() for i in range(0, len(g), batch_size)]


__all__ = ["invert_stage", "inversion_batches"]
