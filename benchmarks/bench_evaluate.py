"""`mt evaluate`'s plan at scale: a synthetic finished run (tests/synthetic.py: R references x T targets,
every video in the store) measured against a new metrics version, so every transfer is to measure. Planned
by this checkout's tasks.plan_metrics and by an older one (--code DIR, e.g. a git worktree), each in a
subprocess of its own: seconds to plan, seconds to make every TransferJob the measure stage would serve
(a chunk at a time where the plan gives chunks), and the peak RSS of the whole (ru_maxrss).

Run:  .venv/bin/python benchmarks/bench_evaluate.py [--refs 100 --targets 1000] [--code OLD_CHECKOUT]
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

MEASURE = r"""
import json, os, resource, sys, time
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
t0 = time.perf_counter()
from tasks.plan_metrics import plan_missing_metrics
t1 = time.perf_counter()
base = rss()
todo = plan_missing_metrics(sys.argv[1], "bench-new-version")
t2 = time.perf_counter()
jobs, held = 0, rss()
for plan in todo.plans:
    rows = plan.metrics_todo
    for chunk in (rows.chunks(4096) if hasattr(rows, "chunks") else [list(rows)]):
        jobs += len(chunk)
        held = max(held, rss())
t3 = time.perf_counter()
print(json.dumps({"plan_s": t2 - t1, "jobs_s": t3 - t2, "jobs": jobs, "missing": todo.missing_files, "imports_mb": base, "held_mb": held - base,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(code: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(out)], env=env, cwd=code, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=int, default=100)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--code", type=Path, help="an older checkout to compare with")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.synthetic import make_run

    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        _, out = make_run(Path(tmp), args.refs, args.targets)
        n = args.refs * args.targets
        for label, code in [("this checkout", REPO)] + ([("--code", args.code)] if args.code else []):
            r = measure(code, out)
            assert r["jobs"] == n, r
            print(f"{label:14} {n:,} transfers to measure: plan {r['plan_s']:.2f} s, jobs {r['jobs_s']:.2f} s, "
                  f"held above the imports {r['held_mb']:.0f} MB (RSS after imports {r['imports_mb']:.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
