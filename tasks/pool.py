"""GPU workers in one place: Ray actors that keep the model resident and serve many items.

Mechanism (measured; see docs/pipeline.md "Why actors, not a Prefect task per item"): Prefect runs one task
per *stage*; inside a stage, items go to a fixed set of `ModelWorker` actors, each loading the
pipeline once in `__init__` and then serving work items (an inversion, a batch of transfers) through
one method, `run`. One item in flight per actor; a finished item's rows come back at once so progress
and catalogs advance as work does. The pool starts Ray and its actors when the first item arrives:
a run with nothing to compute never starts Ray.

Faults: a worker process that dies (OOM, preemption, a lost node) is restarted by Ray where there is
room (`max_restarts`; the new process loads the model again, which `LoadLog` counts), and the item it
was serving goes back to the queue for the next free worker, up to MAX_TASK_RETRIES + 1 tries in all
(tasks.dispatch); an item that kills its worker every time then fails alone ("worker died 3 times on
this item") and the run goes on. The restarted worker comes back into the rotation once loaded
(tasks.members). Workers are spread over nodes (`SPREAD`), so a lost node's worker restarts wherever
there is room. An elastic pool (`PoolConfig.max_workers`) also asks for workers that do not fit yet:
they join when a node with room does.

No shared filesystem is assumed: workers read inputs and write artifacts through the storage layer
(mtcore.io.storage), and before any model loads each worker looks for a probe the driver wrote in OUT,
so a worker that cannot reach OUT (a local OUT on a multi-host cluster, missing credentials) stops
the run at once with one line that says what to do. When no node can host a worker any more (its
node was lost and nothing else offers its resources), the items left fail with a clear error after
`CAPACITY_WAIT` seconds instead of waiting forever.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import ray

from mtcore.errors import InputError
from mtcore.io.outroot import check_probe
from mtcore.io.storage import storage
from tasks.dispatch import CAPACITY_WAIT, Leases, _describe, _feasible, _hosts, _offers, dispatch
from tasks.members import Members
from tasks.results import WorkerStats

log = logging.getLogger(__name__)

MAX_RESTARTS = 16
"""Restarts of one worker in a run before Ray gives it up."""


class LoadLog:
    """Counts model loads per worker across restarts (a restarted worker is a new process, its own
    counters start at zero): each load leaves an empty file OUT/.loads/<pool>/<actor id>.<pid>, written
    through the storage layer like every other file (no worker writes a path the driver cannot see).

    Files, not an actor: an extra Ray actor process would take CPU from the model worker on small
    machines (measured: 1.9 CPU-s over a 190-s run).
    """

    def __init__(self, out: str):
        self.out = out
        self.folder = f".loads/{uuid.uuid4().hex}"

    def record(self, actor_id: str) -> None:
        storage(self.out).write_bytes(f"{self.folder}/{actor_id}.{os.getpid()}", b"")

    def counts(self) -> dict[str, int]:
        loads: dict[str, int] = {}
        for rel in storage(self.out).files(self.folder):
            actor_id = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            loads[actor_id] = loads.get(actor_id, 0) + 1
        return loads

    def remove(self) -> None:
        storage(self.out).delete_tree(self.folder)


class WorkItem(Protocol):
    """What a worker can serve: the plan's items (tasks.plan: InversionJob, InversionBatch, TransferBatch,
    MetricsBatch; data, served by tasks.work.run_item), or any object that brings its own
    `run(model, out, worker)`. `size` counts it in a worker's tally."""

    size: int


@ray.remote
class ModelWorker:
    """Holds one loaded SVD pipeline; `num_gpus`/`num_cpus`/resources are set by `WorkerPool` at creation.

    Creating it only checks that OUT is reachable (the driver's probe) and loads nothing: `load` does,
    once every worker of the pool has passed the check. A worker Ray restarts (its process or node
    died) loads again by itself.
    """

    def __init__(self, model: str, revision: str | None, device: str | None, dtype: str | None, threads: int,
                 out: str, load_log, probe: tuple[str, str] | None = None):
        ctx = ray.get_runtime_context()
        # scratch copies of remote files go to Ray's own temp folder on this node, removed after use
        os.environ.setdefault("MT_SCRATCH", os.path.join(ctx.get_temp_dir(), "mt-scratch"))
        self.spec = (model, revision, device, dtype, threads)
        self.out, self.load_log = out, load_log
        self.actor_id = ctx.get_actor_id()
        self.name = f"{socket.gethostname()}/node-{ctx.get_node_id()[:8]}/pid-{os.getpid()}"
        self.model = None
        self.problem = check_probe(out, *probe) if probe else None
        if ctx.was_current_actor_reconstructed and self.problem is None:
            self.load()

    def load(self) -> dict:
        """Load the model (once per process); `info()` then (its device and the model's identity)."""
        if self.problem:
            raise InputError(self.out, self.problem)
        if self.model is not None:
            return self.info()
        import torch

        from mtcore.method.models import load_model

        model, revision, device, dtype, threads = self.spec
        torch.set_num_threads(max(1, threads))
        self.model = load_model(model, revision=revision, device=device, dtype=dtype)
        importlib.import_module("tasks.work")  # the work's own imports: paid at load, not by the first item
        self.load_log.record(self.actor_id)
        return self.info()

    def info(self) -> dict:
        return {"actor_id": self.actor_id, "worker": self.name, "problem": self.problem,
                "device": str(self.model.device) if self.model is not None else "",
                "model_id": self.model.model_id if self.model is not None else ""}

    def run(self, item: WorkItem) -> dict[str, list[dict]]:
        """Serve one work item; its catalog rows, per table."""
        from tasks.work import run_item

        self.load()
        return run_item(self.model, item, self.out, self.name)


