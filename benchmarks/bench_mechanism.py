"""Per-item cost of the dispatch mechanism, for 20 trivial items, measured side by side in one run:

  prefect_tasks   one Prefect @task call per item inside a flow (Prefect's ephemeral API)
  ray_actor       one call per item to a Ray actor through tasks.pool.dispatch (what mt run uses)

Both exclude start-up (Prefect's server start, ray.init, actor creation), which is printed apart.
prefect-ray's RayTaskRunner is not installed here; the developers' guide measured it at ~44 s for
20 trivial tasks on this kind of machine.

Run: .venv/bin/python benchmarks/bench_mechanism.py [--items 20]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20)
    n = ap.parse_args().items

    import ray
    from prefect import flow, task

    from tasks.dispatch import dispatch

    @task
    def trivial(i: int) -> int:
        return i * 2

    @flow
    def per_item_flow(count: int) -> float:
        t = time.perf_counter()
        for i in range(count):
            trivial(i)
        return time.perf_counter() - t

    @flow
    def warm() -> None:
        trivial(0)

    t = time.perf_counter()
    warm()
    prefect_start = time.perf_counter() - t
    prefect_items = per_item_flow(n)

    @dataclass(frozen=True)
    class Double:  # a trivial work item, served like tasks.plan's items
        i: int
        size = 1

    @ray.remote
    class Trivial:
        def run(self, item: Double) -> int:
            return item.i * 2

    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    actor = Trivial.remote()
    ray.get(actor.run.remote(Double(0)))
    ray_start = time.perf_counter() - t
    done = []
    t = time.perf_counter()
    dispatch([actor], [Double(i) for i in range(n)], lambda item, r: done.append(r))
    ray_items = time.perf_counter() - t
    assert sorted(done) == [2 * i for i in range(n)]
    ray.shutdown()

    print(f"items: {n}")
    print(f"start-up: prefect ephemeral API + first flow {prefect_start:.2f} s; ray.init + actor {ray_start:.2f} s")
    print(f"prefect_tasks: {prefect_items:.3f} s total, {1000 * prefect_items / n:.1f} ms/item")
    print(f"ray_actor:     {ray_items:.3f} s total, {1000 * ray_items / n:.1f} ms/item")
    print(f"per_item_ratio_prefect_over_ray={prefect_items / ray_items:.1f}")


if __name__ == "__main__":
    main()
