"""What every stage of a bulk run shares: committing rows to the catalogs, and finding work done already.

`RowSink` buffers a stage's rows and appends them as Parquet parts every `FLUSH_SECONDS` (or
`FLUSH_ROWS` rows), so a crash loses at most the rows of the last few seconds; the artifacts themselves
are already in the store and a re-run records them by key without computing them again (`recover`).
Seconds, not a row count, set a part's size: at 1,000 rows/s a part every 50 rows cost the driver
about 13% of its time and left 20,000 parts per million rows (benchmarks/bench_execute.py). `recover` records artifacts a killed run left in
the store without their row; `available` tells a stage which items another run finished meanwhile.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from mtcore.data.catalog import append_rows, ok_keys
from mtcore.errors import redact, secret_values
from tasks.claims import Claims
from tasks.items import Rows, TransferSet
from tasks.plan import stored
from tasks.results import StageResult

FLUSH_ROWS = 20_000
FLUSH_SECONDS = 5.0
SERVE_CHUNK = 4096  # transfers made into work items and handed to the pool at a time
KEY_COLUMNS = {"embeddings": "embedding_key", "transfers": "transfer_key", "metrics": "transfer_key"}
KEYED = ("embeddings",)
"""Tables whose ok and failed keys a stage keeps in memory (the transfer stage needs every embedding's
fate); a million transfers keep none (about 150 MB of strings at 10^6), only their counts."""
ERRORS_KEPT = 100
"""Failed rows whose error a stage keeps for its summary (every error is in the catalogs)."""


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
        secrets = secret_values()  # read once per call, not per string
        for table, table_rows in rows.items():
            for row in table_rows:
                row["run_id"] = self.run_id
                for column, value in row.items():  # no secrets in catalogs (tokens in paths, URLs, errors)
                    if isinstance(value, str):
                        row[column] = redact(value, secrets)
                if table == "metrics":
                    self.result.measured += 1
                elif row["status"] == "ok":
                    if recovered:
                        self.result.elsewhere += 1
                    else:
                        self.result.computed += 1
                    if table in KEYED:
                        self.result.ok_keys.add(row[KEY_COLUMNS[table]])
                else:
                    self.result.failed += 1
                    if table in KEYED:
                        self.result.failed_keys[row[KEY_COLUMNS[table]]] = row["error"]
                    if len(self.result.errors) < ERRORS_KEPT:
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
        # Arrow's allocator (mimalloc) keeps the pages a part's table used: hand them back, or a long run's
        # RSS creeps up by them (benchmarks/bench_execute.py, rss_growth_kb_per_1k_rows)
        pa.default_memory_pool().release_unused()


def available(out: str, table: str):
    """done_elsewhere for serve_claimed: the items whose keys have an ok row and a file in the store now."""
    def done(items: list) -> list:
        keys = lambda item: [j.key for j in item.jobs] if hasattr(item, "jobs") else [item.key]  # noqa: E731
        ok = ok_keys(out, table, among={k for i in items for k in keys(i)})
        here = stored(out, table, ok)
        return [i for i in items if all(k in here for k in keys(i))]
    return done


def recover(jobs: list, table: str, out: str, claims: Claims | None, sink: RowSink, row_fn, on_elsewhere,
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


def chunks(parts: list[TransferSet], size: int):
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


__all__ = ["RowSink", "available", "recover", "chunks", "FLUSH_ROWS", "FLUSH_SECONDS", "SERVE_CHUNK"]
