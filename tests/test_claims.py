"""Claims between runs sharing one output folder: what another run finished after this run's plan is
neither computed nor recorded again. In-process (no Ray, no Prefect server): the runs' interleaving is
set by hand; tests/test_faults.py runs two real `mt run` processes on one folder."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from mtcore.catalog import append_rows, read_table, store_path
from tasks.claims import Claims, serve_claimed
from tasks.results import StageResult
from tasks.stages import RowSink, _available, _recover
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
        serve_claimed(pool, planned, claims, lambda item: [item.key], _available(str(tmp_path), "transfers"),
                      lambda item, rows: None, elsewhere.append, lambda: claims.release([K2]))
        assert claims.held == set()
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
        todo = _recover(planned, "transfers", str(tmp_path), claims, sink,
                        lambda job: transfer_row(job.key, worker="recovered"), elsewhere.append,
                        logging.getLogger("test"))
        sink.flush()
        assert claims.held == set()
    assert todo == []
    rows = read_table(tmp_path, "transfers")
    assert sorted(zip(rows.transfer_key, rows.run_id, rows.worker)) == [(K1, "run-a", "w1"), (K2, "run-b", "recovered")]
    assert [job.key for job in elsewhere] == [K1]  # the stage counts it as done by another run
    assert result.elsewhere == 1 and result.computed == 0 and result.ok_keys == {K2}  # K2: recovered here
