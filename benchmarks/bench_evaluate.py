"""`mt evaluate`'s plan at scale: a synthetic finished run (tests/synthetic.py: R references x T targets,
every video in the store) measured against a new metrics version, so every transfer is to measure. Planned
by this checkout's tasks.plan_metrics and by an older one (--code DIR, e.g. a git worktree), each in a
subprocess of its own: seconds to plan, seconds to make every TransferJob the measure stage would serve
(a chunk at a time where the plan gives chunks), and the peak RSS of the whole (ru_maxrss). Then the summary
tables `mt evaluate` prints, on the same OUT (its metrics rows, as the synthetic run wrote them), by pandas over
the whole table and by DuckDB (summarise_catalog), each in a subprocess: seconds and peak RSS.

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


SUMMARY = r"""
import json, os, resource, sys, time
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
from mtcore import METRICS_VERSION
from mtcore.eval.evaluation import load_results, summarise
from mtcore.eval.results_sql import summarise_catalog
import duckdb, pandas
base = rss()
t0 = time.perf_counter()
if sys.argv[2] == "duckdb":
    table, worst = summarise_catalog(sys.argv[1], METRICS_VERSION, "reference")
else:
    table, worst = summarise(load_results(sys.argv[1], METRICS_VERSION), "reference")
# VmHWM, not ru_maxrss: the latter keeps the parent's RSS at fork time across exec
hwm = [int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"s": time.perf_counter() - t0, "count": int(table["count"].sum()), "imports_mb": base, "peak_mb": hwm}))
"""


def summary(out: Path, how: str) -> dict:
    """`mt evaluate`'s summary tables of OUT by pandas over the whole table or by DuckDB (summarise_catalog)."""
    done = subprocess.run([sys.executable, "-c", SUMMARY, str(out), how], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaled(out: Path, copies: int, into: Path) -> Path:
    """A catalog-only OUT holding `copies` copies of OUT's transfers and metrics rows, each copy's keys made
    distinct (their first hex digit replaced): the summary's input at `copies` times the size."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for table in ("transfers", "metrics"):
        rows = pq.read_table(next((out / "catalog" / table).glob("*.parquet")))
        folder = into / "catalog" / table
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            keys = pc.binary_join_element_wise(pa.scalar(f"{i:x}"), pc.utf8_slice_codeunits(rows["transfer_key"], 1), "")
            pq.write_table(rows.set_column(rows.schema.get_field_index("transfer_key"), "transfer_key", keys),
                           folder / f"part-copy{i}.parquet")
    return into


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
    parser.add_argument("--summary-scale", type=int, default=10, help="also summarise this many copies of the run's catalog")
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
        for copies in (1, args.summary_scale):  # the summary tables, side by side on the same OUT, then 10x it
            where = out if copies == 1 else scaled(out, copies, Path(tmp, "scaled"))
            for how in ("pandas", "duckdb"):
                r = summary(where, how)
                assert r["count"] == n * copies, r
                print(f"summary by {how:6} over {n * copies:,} measured transfers: {r['s']:.2f} s, peak RSS "
                      f"{r['peak_mb']:.0f} MB ({r['peak_mb'] - r['imports_mb']:.0f} MB above the imports)", flush=True)


if __name__ == "__main__":
    main()
