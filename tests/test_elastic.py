"""An elastic pool (`--workers MIN:MAX`, tasks.members) on a `ray.cluster_utils.Cluster`: it starts on the one
node there is, grows onto a node that joins mid-run, and shrinks when that node leaves mid-item, losing
nothing. (A fixed pool's lost node: tests/test_faults.py.)"""

from __future__ import annotations

import threading
import time

from benchmarks.bench_autoscale import Nap  # a work item that naps and says where and when it ran


def test_an_elastic_pool_grows_onto_a_node_that_joins_and_shrinks_when_it_leaves(tmp_path):
    import logging
    from ray.cluster_utils import Cluster

    from tasks.pool import PoolConfig, RaySession, WorkerPool

    said: list[str] = []  # the pool logs its members (outside a flow, to its module's logger)
    listener = logging.Handler(logging.INFO)
    listener.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("tasks.pool").addHandler(listener)
    logging.getLogger("tasks.pool").setLevel(logging.INFO)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    cluster.wait_for_nodes()
    served: dict[int, list[dict]] = {}
    first_done, second_served = threading.Event(), threading.Event()
    joined_at: list[float] = []

    def on_done(item, result):
        assert not isinstance(result, Exception), result
        served.setdefault(item.index, []).append(result)
        if len(served) == 3:
            first_done.set()
        by_worker: dict[str, int] = {}
        for r in (r for rs in served.values() for r in rs):
            by_worker[r["worker"]] = by_worker.get(r["worker"], 0) + 1
        if len(by_worker) == 2 and min(by_worker.values()) >= 5:
            second_served.set()  # the joined worker has served a few items

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
                joining = cluster.add_node(num_cpus=1, num_gpus=1)  # a second node with a GPU joins mid-run
                joined_at.append(time.time())
                assert second_served.wait(timeout=300)
                cluster.remove_node(joining)  # ... and leaves while its worker serves an item (they take 0.5 s, back to back)
                left_at = time.time()
                running.join(timeout=600)
    finally:
        cluster.shutdown()
        logging.getLogger("tasks.pool").removeHandler(listener)
    assert not errors, errors
    assert sorted(served) == list(range(120)) and all(len(rs) == 1 for rs in served.values())  # every item once
    rows = [r for rs in served.values() for r in rs]
    workers = {r["worker"] for r in rows}
    assert len(workers) == 2 and len(stats) == 2, workers  # the second node's worker served too
    first_item = {w: min(r["t0"] for r in rows if r["worker"] == w) for w in workers}
    late = max(first_item, key=first_item.get)
    print(f"the new node's worker served its first item {first_item[late] - joined_at[0]:.1f} s after the node joined")
    assert first_item[late] - joined_at[0] < 30, f"the new worker served {first_item[late] - joined_at[0]:.1f} s after its node joined"
    assert not any(r["t0"] > left_at + 1 for r in rows if r["worker"] == late)  # nothing served on the node that left
    (gone,) = [s for s in stats if s.left_s is not None]  # the summary says who served when
    (stayed,) = [s for s in stats if s.left_s is None]
    assert gone.joined_s > 0 and gone.left_s > gone.joined_s and stayed.joined_s == 0
    assert gone.items + stayed.items == 120
    print("\n".join(said))
    assert any("a worker joined" in line and "2 workers serve" in line for line in said), said
    assert any("a worker left (its process or node died)" in line and "1 workers serve" in line for line in said), said


def test_an_elastic_pool_grows_onto_the_nodes_ray_s_autoscaler_starts_for_it():
    """Ray's own autoscaler (the fake multi-node provider of `AutoscalingCluster`) on a head without a GPU:
    the pool's pending workers are its demand, it starts GPU nodes, and the pool grows onto them.
    In its own PID namespace (benchmarks/bench_autoscale.py), so that nothing else on the machine is touched."""
    from benchmarks.bench_autoscale import run

    result = run(items=20, seconds=0.5)
    print(result)
    assert result["served_once"]
    assert result["gpu_nodes_started"] == 2  # one per worker asked for: the pool's demand, seen by the autoscaler
    assert len(result["workers_first_item_s"]) == 2  # and both workers served
    assert sum(w["items"] for w in result["workers"]) == 20
