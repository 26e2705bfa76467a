"""Where the orchestration tax goes: the same inversion bare, and inside a Ray actor of a local Ray,
under the settings that could slow it (Ray's worker niceness; the CPU of Ray's own daemons).

Each configuration runs in its own process (Ray reads its settings when it starts), alternately,
--repeats times; printed: the best inversion time of each, its ratio to bare, and for the Ray runs
the CPU seconds Ray's other processes used while the inversion ran.

Run: .venv/bin/python benchmarks/bench_overhead.py [--steps 400] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
import torch
mode, steps = sys.argv[1], int(sys.argv[2])

def job():
    import torch, time
    torch.set_num_threads(2)
    from mtcore.method.config import InversionConfig
    from mtcore.method.inversion import invert
    from mtcore.method.models import load_model
    model = load_model(None, device="cpu", dtype="fp32")
    f, (h, w) = model.default_num_frames, model.default_size
    frames = torch.rand(f, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    invert(model, frames, InversionConfig(steps=5))
    t0 = time.perf_counter()
    invert(model, frames, InversionConfig(steps=steps))
    return time.perf_counter() - t0, os.nice(0)

if mode == "bare":
    seconds, nice = job()
    print(json.dumps({{"seconds": seconds, "nice": nice}}))
else:
    import psutil, ray

    def in_ray():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=2)(type("Job", (), {{"run": lambda self: job()}})).remote()
        ray.get(actor.__ray_ready__.remote())
        others = [p for p in psutil.Process().children(recursive=True)] + [psutil.Process()]
        before = {{p.pid: sum(p.cpu_times()[:2]) for p in others if p.is_running()}}
        seconds, nice = ray.get(actor.run.remote())
        after = {{}}
        for p in others:
            try:
                after[p.pid] = (sum(p.cpu_times()[:2]), " ".join(p.cmdline()[:2])[:50])
            except psutil.Error:
                pass
        daemons = sum(t - before.get(pid, t) for pid, (t, name) in after.items() if "Job" not in name)
        ray.shutdown()
        return {{"seconds": seconds, "nice": nice, "daemon_cpu_s": daemons}}

    if mode == "prefect":  # as `mt run`: the Ray work inside a Prefect flow and task, temporary server up
        from prefect import flow, task
        measure = task(in_ray)

        @flow
        def run_flow():
            return measure()

        result = run_flow()
    else:
        result = in_ray()
    print(json.dumps(result))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    script = Path(tempfile.mkdtemp(prefix="mt-bench-overhead-")) / "child.py"  # Prefect wants a real file
    script.write_text(CHILD.format(repo=str(REPO)))
    configs = {"bare process": ("bare", {}), "Ray actor, worker niceness 15 (Ray's default)": ("ray", {}),
               "Ray actor, RAY_worker_niceness=0": ("ray", {"RAY_worker_niceness": "0"}),
               "Ray actor inside a Prefect flow and task": ("prefect", {})}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    env0 = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "TRANSFORMERS_VERBOSITY": "error", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_HOME": tempfile.mkdtemp(prefix="mt-bench-overhead-")}
    for r in range(args.repeats):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for name in order:
            mode, extra = configs[name]
            out = subprocess.run([sys.executable, str(script), mode, str(args.steps)], capture_output=True, text=True,
                                 env={**env0, **extra}, timeout=1800)
            line = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if not line:
                print(f"{name}: failed\n{out.stderr[-2000:]}")
                return 1
            results[name].append(json.loads(line[-1]))
            print(f"  {name}: {results[name][-1]}", flush=True)
    bare = min(x["seconds"] for x in results["bare process"])
    print(f"\ninversion of {args.steps} steps on the built-in model, best of {args.repeats}:")
    for name, runs in results.items():
        best = min(runs, key=lambda x: x["seconds"])
        extra = (f", the run's other processes {best['daemon_cpu_s']:.1f} CPU-s meanwhile"
                 if "daemon_cpu_s" in best else "")
        print(f"  {name:<48} {best['seconds']:7.1f} s  x{best['seconds'] / bare:.3f}  (nice {best['nice']}){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
