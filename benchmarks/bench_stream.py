"""Streaming between stages against the stage barrier, on a simulated GPU cluster: makespan, time to the
first video, and how busy each worker is.

A `ray.cluster_utils.Cluster` on this machine with 8 fake GPUs (4 offering the custom resource "A100",
4 "L4"); the workers are the pipeline's own `ModelWorker` actors (`tasks.pool.WorkerPool`, the tiny
random model loaded), served by its own dispatch, with the stages joined by its `EmbeddingFeed`. The
work items sleep for the GPU plan's H100 seconds (`mt plan-gpu`: 66 s per inversion at 150 steps, 3.3 s
per video) scaled to 10 ms per GPU-second; 200 references x 50 targets, transfers in batches of 4, and
5 slow inversions (5x). Modes:
  * shared-barrier: one pool of 8 workers inverts everything, then transfers (`mt run` with one pool);
  * split-barrier: 4 inversion + 4 transfer workers, transfers after every inversion has ended;
  * split-streaming: the same pools at once; a reference's transfers are queued as soon as its
    inversion ends (the loop of tasks.transfer.transfer_stage with a feed, on sleeping items);
  * shared-streaming: one pool of 8 serving both stages at once (`mt run` with one pool): a freed
    worker takes a waiting transfer batch before the next inversion (WorkerPool.share, tasks.dispatch).
Busy fraction = seconds a worker spent in items / makespan, over all 8 workers.

Run (about 6 minutes here): .venv/bin/python benchmarks/bench_stream.py [--refs 200 --targets 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCALE = 0.010  # seconds of sleep per GPU-second
INVERSION_S, VIDEO_S, BATCH = 66.0, 3.3, 4


@dataclass(frozen=True)
class Sleep:
    """A work item that sleeps like a GPU would work; returns when it ran, and where."""

    kind: str
    ref: int
    seconds: float
    index: int = 0
    size = 1

    def run(self, model, out, worker):
        t0 = time.time()
        time.sleep(self.seconds)
        return {"t0": t0, "t1": time.time(), "worker": worker}


def work(refs: int, targets: int) -> tuple[list[Sleep], dict[int, list[Sleep]]]:
    inversions = [Sleep("invert", r, INVERSION_S * SCALE * (5 if r % (refs // 5 or 1) == 3 else 1)) for r in range(refs)]
    batches = {r: [Sleep("transfer", r, VIDEO_S * SCALE * min(BATCH, targets - i), i) for i in range(0, targets, BATCH)]
               for r in range(refs)}
    return inversions, batches


def run_mode(mode: str, session, model: str, out: str, refs: int, targets: int) -> dict:
    from tasks.feed import EmbeddingFeed
    from tasks.pool import PoolConfig, WorkerPool

    inversions, batches = work(refs, targets)
    records: list[dict] = []
    lock = threading.Lock()

    def keep(item, result):
        if isinstance(result, Exception):
            raise result
        with lock:
            records.append({**result, "kind": item.kind})

    if mode.startswith("shared"):
        pools = [WorkerPool(session, model, None, out, PoolConfig(workers=8, gpus_per_worker=1))]
        inverters = transferrers = pools[0]
        if mode == "shared-streaming":
            transferrers = inverters.share()
    else:
        inverters = WorkerPool(session, model, None, out, PoolConfig(workers=4, gpus_per_worker=1, resources={"A100": 1}))
        transferrers = WorkerPool(session, model, None, out, PoolConfig(workers=4, gpus_per_worker=1, resources={"L4": 1}))
        pools = [inverters, transferrers]
    for pool in pools:
        pool.start()
    t0 = time.time()
    if not mode.endswith("streaming"):
        inverters.map(inversions, keep)
        transferrers.map([b for r in range(refs) for b in batches[r]], keep)
    else:
        feed = EmbeddingFeed()

        def invert():
            try:
                inverters.map(inversions, lambda item, result: (keep(item, result), feed.publish(str(item.ref))))
            finally:
                feed.close()

        feed.listen(lambda key, error: transferrers.expect())  # as transfer_stage does
        thread = threading.Thread(target=invert)
        thread.start()
        closed = False
        while not closed:  # the transfer stage's loop: take what is settled, serve it, repeat
            events, closed = feed.take()
            ready = [b for key, _ in events for b in batches[int(key)]]
            transferrers.map(ready, keep)
            transferrers.served()
        thread.join()
    makespan = max(r["t1"] for r in records) - t0
    first_video = min(r["t1"] for r in records if r["kind"] == "transfer") - t0
    busy = sum(r["t1"] - r["t0"] for r in records) / (8 * makespan)
    per_worker: dict[str, float] = {}
    for r in records:
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0.0) + r["t1"] - r["t0"]
    for pool in pools:
        pool.close()
    return {"mode": mode, "makespan_s": makespan, "first_video_s": first_video,
            "first_video_inversions": first_video / (INVERSION_S * SCALE), "busy": busy,
            "busy_min": min(per_worker.values()) / makespan, "busy_max": max(per_worker.values()) / makespan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refs", type=int, default=200)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--modes", nargs="+", default=["shared-barrier", "split-barrier", "split-streaming",
                                                   "shared-streaming"])
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    from mtcore.method.svd import init_tiny_model
    from tasks.pool import RaySession

    folder = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    model = str(init_tiny_model(folder / "tiny", seed=0))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 8, "num_gpus": 4, "resources": {"A100": 4},
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=8, num_gpus=4, resources={"L4": 4})
    cluster.wait_for_nodes()
    total = args.refs * INVERSION_S * SCALE + args.refs * args.targets * VIDEO_S * SCALE
    print(f"{args.refs} references x {args.targets} targets; {total:.0f} s of simulated GPU work over 8 workers "
          f"(an inversion {INVERSION_S * SCALE:.2f} s, a video {VIDEO_S * SCALE:.3f} s)", flush=True)
    try:
        with RaySession(cluster.address) as session:
            for mode in args.modes:
                r = run_mode(mode, session, model, str(folder / "out"), args.refs, args.targets)
                print(f"{r['mode']:16} makespan {r['makespan_s']:6.1f} s  first video {r['first_video_s']:6.2f} s "
                      f"({r['first_video_inversions']:.1f} inversion times)  busy {r['busy']:.2f} "
                      f"(per worker {r['busy_min']:.2f}-{r['busy_max']:.2f})", flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
