"""Seeds until it passes against fixed seeds, on the demo (built-in model): videos made per kept pair.

Two real runs of manifests/demo.yaml's references and targets, side by side:
  * fixed: `seeds: [0 .. N-1]`, every pair N videos; a pair is kept when any of its videos passes;
  * retry: `seeds: [0]` and `retry: {where: COND, max_seeds: N}`, more seeds only for failing pairs.
Seeds are deterministic, so the retry run's videos are the fixed run's first ones of each pair: the
script also checks that the retry run kept the same pairs and made exactly the predicted videos.

Run: .venv/bin/python benchmarks/bench_retry.py [--where "motion_fidelity >= 0.7"] [--max-seeds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MT = str(Path(sys.executable).with_name("mt"))


def run(manifest: Path, out: Path, env: dict) -> dict:
    done = subprocess.run([MT, "run", str(manifest), "--out", str(out), "--json"], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout[done.stdout.index("{"):])


def passing(out: Path, where: str) -> dict[tuple[str, str], list[tuple[int, bool]]]:
    """(reference, target) -> [(seed, passes)] over the run's measured videos."""
    import duckdb

    rows = duckdb.sql(f"""
        SELECT t.reference_id, t.target_id, t.seed, coalesce(({where}), false) AS passes
        FROM read_parquet('{out}/catalog/transfers/*.parquet') t
        JOIN read_parquet('{out}/catalog/metrics/*.parquet') m USING (transfer_key)
        WHERE t.status = 'ok' ORDER BY t.seed""").fetchall()
    pairs: dict = {}
    for ref, target, seed, ok in rows:
        pairs.setdefault((ref, target), []).append((seed, ok))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--where", default="motion_fidelity >= 0.7")
    parser.add_argument("--max-seeds", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-retry-"))
    env = dict(os.environ, PREFECT_HOME=str(folder / "prefect"))
    demo = yaml.safe_load((REPO / "manifests" / "demo.yaml").read_text())
    for item in demo["references"] + demo["targets"]:
        item["path"] = str(REPO / "manifests" / item["path"])
    n = args.max_seeds
    fixed = folder / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({**demo, "seeds": list(range(n)), "allow_outside": True}))
    retry = folder / "retry.yaml"
    retry.write_text(yaml.safe_dump({**demo, "seeds": [0], "allow_outside": True,
                                     "retry": {"where": args.where, "max_seeds": n}}))
    run(fixed, folder / "out-fixed", env)
    summary = run(retry, folder / "out-retry", env)
    again = run(retry, folder / "out-retry", env)

    by_pair = passing(folder / "out-fixed", args.where)
    kept = {p for p, seeds in by_pair.items() if any(ok for _, ok in seeds)}
    predicted = sum(next((i + 1 for i, (_, ok) in enumerate(seeds) if ok), len(seeds)) for seeds in by_pair.values())
    fixed_videos = sum(len(s) for s in by_pair.values())
    retry_pairs = passing(folder / "out-retry", args.where)
    retry_kept = {p for p, seeds in retry_pairs.items() if any(ok for _, ok in seeds)}
    retry_videos = sum(len(s) for s in retry_pairs.values())
    print(f"gate {args.where!r}, up to {n} seeds, {len(by_pair)} pairs; "
          f"first seed passes for {sum(1 for s in by_pair.values() if s[0][1])}")
    print(f"fixed seeds [0..{n - 1}]: {fixed_videos} videos, {len(kept)} pairs kept: "
          f"{fixed_videos / max(1, len(kept)):.2f} videos per kept pair")
    print(f"retry: {retry_videos} videos (predicted from the fixed run: {predicted}), {len(retry_kept)} pairs kept: "
          f"{retry_videos / max(1, len(retry_kept)):.2f} videos per kept pair; "
          f"same kept pairs: {retry_kept == kept}; re-run computed {again['transfers_computed']}")
    print(f"retry run: {summary['transfers_computed']} transfers computed in {summary['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
