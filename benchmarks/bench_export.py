"""`mt export` at 100,000 samples: samples/s, the driver's peak memory, shard sizes; and to object storage.

A synthetic finished run (tests/synthetic.py: the real plan's keys, catalogs in the catalog schemas,
every video a small real mp4, every target a real 16-px PNG, random metrics) is exported:
  * to a local folder, 100 references x 1,000 targets, shards of --shard-size (50MB: several shards,
    so their sizes say something), the export in a subprocess whose resident memory is sampled every
    50 ms (peak = the largest sample, not the end);
  * to the local S3 server (tests/s3server.py, its own request counts), --s3-samples samples (the local
    server itself is slow: 10,000 are enough), same OUT layout on local disk.
Goals (issue 22): local >= 1,000 samples/s on this 2-core machine; driver peak <= 1 GB; every shard but
the last of a split within 10% of the target size.

Run: .venv/bin/python benchmarks/bench_export.py [--references 100 --targets 1000] [--s3-samples 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

EXPORT = r"""
import json, sys
from tasks.export import export_dataset
s = export_dataset(sys.argv[1], sys.argv[2], out=sys.argv[3], shard_size=sys.argv[4], split="train=0.9,val=0.05,test=0.05")
print(json.dumps({"kept": s.kept, "seconds": s.seconds, "shards": [[x.split, x.bytes, x.samples] for x in s.shards]}))
"""


def export(manifest: Path, dest: str, out: Path, shard_size: str, env: dict) -> dict:
    """Run one export in a subprocess; its summary, wall time and peak RSS (sampled)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", EXPORT, str(manifest), dest, str(out), shard_size], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"export to {dest} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall=time.perf_counter() - t0, peak_mb=peak / 2**20)
    return result


def shard_report(result: dict, target: int) -> tuple[float, bool]:
    """The largest deviation from the target of any shard that is not its split's last; all within 10%?"""
    deviations = []
    for split in {s for s, _, _ in result["shards"]}:
        sizes = [b for s, b, _ in result["shards"] if s == split]
        deviations += [abs(b - target) / target for b in sizes[:-1]]
    worst = max(deviations, default=0.0)
    return worst, worst <= 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", type=int, default=100)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--shard-size", default="50MB")
    parser.add_argument("--s3-samples", type=int, default=10000)
    args = parser.parse_args()
    from tasks.export import parse_size
    from tests.synthetic import make_run

    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    manifest, out = make_run(folder / "big", args.references, args.targets)
    n = args.references * args.targets
    print(f"synthetic run of {n:,} transfers made in {time.perf_counter() - t0:.1f} s ({folder})", flush=True)

    local = export(manifest, str(folder / "dataset"), out, args.shard_size, env)
    rate = local["kept"] / local["seconds"]
    worst, ok = shard_report(local, parse_size(args.shard_size))
    print(f"local: {local['kept']:,} samples in {local['seconds']:.1f} s (command {local['wall']:.1f} s): "
          f"{rate:,.0f} samples/s; peak RSS {local['peak_mb']:.0f} MB; {len(local['shards'])} shards, "
          f"worst shard {100 * worst:.1f}% from {args.shard_size}", flush=True)

    from bench_storage import Server, delta

    server = Server(folder)
    try:
        s3_env = dict(env, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{server.port}")
        refs = max(1, args.s3_samples // args.targets)
        manifest_s3, out_s3 = make_run(folder / "small", refs, args.targets)
        before = server.counts()
        remote = export(manifest_s3, "s3://bench/dataset", out_s3, args.shard_size, s3_env)
        requests = delta(server.counts(), before)
    finally:
        server.close()
    s3_rate = remote["kept"] / remote["seconds"]
    per_sample = sum(requests.values()) / remote["kept"]
    print(f"s3: {remote['kept']:,} samples in {remote['seconds']:.1f} s: {s3_rate:,.0f} samples/s; "
          f"peak RSS {remote['peak_mb']:.0f} MB; {len(remote['shards'])} shards; requests {requests} "
          f"({per_sample:.4f} per sample)", flush=True)
    print(f"goals: local {rate:,.0f} samples/s (>= 1,000: {'met' if rate >= 1000 else 'NOT met'}); "
          f"peak {local['peak_mb']:.0f} MB (<= 1,024: {'met' if local['peak_mb'] <= 1024 else 'NOT met'}); "
          f"shards within {100 * worst:.1f}% ({'met' if ok else 'NOT met'})")


if __name__ == "__main__":
    main()
