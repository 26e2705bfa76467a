"""GPU workers in one place: Ray actors that keep the model resident and serve many items.

Mechanism (measured; see README "Why actors, not a Prefect task per item"): Prefect runs one task
per *stage*; inside a stage, items go to a fixed set of `ModelWorker` actors, each loading the
pipeline once in `__init__` and then serving inversions and transfer batches. One item in flight
per actor; a finished item's row comes back at once so progress and catalogs advance as work does.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import ray


@ray.remote
class ModelWorker:
    """Holds one loaded SVD pipeline; `num_gpus`/`num_cpus` are set by `WorkerPool` at creation."""

    def __init__(self, model: str, revision: str | None, device: str | None, dtype: str | None, threads: int):
        import torch

        from mtcore.models import load_model

        torch.set_num_threads(max(1, threads))
        self.model = load_model(model, revision=revision, device=device, dtype=dtype)
        ctx = ray.get_runtime_context()
        self.name = f"{socket.gethostname()}/node-{ctx.get_node_id()[:8]}/pid-{os.getpid()}"
        self.items = 0

    def info(self) -> dict[str, Any]:
        from mtcore.models import load_count

        return {"worker": self.name, "model_loads": load_count(), "items": self.items,
                "device": str(self.model.device), "model_id": self.model.identity}

    def invert(self, job, cfg, out: str) -> list[dict]:
        from tasks.work import invert_job

        self.items += 1
        return [invert_job(self.model, job, cfg, Path(out), self.name)]

    def transfer(self, jobs, cfg, out: str) -> list[dict]:
        from tasks.work import transfer_jobs

        self.items += len(jobs)
        return transfer_jobs(self.model, jobs, cfg, Path(out), self.name)


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
    """Starts (or joins) Ray and the model actors; `map` runs items across them."""

    def __init__(self, model: str, revision: str | None, config: PoolConfig):
        self.config = config
        self._started_ray = False
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
            ModelWorker.options(**options).remote(model, revision, config.device, config.dtype, int(cpus))
            for _ in range(n)
        ]
        # Surface a model that cannot load now, as one error, instead of as every item failing.
        self.infos = ray.get([a.info.remote() for a in self.actors])

    def map(self, method: str, items: Iterable[tuple[Any, ...]], on_done: Callable[[Any, list[dict] | Exception], None]) -> None:
        """Call `actor.<method>(*item)` for every item across the workers; `on_done(item, rows|error)`."""
        dispatch(self.actors, method, items, on_done)

    def stats(self) -> list[dict[str, Any]]:
        """Per worker: name, model loads in its process, items served."""
        return ray.get([a.info.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        if self._started_ray:
            ray.shutdown()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



def dispatch(actors: list, method: str, items: Iterable[tuple[Any, ...]], on_done: Callable[[Any, Any], None]) -> None:
    """Run `actor.<method>(*item)` for every item, one in flight per actor, results in completion order.

    A dead actor's item is reported as its error and the actor leaves the rotation; when no actor
    is left, the remaining items are reported failed. Other errors keep the actor in rotation.
    """
    todo = list(items)
    idle = list(actors)
    running: dict[Any, tuple[Any, Any]] = {}
    while todo or running:
        while todo and idle:
            actor, item = idle.pop(), todo.pop(0)
            running[getattr(actor, method).remote(*item)] = (actor, item)
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
