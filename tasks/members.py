"""Who serves in a pool, and since when: the pool's membership, kept by the driver.

A worker *joins* when it has started and loaded the model (at the pool's start, or later: an elastic
pool's worker that Ray placed on a node that joined). It *leaves* when its process or node dies while
serving: its item goes back to the queue with its own try count (tasks.dispatch), so it never waits
for a restart that may not fit anywhere any more. Ray restarts the worker where there is room
(`max_restarts`); it *comes back* once restarted and loaded, and is lent out again. A worker Ray
cannot restart any more is *gone for good*. Every change is logged with the number of workers
serving, and the summary gives each worker's join and leave times (WorkerStats.joined_s / left_s).

Why Ray's restart and not `max_task_retries`: with task retries, the item of a lost node waits for its
worker's restart, which never comes on a cluster that shrank (measured: the elastic test hung until the
capacity wait); here it goes to the next free worker at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One worker of a pool, as the driver knows it."""

    actor: Any
    actor_id: str
    name: str
    """The worker's process as it last said ("host/node-<id>/pid-<pid>")."""
    joined: float
    """Seconds after the pool began serving that it joined (0: one of the first)."""
    left: float | None = None
    """Seconds after the pool began serving that it last left; None while it serves."""
    items: int = 0
    """Items' sizes (inversions plus transfers) it served, over its restarts."""
    device: str = ""
    model_id: str = ""


class Members:
    """The pool's workers: joined, away (restarting), asked for and not started, loading. Thread-safe:
    the two dispatchers of a shared pool report to it at once."""

    def __init__(self, leases, label: str, logger=None):
        """`leases`: the pool's tasks.dispatch.Leases (a worker that joins or comes back is lent from it);
        `label`: the pool's name in the log."""
        self.leases, self.label = leases, label
        self.logger = logger or (lambda: log)
        """A callable that returns the logger (the Prefect run's, inside a flow)."""
        self.t0 = time.monotonic()
        self.members: dict[Any, Member] = {}  # by actor handle (handles hash by actor id)
        self._waiting: dict = {}  # info() reference -> (actor, coming back?): not started, or restarting
        self._loading: dict = {}  # load() reference -> (actor, coming back?)
        self._lock = threading.Lock()
        self._polling = threading.Lock()

    def _now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def serving(self) -> int:
        return sum(m.left is None for m in self.members.values())

    def join(self, actor, info: dict) -> None:
        """A worker started and loaded: lent out from now on."""
        with self._lock:
            self.members[actor] = Member(actor, info["actor_id"], info["worker"], self._now(),
                                         device=info.get("device", ""), model_id=info.get("model_id", ""))
        self.leases.add(actor)

    def started(self) -> None:
        """The pool's first workers serve from now on: times count from here."""
        self.t0 = time.monotonic()
        for member in self.members.values():
            member.joined = 0.0

    def ask(self, actor) -> None:
        """A worker asked for that has not started (no room on any node yet): it joins when Ray places it."""
        with self._lock:
            self._waiting[actor.info.remote()] = (actor, False)

    def lost(self, actor) -> None:
        """The worker died while serving (tasks.dispatch): away until Ray restarts it, or gone for good."""
        member = self._member(actor)
        with self._lock:
            member.left = self._now()
            self._waiting[actor.info.remote()] = (actor, True)
        self._say(f"a worker left (its process or node died): {member.name}")

    def served(self, actor, item) -> None:
        member = self._member(actor)
        member.items += getattr(item, "size", 1)

    def _member(self, actor) -> Member:
        with self._lock:
            if actor not in self.members:  # a worker lent without joining here (a plain `dispatch`)
                self.members[actor] = Member(actor, "", "a worker", self._now())
            return self.members[actor]

    def expecting(self) -> bool:
        """Whether some worker may still join or come back."""
        return bool(self._waiting or self._loading)

    def poll(self) -> None:
        """Take on the workers started or restarted since (each loads the model in the background and is
        lent out once loaded); drop those that cannot serve. Never blocks."""
        if not self.expecting() or not self._polling.acquire(blocking=False):
            return  # nothing to look for, or the other dispatcher of a shared pool is looking right now
        try:
            for ref, (actor, back) in self._ready(self._waiting):
                try:
                    problem = ray.get(ref)["problem"]
                except ray.exceptions.ActorUnavailableError:  # its node is going away right now: ask again
                    with self._lock:
                        self._waiting[actor.info.remote()] = (actor, back)
                    continue
                except ray.exceptions.RayActorError as exc:  # dead: Ray will not restart it
                    self._gone(actor, back, f"gone for good ({str(exc).splitlines()[0][:160]})")
                    continue
                if problem:  # this node does not see OUT: not used
                    ray.kill(actor, no_restart=True)
                    self._gone(actor, back, f"not used: {problem}")
                    continue
                with self._lock:
                    self._loading[actor.load.remote()] = (actor, back)
            for ref, (actor, back) in self._ready(self._loading):
                try:
                    info = ray.get(ref)  # load() returns the worker's info
                except Exception as exc:  # noqa: BLE001 (a worker that cannot load is not used)
                    ray.kill(actor, no_restart=True)
                    self._gone(actor, back, f"could not load the model: {str(exc).splitlines()[0][:200]}")
                    continue
                if back:
                    member = self._member(actor)
                    member.left, member.name = None, info["worker"]
                    self.leases.release(actor)
                    self._say(f"a worker came back: {member.name}")
                else:
                    self.join(actor, info)
                    self._say(f"a worker joined: {info['worker']}")
        finally:
            self._polling.release()

    def _ready(self, refs: dict) -> list:
        with self._lock:
            if not refs:
                return []
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            return [(ref, refs.pop(ref)) for ref in ready]

    def _gone(self, actor, back: bool, why: str) -> None:
        if back:
            self.leases.retire(actor)
        self._say(f"a worker is {why}" if back else f"a worker that started is {why}")

    def _say(self, what: str) -> None:
        waiting = len(self._waiting) + len(self._loading)
        self.logger().info("pool %s at %.0f s: %s; %d workers serve%s", self.label, self._now(), what, self.serving(),
                         f" ({waiting} more asked for or restarting)" if waiting else "")

    def actors(self) -> list:
        """Every worker the pool has had or asked for (the pool kills them when it closes)."""
        with self._lock:
            return [*self.members, *(actor for actor, _ in [*self._waiting.values(), *self._loading.values()])]
