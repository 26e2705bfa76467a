"""Serving items on a pool's workers (dispatch), and leases on them: which worker is free for the next
item, when two stages share one pool.

A worker runs one item at a time (one in flight, so that a dead worker loses one item, and so that a
GPU holds one item's activations). With one pool serving both stages at once (streaming: a reference's
transfers start while other inversions still run), two dispatchers send items to the same workers; a
lease keeps that to one item per worker, and priority decides who gets a freed worker: a dispatcher
asking with priority (the transfer stage) is served first, so that videos do not queue behind every
inversion; the other (the invert stage) gets a worker only while no priority item waits.
"""

from __future__ import annotations

import os
import threading
from collections import deque
import time
from typing import Any, Callable, Iterable

import ray

from tasks.members import Members

MAX_TASK_RETRIES = 2
"""Tries again of an item whose worker died while serving it (so 3 tries in all)."""
LEASE_POLL = 0.02
"""Seconds between looks for a freed worker when two dispatchers share a pool."""
HINT_SECONDS = 5.0
"""How long a freed worker is held for priority items announced but not yet asked for (Leases.expect)."""
GROW_SECONDS = 1.0
"""How often a dispatcher with items left takes on the workers that joined or came back meanwhile."""
_clock = time.monotonic
CAPACITY_WAIT = float(os.environ.get("MT_CAPACITY_WAIT", "120"))
"""Seconds to wait for a node that can host a worker (an autoscaler adding one) before failing what is left."""
WorkItem = Any
"""An item a worker serves (tasks.pool.WorkItem)."""


class WorkerDied(RuntimeError):
    """An item's worker process died on every try (or could not be restarted)."""


