"""Ray Data's autoscaling actor pool against the pool's own growth, on the same scenario as
tests/test_elastic.py (issue 23, item 4: "try them before writing growth logic").

    python benchmarks/ray_data_elastic.py [--rows 120] [--seconds 0.5]

A `ray.cluster_utils.Cluster` with one node (1 CPU, 1 GPU). Ray Data maps the rows with a class that
loads the built-in model once in `__init__` (as `ModelWorker` does), `concurrency=(1, 2)`, `num_gpus=1`,
one row per call, each call sleeping `--seconds`. Once three rows are out, a second one-GPU node joins;
once its actor has served five rows, the node is removed. It prints when the new node's actor served its
first row (seconds after the node joined), whether every row came out once, and the wall time.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time


class Sleeper:
    """A Ray Data callable class: the model loads once per actor, each call sleeps and says who served."""

    def __init__(self, seconds: float):
        from mtcore.method.models import load_model

        self.model = load_model(None)
        self.seconds = seconds
        self.name = f"{socket.gethostname()}/node-{__import__('ray').get_runtime_context().get_node_id()[:8]}/pid-{os.getpid()}"

    def __call__(self, batch):
        t0 = time.time()
        time.sleep(self.seconds)
        n = len(batch["id"])
        return {"id": batch["id"], "worker": [self.name] * n, "t0": [t0] * n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    rows: list[dict] = []
    three, five_on_new = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    first_worker: list[str] = []

    def consume() -> None:
        try:
            ds = ray.data.range(args.rows, override_num_blocks=args.rows).map_batches(
                Sleeper, fn_constructor_args=(args.seconds,), concurrency=(1, 2), num_gpus=1, batch_size=1)
            for row in ds.iter_rows():
                rows.append(row)
                first_worker[:] = first_worker or [row["worker"]]
                if len(rows) >= 3:
                    three.set()
                if sum(r["worker"] != first_worker[0] for r in rows) >= 5:
                    five_on_new.set()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
            three.set()
            five_on_new.set()

    t0 = time.time()
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    joined = left = None
    try:
        three.wait(timeout=300)
        node = cluster.add_node(num_cpus=1, num_gpus=1)
        joined = time.time()
        if five_on_new.wait(timeout=min(300, 2 * args.rows * args.seconds)):
            cluster.remove_node(node)
            left = time.time()
        consumer.join(timeout=600)
    finally:
        ray.shutdown()
        cluster.shutdown()
    ids = sorted(r["id"] for r in rows)
    workers = {r["worker"] for r in rows}
    new = [r for r in rows if first_worker and r["worker"] != first_worker[0]]
    print(f"Ray Data map_batches(concurrency=(1, 2), num_gpus=1): {args.rows} rows of {args.seconds} s")
    print(f"  errors: {[str(e).splitlines()[0][:200] for e in errors] or 'none'}; consumer still running: {consumer.is_alive()}")
    print(f"  actors that served: {len(workers)}")
    if new and joined:
        print(f"  the joined node's actor served its first row {min(r['t0'] for r in new) - joined:.1f} s after the node joined")
    else:
        print("  the joined node's actor never served")
    print(f"  node removed mid-run: {left is not None}")
    print(f"  every row once: {ids == list(range(args.rows))} ({len(ids)} rows out, {len(set(ids))} distinct)")
    print(f"  wall {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
