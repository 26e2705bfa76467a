"""Planning at scale: plan time and driver peak memory of a cross manifest at 10^4, 10^5 and 10^6 transfers,
first run (empty OUT) and fully cached re-run (a synthetic catalog and store of that size).

What it measures, for each size N (100 references x N/100 targets, one seed, `pairs: cross`):
  * media: tiny distinct files (the plan hashes every one; their size is not what is measured here);
  * `load_manifest` then `tasks.plan.plan_run(manifest, OUT, METRICS_VERSION)`, in a fresh Python process
    each (so its peak resident memory, `ru_maxrss`, is the plan's own; the imports' share is printed too);
  * first run: OUT empty; every transfer is to do;
  * cached re-run: OUT holds an ok row in catalog/embeddings and catalog/transfers for every key, a metrics
    row of the current version for every transfer (one Parquet part each, written by a setup process), and
    an (empty) artifact file for every key in the store; the plan must find all N cached, 0 to do and 0 to
    measure, having listed the store's folders (256 listings) rather than asking about each file.
  * `--code DIR`: also plan with the tasks/mtcore of another checkout (e.g. a worktree of an older commit),
    side by side in the same run, for the ratio.
Goals at 10^6: plan <= 10 s, cached re-run <= 10 s, peak <= 1 GB.

Run (about 6 minutes here for all three sizes; the store of 10^6 empty files takes most of it):
    .venv/bin/python benchmarks/bench_plan.py [--sizes 10000 100000 1000000] [--code /tmp/old-worktree]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCES = 100

MEASURE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import os
from mtcore import METRICS_VERSION
if os.path.exists("mtcore/data/manifest.py"):  # cwd: the checkout planned with
    from mtcore.data.manifest import load_manifest
else:  # --code: a checkout from before mtcore's sub-packages (an ImportError test would find this
    from mtcore.manifest import load_manifest  # checkout's module through its editable install)
from tasks.plan import plan_run
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t1 = time.perf_counter()
manifest = load_manifest(sys.argv[1])
t2 = time.perf_counter()
plan = plan_run(manifest, sys.argv[2], METRICS_VERSION)
t3 = time.perf_counter()
print(json.dumps({"manifest_s": t2 - t1, "plan_s": t3 - t2, "total_s": t3 - t1,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imports_mb": base,
                  "todo": len(plan.transfers_todo), "cached": len(plan.transfers_cached),
                  "measure": len(plan.metrics_todo), "inversions_todo": len(plan.inversions_todo)}))
"""

SETUP = r"""
import datetime as dt, os, sys
import pyarrow as pa, pyarrow.parquet as pq
from mtcore import METRICS_VERSION
from mtcore.data.catalog import SCHEMAS, store_relpath
from mtcore.data.manifest import load_manifest
from tasks.plan import plan_run
out = sys.argv[2]
plan = plan_run(load_manifest(sys.argv[1]), out, METRICS_VERSION)
keys = {"embeddings": [j.key for j in plan.inversions_todo], "transfers": [k.decode() for k in plan.transfers_todo.keys()]}
keys["metrics"] = keys["transfers"]
column = {"embeddings": "embedding_key", "transfers": "transfer_key", "metrics": "transfer_key"}
now = dt.datetime.now(dt.timezone.utc)

def value(field, n):
    t = field.type
    if field.name == "status":
        return pa.array(["ok"] * n, t)
    if field.name == "metrics_version":
        return pa.array([METRICS_VERSION] * n, t)
    if field.nullable:
        return pa.nulls(n, t)
    if pa.types.is_string(t):
        return pa.array(["synthetic"] * n, t)
    if pa.types.is_timestamp(t):
        return pa.array([now] * n, t)
    if pa.types.is_boolean(t):
        return pa.array([True] * n, t)
    return pa.array([0] * n, t)

for table, ks in keys.items():
    schema = SCHEMAS[table]
    arrays = [pa.array(ks, f.type) if f.name == column[table] else value(f, len(ks)) for f in schema]
    folder = os.path.join(out, "catalog", table)
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), os.path.join(folder, "part-synthetic.parquet"))
for table in ("embeddings", "transfers"):
    for k in keys[table]:
        path = os.path.join(out, store_relpath(table, k))
        try:
            open(path, "wb").close()
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()
print(len(keys["transfers"]))
"""


def write_media(folder: Path, n: int) -> None:
    """Manifest of REFERENCES x n/REFERENCES targets, cross, with tiny distinct media files."""
    targets = n // REFERENCES
    media = folder / "media"
    media.mkdir(parents=True)
    for i in range(REFERENCES):
        (media / f"r{i}.mp4").write_bytes(f"reference {i}".encode())
    for j in range(targets):
        (media / f"t{j}.png").write_bytes(f"target {j}".encode())
    lines = ["name: scale", "pairs: cross", "references:"]
    lines += [f"  - {{id: r{i}, path: media/r{i}.mp4}}" for i in range(REFERENCES)]
    lines.append("targets:")
    lines += [f"  - {{id: t{j}, path: media/t{j}.png}}" for j in range(targets)]
    (folder / "manifest.yaml").write_text("\n".join(lines) + "\n")


def measure(code: Path, manifest: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(manifest), str(out)], env=env, cwd=code,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"planning with {code} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(label: str, r: dict) -> str:
    return (f"  {label:<22} plan {r['plan_s']:6.2f} s (manifest {r['manifest_s']:5.2f} s)  peak {r['peak_mb']:6.0f} MB "
            f"(imports {r['imports_mb']:.0f} MB)  to do {r['todo']}, cached {r['cached']}, to measure {r['measure']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--code", type=Path, help="another checkout to plan with, side by side")
    parser.add_argument("--work", type=Path, help="folder for the media and OUT (default: a temporary one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-plan-", dir=args.work))
    summary = {}
    try:
        for n in args.sizes:
            folder = work / str(n)
            write_media(folder, n)
            manifest, empty, full = folder / "manifest.yaml", folder / "out-empty", folder / "out-full"
            print(f"{n} transfers ({REFERENCES} references x {n // REFERENCES} targets):", flush=True)
            first = measure(REPO, manifest, empty)
            print(line("first run", first), flush=True)
            if args.code:
                print(line(f"first run ({args.code.name})", measure(args.code, manifest, empty)), flush=True)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", SETUP, str(manifest), str(full)], cwd=REPO, check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
            print(f"  (synthetic catalog and store of {n} artifacts written in {time.perf_counter() - t:.0f} s)")
            cached = measure(REPO, manifest, full)
            print(line("fully cached re-run", cached), flush=True)
            if cached["todo"] or cached["measure"] or cached["cached"] != n or first["todo"] != n:
                raise SystemExit(f"wrong plan at {n}: first {first}, cached {cached}")
            if args.code:
                print(line(f"cached ({args.code.name})", measure(args.code, manifest, full)), flush=True)
            summary[n] = (first, cached)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = max(summary)
    first, cached = summary[n]
    print(f"at {n}: plan_s={first['plan_s']:.2f} cached_s={cached['plan_s']:.2f} "
          f"peak_mb={max(first['peak_mb'], cached['peak_mb']):.0f} (goals at 10^6: 10 s, 10 s, 1024 MB)")


if __name__ == "__main__":
    main()