class Leases:
    """The free workers of one pool, lent to the dispatchers serving it."""

    def __init__(self, actors: list):
        self._free = list(actors)
        self._cond = threading.Condition()
        self.alive = len(actors)
        """Workers not yet known to be gone for good."""
        self._waiting = 0  # items of a priority dispatcher waiting for a worker
        self._hint_until = 0.0  # until then, freed workers are held for priority items on their way
        self._expecting = True  # whether priority items may still come

    def acquire(self, priority: bool = False, waiting: int = 1) -> Any | None:
        """A free worker, or None. `waiting`: how many items the caller has waiting (with priority, no
        other caller gets a worker while any of them waits)."""
        with self._cond:
            if priority:
                self._waiting, self._hint_until = waiting, 0.0
            elif self._waiting or _clock() < self._hint_until:
                return None
            if not self._free:
                return None
            if priority:
                self._waiting = waiting - 1
            return self._free.pop(0)  # the longest idle: work spreads over every worker

    def add(self, actor) -> None:
        """A new worker joined the pool (an elastic pool growing onto a node that joined): free at once."""
        with self._cond:
            self._free.append(actor)
            self.alive += 1
            self._cond.notify_all()

    def release(self, actor) -> None:
        """The worker has finished its item: free for the next."""
        with self._cond:
            self._free.append(actor)
            self._cond.notify_all()

    def retire(self, actor=None) -> None:
        """The worker is gone for good (None: every worker left)."""
        with self._cond:
            self.alive = 0 if actor is None else self.alive - 1
            self._cond.notify_all()

    def expect(self) -> None:
        """Priority items are on their way (an embedding their transfers wait for was just stored): hold
        freed workers for them until the priority dispatcher asks, says it is done, or HINT_SECONDS pass
        (so that a hint nobody follows up delays the other dispatcher, never stops it)."""
        with self._cond:
            if self._expecting:
                self._hint_until = _clock() + HINT_SECONDS

    def done(self, priority: bool, final: bool = False) -> None:
        """A dispatcher stops: a priority one has no items waiting any more (`final`: and will have none:
        from now on `expect` holds nothing)."""
        with self._cond:
            if priority:
                self._waiting, self._hint_until = 0, 0.0
                self._expecting = self._expecting and not final
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Until a worker is freed or retired, or `timeout` seconds."""
        with self._cond:
            self._cond.wait(timeout)


def _alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _hosts(request: dict[str, float]) -> list[dict[str, float]]:
    """The resources of each live node that offers every resource of `request` (in total, busy or not)."""
    offers = [node.get("Resources", {}) for node in _alive_nodes()]
    return [r for r in offers if all(r.get(k, 0.0) >= v for k, v in request.items() if v > 0)]


def _feasible(request: dict[str, float]) -> bool:
    """Whether some live node offers every resource of `request` (in total, busy or not)."""
    return bool(_hosts(request))


def _describe(request: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in request.items() if v > 0)


def _offers() -> str:
    return "; ".join(f"{n.get('NodeManagerAddress')}: {_describe(n.get('Resources', {}))}" for n in _alive_nodes()) or "none"


def dispatch(actors: list, items: Iterable[WorkItem], on_done: Callable[[WorkItem, Any], None],
             requested: dict[str, float] | None = None, capacity_wait: float | None = None,
             leases: Leases | None = None, priority: bool = False, shared: bool = False,
             members: Members | None = None) -> None:
    """Run `actor.run(item)` for every item, one in flight per actor, results in completion order.

    An item whose worker died while serving it (its process, or its node) goes back to the queue and is
    served by the next free worker, up to MAX_TASK_RETRIES + 1 tries in all; then it is reported as a
    WorkerDied error and the run goes on. The dead worker leaves the rotation until Ray has restarted
    it where there is room (`members`, tasks.members.Members: it comes back, or is gone for good); when
    no worker is left at all, the remaining items are reported failed. Other errors keep the actor in
    rotation. With `requested` (what one worker asks of a node), a cluster where no live node offers it
    any more for `capacity_wait` seconds (default CAPACITY_WAIT) fails the items left, saying so,
    instead of waiting forever for a restart.
    `leases`: the pool's free workers, kept from call to call; `shared`: another dispatcher serves the
    same pool at once; `priority`: this one gets freed workers first. About every GROW_SECONDS while
    items are left, `members.poll()` lends out the workers that have joined or come back meanwhile.
    """
    todo = deque(items)
    leases = leases if leases is not None else Leases(actors)
    members = members if members is not None else Members(leases, "default")
    running: dict[Any, tuple[Any, WorkItem]] = {}
    tries: dict[int, int] = {}  # id(item) -> times its worker died serving it
    wait = CAPACITY_WAIT if capacity_wait is None else capacity_wait
    infeasible_since: float | None = None
    checked = polled = time.monotonic()

    def no_capacity() -> bool:
        """Every 5 s: whether no live node has offered what a worker needs for `wait` seconds; if so, fail
        every item left, saying so."""
        nonlocal checked, infeasible_since
        if not requested or time.monotonic() - checked < 5.0:
            return False
        checked = time.monotonic()
        if _feasible(requested):
            infeasible_since = None
            return False
        if infeasible_since is None:
            infeasible_since = checked
        if checked - infeasible_since <= wait:
            return False
        error = WorkerDied(f"no capacity left: no live node of the cluster offers what a worker needs "
                           f"({_describe(requested)}) after waiting {wait:.0f} s; add such a node and run again")
        for _, item in running.values():
            on_done(item, error)
        for rest in todo:
            on_done(rest, error)
        for actor in {*actors, *members.actors()}:
            ray.kill(actor, no_restart=True)
        running.clear()  # killed: not handed back to the pool below
        leases.retire()
        return True

    try:
        while todo or running:
            if todo and time.monotonic() - polled >= GROW_SECONDS:
                members.poll()
                polled = time.monotonic()
            while todo and (actor := leases.acquire(priority, len(todo))) is not None:
                item = todo.popleft()
                running[actor.run.remote(item)] = (actor, item)
            if not running:
                if leases.alive <= 0:  # every actor died for good
                    for rest in todo:
                        on_done(rest, RuntimeError("every worker died"))
                    return
                if no_capacity():
                    return
                # the other dispatcher has every worker, or they are restarting: until one is freed or back
                leases.wait(LEASE_POLL if shared or not members.expecting() else GROW_SECONDS / 4)
                continue
            # a shared pool's free worker may go to this dispatcher: look again every LEASE_POLL seconds
            timeout = LEASE_POLL if shared and todo else (5.0 if requested else None)
            if todo and members.expecting():
                timeout = min(timeout or GROW_SECONDS, GROW_SECONDS)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
            if not ready:
                if no_capacity():
                    return
                continue
            actor, item = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
                leases.release(actor)
                members.served(actor, item)
            except ray.exceptions.RayActorError as exc:  # its worker died: the item goes to the next free one
                members.lost(actor)
                tries[id(item)] = died = tries.get(id(item), 0) + 1
                if died <= MAX_TASK_RETRIES:
                    todo.appendleft(item)
                    continue
                result = WorkerDied(f"worker died {died} times on this item ({str(exc).splitlines()[0][:160]})")
            except Exception as exc:  # an error the worker did not turn into rows
                result = exc
                leases.release(actor)
            on_done(item, result)
    finally:
        # stopped early (an error while committing results): the workers still busy go back to the pool, so
        # that the other stage of a shared pool fails or finishes instead of waiting for them forever
        for actor, _ in running.values():
            leases.release(actor)
        leases.done(priority)


__all__ = ["Leases", "dispatch", "WorkerDied"]
