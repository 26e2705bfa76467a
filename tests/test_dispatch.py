"""Leases on a shared pool's workers (tasks.dispatch.Leases): one item per worker between two dispatchers,
and the priority one served first. In-process, no Ray."""

from __future__ import annotations

from tasks.dispatch import Leases


def test_a_priority_dispatcher_gets_freed_workers_first():
    leases = Leases(["w1", "w2"])
    assert leases.acquire(False, 5) == "w1"  # nobody else waits: the invert stage takes a worker
    assert leases.acquire(True, 3) == "w2"  # the transfer stage takes the other, 2 of its items still wait
    assert leases.acquire(False, 4) is None  # no worker free
    leases.release("w2")
    assert leases.acquire(False, 4) is None, "a freed worker goes to the waiting priority items"
    assert leases.acquire(True, 2) == "w2"
    leases.done(True)  # the transfer stage has handed out all it had
    leases.release("w1")
    assert leases.acquire(False, 4) == "w1"


def test_an_expected_priority_item_holds_a_freed_worker_until_served_and_never_after_the_end():
    leases = Leases(["w1"])
    worker = leases.acquire(False, 2)
    leases.release(worker)
    leases.expect()  # an embedding was stored: its transfers are on their way
    assert leases.acquire(False, 1) is None
    assert leases.acquire(True, 1) == "w1"
    leases.release("w1")
    leases.expect()
    leases.done(True, final=True)  # the transfer stage ended (nothing to serve after all)
    leases.expect()  # a late hint holds nothing once the stage has ended
    assert leases.acquire(False, 1) == "w1"


def test_a_pool_whose_workers_all_died_says_so():
    leases = Leases(["w1", "w2"])
    leases.retire("w1")
    assert leases.alive == 1
    leases.retire()
    assert leases.alive == 0


def test_a_hint_nobody_follows_up_lapses(monkeypatch):
    import tasks.dispatch as dispatch

    now = [100.0]
    monkeypatch.setattr(dispatch, "_clock", lambda: now[0])
    leases = Leases(["w1"])
    leases.expect()  # transfers announced, but the transfer stage never asks (another run did them, say)
    assert leases.acquire(False, 1) is None
    now[0] += dispatch.HINT_SECONDS + 0.1
    assert leases.acquire(False, 1) == "w1", "held past the hint: the invert stage would wait forever"
