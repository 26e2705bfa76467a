"""An elastic pool on Ray's own autoscaler: the fake multi-node provider starts GPU nodes for the pool's
pending workers, and the pool grows onto them (issue 23, item 4).

    python benchmarks/bench_autoscale.py [--items 60] [--seconds 0.5] [--json]

What it does, in its own PID namespace (`unshare --pid --fork --mount-proc`, so that Ray's `ray stop`
and every process the autoscaler starts stay inside it and die with it; nothing else on the machine
is touched):

- `ray start --head` with no GPU and Ray's fake multi-node autoscaler (`RAY_FAKE_CLUSTER=1`, the
  provider behind `ray.cluster_utils.AutoscalingCluster`; the config is written here, because the
  wheel lacks the `example.yaml` that class reads), with a node type of 1 CPU + 1 GPU, 0 to 2 nodes;
- a `WorkerPool` of 1:2 one-GPU workers (`--workers 1:2 --gpus-per-worker 1`): nothing fits, so
  both workers are pending actors, the autoscaler's demand;
- the autoscaler starts the nodes, the workers start on them, and the items are served.

It prints when each worker served its first item (seconds after the pool
asked), that every item was served once, and how many nodes the autoscaler started. Needs root (a PID
namespace), as the two-host test does. tests/test_elastic.py runs it at a small size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Nap:
    """A work item that takes a while, and says where and when it ran. With `meet` (a folder every worker
    sees) it also waits, up to 5 minutes, until `workers` workers have served: so a run cannot end before
    the last worker joins, however slowly the machine starts nodes (an event, not a guess of how long)."""

    index: int
    seconds: float
    meet: str = ""
    workers: int = 2
    size = 1

    def run(self, model, out, worker):
        t0 = time.time()
        time.sleep(self.seconds)
        if self.meet:
            Path(self.meet, worker.replace("/", "_")).touch()
            while len(os.listdir(self.meet)) < self.workers and time.time() - t0 < 300:
                time.sleep(0.1)
        return {"worker": worker, "t0": t0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def fake_cluster_config(gcs_address: str, head_cpus: int, gpu_nodes: int) -> dict:
    """Ray's fake multi-node autoscaler config (the fields of ray's fake_multi_node/example.yaml)."""
    return {
        "cluster_name": "mt-autoscale", "max_workers": gpu_nodes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus, "GPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
                               "max_workers": gpu_nodes},
        },
        "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }


def inside(items: int, seconds: float, out: str) -> dict:
    """Run in the PID namespace: start the head with the autoscaler, serve the items, report."""
    import ray
    import ray.cloudpickle

    from tasks.pool import PoolConfig, RaySession, WorkerPool

    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="mt-as-")  # short: Ray's socket paths must fit 107 bytes
    ip = ray.util.get_node_ip_address()
    gcs = f"{ip}:{_free_port()}"
    config = Path(temp, "autoscaler.json")
    config.write_text(json.dumps(fake_cluster_config(gcs, 1, 2)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    subprocess.run([ray_cli, "start", "--head", f"--port={gcs.rsplit(':', 1)[1]}", f"--autoscaling-config={config}",
                    "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}"],
                   env=env, check=True, capture_output=True)
    served: dict[int, list[dict]] = {}
    try:
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        with RaySession(gcs) as session:
            pool_config = PoolConfig(workers=1, max_workers=2, gpus_per_worker=1, cpus_per_worker=1, capacity_wait=300)
            with WorkerPool(session, None, None, out, pool_config) as pool:
                asked = time.time()

                def on_done(item, result):
                    if isinstance(result, Exception):
                        raise result
                    served.setdefault(item.index, []).append(result)

                meet = Path(out, "meet")
                meet.mkdir()
                pool.map([Nap(i, seconds, str(meet), 2) for i in range(items)], on_done)
                stats = pool.stats()
                gpu_nodes = sum(1 for n in ray.nodes() if n["Resources"].get("GPU"))
        rows = [r for rs in served.values() for r in rs]
        first = {w: min(r["t0"] for r in rows if r["worker"] == w) - asked for w in {r["worker"] for r in rows}}
        return {"items": items, "served_once": sorted(served) == list(range(items)) and all(len(v) == 1 for v in served.values()),
                "workers_first_item_s": sorted(first.values()), "gpu_nodes_started": gpu_nodes,
                "workers": [{"worker": s.worker, "items": s.items, "joined_s": s.joined_s, "left_s": s.left_s} for s in stats]}
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)  # only this PID namespace's Ray
        shutil.rmtree(temp, ignore_errors=True)


def run(items: int = 60, seconds: float = 0.5, timeout: float = 600) -> dict:
    """Run `inside` in a fresh PID namespace; its JSON result."""
    with tempfile.TemporaryDirectory(prefix="mt-as-out-") as out:
        # one auth mode for every Ray process of the run (the head, the nodes the autoscaler starts, the driver):
        # without it, `ray start --head` turns token auth on by itself when ~/.ray/auth_token exists
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, __file__, "--inside",
                               "--items", str(items), "--seconds", str(seconds), "--out", out],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the autoscaling run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=0.5, help="each item's work")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(inside(args.items, args.seconds, args.out)))
        return
    t0 = time.time()
    result = run(args.items, args.seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['items']} items on a pool of 1:2 one-GPU workers, head node without a GPU, Ray's fake autoscaler")
    print(f"  GPU nodes the autoscaler started: {result['gpu_nodes_started']}")
    print("  each worker's first item, s after the pool asked: " + ", ".join(f"{s:.1f}" for s in result["workers_first_item_s"]))
    print(f"  every item served once: {result['served_once']}")
    for w in result["workers"]:
        print(f"  worker {w['worker']}: {w['items']} items, joined at {w['joined_s']:.1f} s")
    print(f"  wall {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
