"""Claims between runs sharing one output folder: what another run finished after this run's plan is
neither computed nor recorded again. In-process (no Ray, no Prefect server): the runs' interleaving is
set by hand; tests/test_faults.py runs two real `mt run` processes on one folder."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from mtcore.data.catalog import append_rows, read_table, store_path
from tasks.claims import Claims, serve_claimed
from tasks.results import StageResult
from tasks.sink import RowSink, available, recover
from tests.test_catalog import transfer_row

K1, K2 = "a1" + "0" * 62, "b2" + "0" * 62


def finish_elsewhere(out, key: str) -> None:
    """Another run does `key` completely: claims it, writes its video and row, releases the claim."""
    with Claims(out, "run-a") as other:
        assert other.claim(key)
        path = store_path(out, "transfers", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"mp4")
        append_rows(out, "transfers", [transfer_row(key, run_id="run-a")])
        other.release([key])


class RecordingPool:
    def __init__(self):
        self.served = []

    def map(self, items, on_done):
        for item in items:
            self.served.append(item)
            on_done(item, {"transfers": []})


def test_an_item_another_run_finished_after_the_plan_is_not_served_again(tmp_path):
    planned = [SimpleNamespace(key=K1), SimpleNamespace(key=K2)]  # this run's plan: both to do
    finish_elsewhere(tmp_path, K1)
    pool, elsewhere = RecordingPool(), []
    with Claims(tmp_path, "run-b") as claims:
        serve_claimed(pool, planned, claims, lambda item: [item.key], available(str(tmp_path), "transfers"),
                      lambda item, rows: None, elsewhere.append, lambda: claims.release([K2]))
        assert claims.held == {}
    assert [i.key for i in pool.served] == [K2]
    assert [i.key for i in elsewhere] == [K1]
    assert not list((tmp_path / "claims").rglob("*" + "0" * 62)), "a claim was left behind"


def test_a_video_whose_row_another_run_committed_is_not_recorded_twice(tmp_path):
    # K1: finished by another run after this run's plan; K2: in the store without a row (a killed run)
    finish_elsewhere(tmp_path, K1)
    orphan = store_path(tmp_path, "transfers", K2)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"mp4")
    planned = [SimpleNamespace(key=K1), SimpleNamespace(key=K2)]
    result, elsewhere = StageResult(), []
    with Claims(tmp_path, "run-b") as claims:
        sink = RowSink(tmp_path, "transfers", result, "run-b", claims)
        todo = recover(planned, "transfers", str(tmp_path), claims, sink,
                        lambda job: transfer_row(job.key, worker="recovered"), elsewhere.append,
                        logging.getLogger("test"))
        sink.flush()
        assert claims.held == {}
    assert todo == []
    rows = read_table(tmp_path, "transfers")
    assert sorted(zip(rows.transfer_key, rows.run_id, rows.worker)) == [(K1, "run-a", "w1"), (K2, "run-b", "recovered")]
    assert [job.key for job in elsewhere] == [K1]  # the stage counts it as done by another run
    assert result.elsewhere == 1 and result.computed == 0  # K2: recovered here


def test_transfers_are_claimed_by_key_range_a_bounded_number_per_embedding(tmp_path):
    """400 transfers of 2 embeddings take at most 2 x 16 claims (one per key range), not 400; a range
    another run holds is left to it: what it finished is not served again, what it gave up is served."""
    import hashlib

    from tasks.transfer import transfer_batches, transfer_claim

    embeddings = ["e" * 63 + "0", "e" * 63 + "1"]
    jobs = [SimpleNamespace(key=hashlib.sha256(f"{e}:{t}".encode()).hexdigest(), embedding_key=e, config=None)
            for e in embeddings for t in range(200)]
    claim_of = lambda job: transfer_claim(job.embedding_key, job.key)  # noqa: E731
    finished_range, abandoned_range = claim_of(jobs[0]), claim_of(jobs[-1])
    finished = [j for j in jobs if claim_of(j) == finished_range]
    other = Claims(tmp_path, "run-a")
    assert other.claim(finished_range) and other.claim(abandoned_range)

    class Pool(RecordingPool):
        def map(self, items, on_done):
            if other.held:  # run A, meanwhile: finishes one range, gives the other up
                for job in finished:
                    finish_elsewhere_row(tmp_path, job.key)
                other.close()
            super().map(items, on_done)

    pool, elsewhere = Pool(), []
    with Claims(tmp_path, "run-b") as claims:
        serve_claimed(pool, transfer_batches(jobs, 4), claims, lambda batch: [claim_of(j) for j in batch.jobs],
                      available(str(tmp_path), "transfers"),
                      lambda batch, rows: claims.release([claim_of(j) for j in batch.jobs]), elsewhere.append,
                      lambda: None, poll=0.01)
        assert claims.held == {}
        ranges = {claim_of(j) for j in jobs}
        assert claims.created == len(ranges) - 1 and len(ranges) <= 32 < len(jobs)  # A's finished range: never
    served = [j.key for batch in pool.served for j in batch.jobs]
    assert sorted(served) == sorted(j.key for j in jobs if j not in finished)  # each once, none of A's
    assert sorted(j.key for batch in elsewhere for j in batch.jobs) == sorted(j.key for j in finished)
    assert not [p for p in (tmp_path / "claims").rglob("*") if p.is_file()], "a claim was left behind"


def test_a_claim_taken_twice_by_one_run_is_given_back_twice(tmp_path):
    with Claims(tmp_path, "run-a") as a, Claims(tmp_path, "run-b") as b:
        assert a.claim(K1) and a.claim(K1) and a.created == 1
        a.release([K1])
        assert not b.claim(K1), "released once of twice: still held"
        a.release([K1])
        assert b.claim(K1)


def finish_elsewhere_row(out, key: str) -> None:
    """Another run's finished video (its file and ok row), under a claim it already holds."""
    path = store_path(out, "transfers", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"mp4")
    append_rows(out, "transfers", [transfer_row(key, run_id="run-a")])
