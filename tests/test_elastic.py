"""An elastic pool (`--workers MIN:MAX`, tasks.pool.WorkerPool.grow) on a `ray.cluster_utils.Cluster`: it starts
on the one node there is and grows onto a node that joins mid-run. (Shrinking when a node leaves is the
fixed pool's: tests/test_faults.py.)"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Nap:
    """A work item that takes a while, and says where and when it ran."""

    index: int
    seconds: float
    size = 1

    def run(self, model, out, worker):
        t0 = time.time()
        time.sleep(self.seconds)
        return {"worker": worker, "t0": t0}


def test_an_elastic_pool_grows_onto_a_node_that_joins(tmp_path):
    from ray.cluster_utils import Cluster

    from tasks.pool import PoolConfig, RaySession, WorkerPool

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    cluster.wait_for_nodes()
    served: list[dict] = []
    first_done = threading.Event()
    joined_at: list[float] = []

    def on_done(item, result):
        assert not isinstance(result, Exception), result
        served.append(result)
        if len(served) == 3:
            first_done.set()

    errors: list[BaseException] = []
    stats: list = []
    try:
        with RaySession(cluster.address) as session:
            config = PoolConfig(workers=1, max_workers=2, gpus_per_worker=1, cpus_per_worker=1)
            with WorkerPool(session, None, None, str(tmp_path / "out"), config) as pool:
                def serve():  # the run; Ray's nodes are added from the main thread (they install signal handlers)
                    try:
                        pool.map([Nap(i, 0.5) for i in range(120)], on_done)
                        stats.extend(pool.stats())
                    except BaseException as exc:  # noqa: BLE001 (reported below)
                        errors.append(exc)
                        first_done.set()

                running = threading.Thread(target=serve, daemon=True)
                running.start()
                assert first_done.wait(timeout=300)  # the pool is serving on the first node
                cluster.add_node(num_cpus=1, num_gpus=1)  # a second node with a GPU joins mid-run
                joined_at.append(time.time())
                running.join(timeout=600)
    finally:
        cluster.shutdown()
    assert not errors, errors
    assert len(served) == 120  # every item once
    workers = {r["worker"] for r in served}
    assert len(workers) == 2 and len(stats) == 2, workers  # the second node's worker served too
    first_item = {w: min(r["t0"] for r in served if r["worker"] == w) for w in workers}
    late = max(first_item.values())
    print(f"the new node's worker served its first item {late - joined_at[0]:.1f} s after the node joined")
    assert joined_at and late - joined_at[0] < 30, f"the new worker served {late - joined_at[0]:.1f} s after its node joined"
