"""Catalog scale: a synthetic catalog of 1,000,000 transfer rows, left as a long-running pipeline leaves
it (one Parquet part per flush of 50 rows: 20,000 files), then compacted with `mt compact`.

Printed, side by side in one run: bytes on disk, the time for a plan to read the ok keys
(mtcore.data.catalog.ok_keys, what `mt run` does first), and a DuckDB query over the table
(count of ok transfers per reference), before and after compaction, and the compaction's own time.
With --delta (needs `pip install deltalake`), the same rows are also written as a Delta Lake table
through the same 20,000 appends and compacted with its OPTIMIZE, for comparison.

Run:  .venv/bin/python benchmarks/bench_scale.py            (about 10 minutes on 2 cores)
      .venv/bin/python benchmarks/bench_scale.py --rows 100000 --per-file 50   (a quicker look)
Last line: `plan_s_before=… plan_s_after=… plan_speedup=…`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtcore.data.catalog import TRANSFERS, compact, ok_keys, part_files  # noqa: E402


def synthetic_rows(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    """n transfers rows with the catalog's schema: 100 references x many targets, 95% ok."""
    ids = np.arange(start, start + n)
    keys = [f"{i:064x}" for i in ids]
    ok = rng.random(n) < 0.95
    now = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    return pa.Table.from_pydict({
        "transfer_key": keys, "embedding_key": [f"{i % 100:064x}" for i in ids],
        "reference_id": [f"ref{i % 100}" for i in ids], "target_id": [f"target{i // 100}" for i in ids],
        "target_sha256": keys, "seed": (ids % 3).astype(np.int64), "model_id": ["local:" + "a" * 64] * n,
        "video_path": [f"store/videos/{k[:2]}/{k}.mp4" if o else None for k, o in zip(keys, ok)],
        "status": np.where(ok, "ok", "failed").tolist(), "error": [None if o else "boom" for o in ok],
        "seconds": rng.random(n), "worker": ["host/node-1/pid-1"] * n,
        "created_at": [now + dt.timedelta(seconds=int(i)) for i in ids],
        "run_id": ["run"] * n, "model": ["./models/m"] * n, "inversion_config": ["{}"] * n,
        "transfer_config": ["{}"] * n, "reference_path": [f"/data/ref{i % 100}.mp4" for i in ids],
        "target_path": [f"/data/t{i // 100}.png" for i in ids],
    }, schema=TRANSFERS)


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(fn, repeats: int = 3):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def duckdb_query(folder: Path):
    import duckdb

    return duckdb.sql(f"SELECT reference_id, count(*) FROM read_parquet('{folder}/**/*.parquet') "
                      f"WHERE status = 'ok' GROUP BY reference_id").fetchall()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--per-file", type=int, default=50, help="rows per part file (a flush every 50 rows)")
    ap.add_argument("--delta", action="store_true", help="also measure a Delta Lake table (deltalake)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-scale-"))
    rng = np.random.default_rng(0)
    try:
        out = tmp / "out"
        folder = out / "catalog" / "transfers"
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, args.rows, args.per_file)):
            rows = synthetic_rows(start, min(args.per_file, args.rows - start), rng)
            pq.write_table(rows, folder / f"part-20261101T000000{i:09d}Z-{i:08x}.parquet")
        write_s = time.perf_counter() - t0
        files = len(part_files(out, "transfers"))
        print(f"wrote {args.rows} rows in {files} part files in {write_s:.1f} s ({bytes_under(folder) / 2**20:.1f} MiB)")

        plan_before, keys = timed(lambda: ok_keys(out, "transfers"), 1)
        duck_before, groups = timed(lambda: duckdb_query(folder), 1)
        size_before = bytes_under(folder)
        compact_s, (before, after, rewritten) = timed(lambda: compact(out, "transfers"), 1)
        plan_after, keys_after = timed(lambda: ok_keys(out, "transfers"))
        duck_after, groups_after = timed(lambda: duckdb_query(folder))
        assert keys_after == keys and sorted(groups_after) == sorted(groups), "compaction changed the rows"
        size_after = bytes_under(folder)
        print(f"{'':28} {'files':>8} {'MiB':>8} {'plan ok_keys s':>15} {'duckdb s':>10}")
        print(f"{'before compaction':28} {before:>8} {size_before / 2**20:>8.1f} {plan_before:>15.2f} {duck_before:>10.2f}")
        print(f"{'after mt compact':28} {after:>8} {size_after / 2**20:>8.1f} {plan_after:>15.2f} {duck_after:>10.2f}")
        print(f"compaction: {compact_s:.1f} s for {rewritten} rows; ok keys {len(keys)}")
        if args.delta:
            delta_compare(tmp, args, rng)
        print(f"plan_s_before={plan_before:.2f} plan_s_after={plan_after:.2f} plan_speedup={plan_before / plan_after:.1f}")
        return 0
    finally:
        if args.keep:
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def delta_compare(tmp: Path, args, rng) -> None:
    """The same appends into a Delta Lake table, its OPTIMIZE, and the same reads."""
    from deltalake import DeltaTable, write_deltalake

    path = tmp / "delta"
    t0 = time.perf_counter()
    for start in range(0, args.rows, args.per_file):
        write_deltalake(str(path), synthetic_rows(start, min(args.per_file, args.rows - start), rng), mode="append")
    write_s = time.perf_counter() - t0
    read = lambda: set(DeltaTable(str(path)).to_pyarrow_dataset().to_table(  # noqa: E731
        columns=["transfer_key"], filter=pa.compute.field("status") == "ok").column("transfer_key").to_pylist())
    before, _ = timed(read, 1)
    t0 = time.perf_counter()
    DeltaTable(str(path)).optimize.compact()
    optimize_s = time.perf_counter() - t0
    after, _ = timed(read)
    print(f"delta lake: {args.rows} rows in {write_s:.1f} s of appends; read ok keys {before:.2f} s before, "
          f"{after:.2f} s after OPTIMIZE ({optimize_s:.1f} s); {bytes_under(path) / 2**20:.1f} MiB with its log and "
          "the files OPTIMIZE replaced (until VACUUM)")


if __name__ == "__main__":
    sys.exit(main())