@dataclass(frozen=True)
class PoolConfig:
    """Where and how many workers run."""

    workers: int | None = None
    """Actors to start; None = one per GPU when gpus_per_worker > 0, else 1. With `max_workers`: the fewest
    the pool starts with (it waits for that many to fit)."""
    max_workers: int | None = None
    """An elastic pool (`--workers MIN:MAX`): up to this many actors are asked for at once; those that fit
    start now, the others start when a node with room joins (Ray places them; an autoscaler sees them
    as demand) and serve from then on. None = a pool of fixed size."""
    gpus_per_worker: float = 0.0
    """`num_gpus` each actor requests (0 = CPU workers)."""
    cpus_per_worker: float | None = None
    """`num_cpus` each actor requests; None = the cluster's CPUs divided among the workers."""
    device: str | None = None
    """torch device inside workers; None = cuda when the worker sees a GPU, else cpu."""
    dtype: str | None = None
    """fp32 / fp16 / bf16; None = fp16 on cuda, fp32 on cpu."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each actor requests (e.g. {"svd_host": 1} to place workers on the nodes that
    offer it)."""
    capacity_wait: float = CAPACITY_WAIT
    """Seconds to wait, when no live node can host a worker, before failing the items left."""


class RaySession:
    """Ray for one run: started (or joined) when the first worker is needed, shut down at the end
    if this session started it. Several pools (one per model of a sweep) share it."""

    def __init__(self, ray_address: str | None = None):
        """`ray_address` None = start a local Ray (embedded); else join that cluster (`ray start --head`)."""
        self.ray_address = ray_address
        self._started = False
        self._lock = threading.Lock()  # two stages' pools may start at once (streaming)

    def ensure(self) -> None:
        with self._lock:
            if ray.is_initialized():
                return
            if self.ray_address:
                ray.init(address=self.ray_address, log_to_driver=False)
            else:
                # address="local": never attach to a stale cluster by accident.
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
            self._started = True

    def close(self) -> None:
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self) -> "RaySession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WorkerPool:
    """The model workers of one model; Ray and the actors start when `map` first gets an item."""

    def __init__(self, session: RaySession, model: str, revision: str | None, out: str, config: PoolConfig,
                 probe: tuple[str, str] | None = None):
        """`probe`: (name, content) of the driver's probe in OUT (mtcore.io.outroot.write_probe), which every
        worker must see before any model loads."""
        self.session, self.model, self.revision, self.out, self.config = session, model, revision, out, config
        self.probe = probe
        self.actors: list = []
        self.load_log = None
        self.leases: Leases | None = None
        """The free workers (one item in flight each), kept for the pool's life."""
        self.shared = False
        """Whether two stages serve this pool at once (`share`)."""
        self._starting = threading.Lock()
        self.members: Members | None = None
        """Who serves, since when; the workers asked for or restarting (tasks.members)."""

    def _start(self) -> None:
        self.session.ensure()
        config = self.config
        total_cpus = ray.cluster_resources().get("CPU", 1)
        total_gpus = ray.cluster_resources().get("GPU", 0)
        gpus = config.gpus_per_worker
        n = config.workers or (max(1, int(total_gpus // gpus)) if gpus > 0 else 1)
        # a worker cannot span nodes: the CPUs of the nodes that can host one, shared among the workers
        hosts = _hosts({**config.resources, "GPU": gpus})
        host_cpus = sum(r.get("CPU", 0.0) for r in hosts) or total_cpus
        largest = max((r.get("CPU", 1.0) for r in hosts), default=total_cpus)
        cpus = config.cpus_per_worker or max(1.0, float(min(int(host_cpus // n), int(largest))))
        # a dead worker's item is served again by dispatch (tasks.members), not by Ray's task retries
        options: dict[str, Any] = {"num_cpus": cpus, "max_restarts": MAX_RESTARTS, "scheduling_strategy": "SPREAD"}
        if gpus > 0:
            options["num_gpus"] = gpus
        if config.resources:
            options["resources"] = dict(config.resources)
        self.requested = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {}), **config.resources}
        if not _feasible(self.requested) and not config.max_workers:  # an elastic pool waits for nodes to join
            raise InputError("--resources", f"no node of the Ray cluster offers what a worker asks for "
                                            f"({_describe(self.requested)}); nodes offer: {_offers()}")
        self.load_log = LoadLog(self.out)
        self.leases = Leases([])
        self.members = Members(self.leases, str(self.model or "default").rsplit("/", 1)[-1], _logger)
        make = lambda: ModelWorker.options(**options).remote(  # noqa: E731
            self.model, self.revision, config.device, config.dtype, int(cpus), self.out, self.load_log, self.probe)
        if config.max_workers:  # elastic: ask for every worker now, serve on those that have started
            least = min(config.workers or 1, config.max_workers)
            infos = {(a := make()).info.remote(): a for _ in range(config.max_workers)}
            started, _ = ray.wait(list(infos), num_returns=least, timeout=config.capacity_wait)
            if len(started) < least:
                for actor in infos.values():
                    ray.kill(actor, no_restart=True)
                raise InputError("--workers", f"{len(started)} of the {least} workers the elastic pool needs to start could "
                                              f"start in {config.capacity_wait:.0f} s: no node with room offers what a worker "
                                              f"asks for ({_describe(self.requested)}); nodes offer: {_offers()}")
            self.actors = [infos.pop(ref) for ref in started]
            for actor in infos.values():
                self.members.ask(actor)
        else:
            self.actors = [make() for _ in range(n)]
        # Every worker must see OUT before any of them loads a model: one line, then stop.
        problems = [info["problem"] for info in ray.get([a.info.remote() for a in self.actors]) if info["problem"]]
        if problems:
            self.close()
            raise InputError(self.out, problems[0])
        # Surface a model that cannot load now, as one error, instead of as every item failing.
        for actor, info in zip(self.actors, ray.get([a.load.remote() for a in self.actors])):
            self.members.join(actor, info)
        self.members.started()

    def start(self) -> None:
        """Start the workers now (and load the model) instead of at the first item."""
        with self._starting:
            if not self.actors:
                self._start()

    def share(self) -> "WorkerPool":
        """Let two stages serve this pool at once, one item per worker between them; returns the view
        whose items go first (tasks.dispatch.Leases)."""
        self.shared = True
        return _First(self)

    def expect(self) -> None:
        """Priority items are on their way: a shared pool holds freed workers for them (Leases.expect)."""
        if self.shared and self.leases is not None:
            self.leases.expect()

    def served(self, final: bool = False) -> None:
        """The priority items expected have been served (or there were none to serve after all);
        `final`: no more will come."""
        if self.shared and self.leases is not None:
            self.leases.done(True, final)

    def map(self, items: Iterable[WorkItem], on_done: Callable[[WorkItem, Any], None], priority: bool = False) -> None:
        """Serve every item on the workers; `on_done(item, rows | error)` as each finishes. On a shared
        pool, `priority` items get freed workers first."""
        items = list(items)
        if not items:
            if priority:
                self.served()  # nothing to serve after all: hold no worker for it
            return
        self.start()
        dispatch(self.actors, items, on_done, self.requested, self.config.capacity_wait, self.leases, priority,
                 self.shared, self.members)

    def stats(self) -> list[WorkerStats]:
        """Per worker that served: its current process (or its last, if it left), model loads over its
        restarts, items served over its restarts, when it joined and left (empty if the pool never
        started)."""
        if self.members is None:
            return []
        loads = self.load_log.counts()
        here = [m for m in self.members.members.values() if m.left is None]
        try:
            infos = ray.get([m.actor.info.remote() for m in here], timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            infos = [{} for _ in here]  # one left meanwhile: report what the driver knows
        for member, info in zip(here, infos):
            member.name = info.get("worker", member.name)
        return [WorkerStats(worker=m.name, model_loads=loads.get(m.actor_id, 1), items=m.items, device=m.device,
                            model_id=m.model_id, joined_s=m.joined, left_s=m.left)
                for m in self.members.members.values()]

    def close(self) -> None:
        for a in {*self.actors, *(self.members.actors() if self.members else [])}:  # joined later ones too
            ray.kill(a, no_restart=True)
        if self.load_log is not None:
            try:
                self.load_log.remove()
            except OSError:  # a side file left in OUT costs nothing; the run's result stands
                pass
        self.actors, self.load_log, self.leases, self.members, self.shared = [], None, None, None, False

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _logger():
    """The Prefect run's logger inside a flow (its console and record), else this module's."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 (outside a flow or task run)
        return log


class _First:
    """A shared pool whose items go first (WorkerPool.share)."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool

    def start(self) -> None:
        self.pool.start()

    def map(self, items: Iterable[WorkItem], on_done: Callable[[WorkItem, Any], None]) -> None:
        self.pool.map(items, on_done, priority=True)

    def expect(self) -> None:
        self.pool.expect()

    def served(self, final: bool = False) -> None:
        self.pool.served(final)
