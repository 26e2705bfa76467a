"""GPU workers in one place: Ray actors that keep the model resident and serve many items.

Mechanism (measured; see README "Why actors, not a Prefect task per item"): Prefect runs one task
per *stage*; inside a stage, items go to a fixed set of `ModelWorker` actors, each loading the
pipeline once in `__init__` and then serving work items (an inversion, a batch of transfers) through
one method, `run`. One item in flight per actor; a finished item's rows come back at once so progress
and catalogs advance as work does. The pool starts Ray and its actors when the first item arrives:
a run with nothing to compute never starts Ray.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import ray

from tasks.results import WorkerStats


class WorkItem(Protocol):
    """What a worker can serve (tasks.plan.InversionJob, tasks.plan.TransferBatch)."""

    size: int

    def run(self, model: Any, out: str, worker: str) -> list[dict]: ...


@ray.remote
class ModelWorker:
    """Holds one loaded SVD pipeline; `num_gpus`/`num_cpus` are set by `WorkerPool` at creation."""

    def __init__(self, model: str, revision: str | None, device: str | None, dtype: str | None, threads: int,
                 out: str):
        import torch

        from mtcore.models import load_model

        torch.set_num_threads(max(1, threads))
        self.model = load_model(model, revision=revision, device=device, dtype=dtype)
        self.out = out
        ctx = ray.get_runtime_context()
        self.name = f"{socket.gethostname()}/node-{ctx.get_node_id()[:8]}/pid-{os.getpid()}"
        self.items = 0

    def info(self) -> WorkerStats:
        from mtcore.models import load_count

        return WorkerStats(worker=self.name, model_loads=load_count(), items=self.items,
                           device=str(self.model.device), model_id=self.model.model_id)

    def run(self, item: WorkItem) -> list[dict]:
        """Serve one work item; its catalog rows."""
        self.items += item.size
        return item.run(self.model, self.out, self.name)


@dataclass(frozen=True)
class PoolConfig:
    """Where and how many workers run."""

    ray_address: str | None = None
    """None = start a local Ray (embedded); else join the cluster at this address (`ray start --head`)."""
    workers: int | None = None
    """Actors to start; None = one per GPU when gpus_per_worker > 0, else 1."""
    gpus_per_worker: float = 0.0
    """`num_gpus` each actor requests (0 = CPU workers)."""
    cpus_per_worker: float | None = None
    """`num_cpus` each actor requests; None = the cluster's CPUs divided among the workers."""
    device: str | None = None
    """torch device inside workers; None = cuda when the worker sees a GPU, else cpu."""
    dtype: str | None = None
    """fp32 / fp16 / bf16; None = fp16 on cuda, fp32 on cpu."""


class WorkerPool:
    """The model workers of one run; Ray and the actors start when `map` first gets an item."""

    def __init__(self, model: str, revision: str | None, out: str, config: PoolConfig):
        self.model, self.revision, self.out, self.config = model, revision, out, config
        self.actors: list = []
        self._started_ray = False

    def _start(self) -> None:
        config = self.config
        if not ray.is_initialized():
            if config.ray_address:
                ray.init(address=config.ray_address, log_to_driver=False)
            else:
                # address="local": never attach to a stale cluster by accident.
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
            self._started_ray = True
        total_cpus = ray.cluster_resources().get("CPU", 1)
        total_gpus = ray.cluster_resources().get("GPU", 0)
        gpus = config.gpus_per_worker
        n = config.workers or (max(1, int(total_gpus // gpus)) if gpus > 0 else 1)
        cpus = config.cpus_per_worker or max(1.0, float(int(total_cpus // n)))
        options: dict[str, Any] = {"num_cpus": cpus}
        if gpus > 0:
            options["num_gpus"] = gpus
        self.actors = [
            ModelWorker.options(**options).remote(self.model, self.revision, config.device, config.dtype, int(cpus),
                                                  self.out)
            for _ in range(n)
        ]
        # Surface a model that cannot load now, as one error, instead of as every item failing.
        ray.get([a.info.remote() for a in self.actors])

    def map(self, items: Iterable[WorkItem], on_done: Callable[[WorkItem, list[dict] | Exception], None]) -> None:
        """Serve every item on the workers; `on_done(item, rows | error)` as each finishes."""
        items = list(items)
        if not items:
            return
        if not self.actors:
            self._start()
        dispatch(self.actors, items, on_done)

    def stats(self) -> list[WorkerStats]:
        """Per worker: name, model loads in its process, items served (empty if never started)."""
        return ray.get([a.info.remote() for a in self.actors]) if self.actors else []

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def dispatch(actors: list, items: Iterable[WorkItem], on_done: Callable[[WorkItem, Any], None]) -> None:
    """Run `actor.run(item)` for every item, one in flight per actor, results in completion order.

    A dead actor's item is reported as its error and the actor leaves the rotation; when no actor
    is left, the remaining items are reported failed. Other errors keep the actor in rotation.
    """
    todo = list(items)
    idle = list(actors)
    running: dict[Any, tuple[Any, WorkItem]] = {}
    while todo or running:
        while todo and idle:
            actor, item = idle.pop(), todo.pop(0)
            running[actor.run.remote(item)] = (actor, item)
        if not running:  # every actor died
            for rest in todo:
                on_done(rest, RuntimeError("every worker died"))
            return
        ready, _ = ray.wait(list(running), num_returns=1)
        actor, item = running.pop(ready[0])
        try:
            result = ray.get(ready[0])
            idle.append(actor)
        except ray.exceptions.RayActorError as exc:  # the worker died: its item fails, others go on
            result = exc
        except Exception as exc:  # an error the worker did not turn into rows
            result = exc
            idle.append(actor)
        on_done(item, result)
