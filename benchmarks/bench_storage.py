"""Object storage against a local OUT: the demo run with OUT in a local folder and with OUT on a local S3
server (moto, loopback), side by side in one run.

What it measures:
  * `mt run manifests/demo.yaml --out OUT --json` (the real CLI, one subprocess each) with OUT a new local
    folder and with OUT a new prefix s3://bench/<n> on tests/s3server.py, in the order local, s3, s3, local
    (drift on a busy machine hits both sides alike); the media stay local in both, only OUT differs;
  * wall seconds of the whole command and of the flow body (the summary's wall_seconds, which leaves out
    Prefect's temporary-server start-up, the same on both sides);
  * requests the S3 server served during each S3 run, by HTTP method, per artifact written (3 embeddings
    + 9 videos = 12), from the server's own counts;
  * a cached re-run on S3 (everything in the bucket): its requests.
Printed last, exactly: `ratio_flow=X.XX ratio_command=Y.YY requests_per_artifact=Z.Z`. Goal: ratio <= 1.10.

All `mt run`s share one PREFECT_HOME (a warm-up run first creates Prefect's database, untimed).

Run (about 6 minutes here):
    .venv/bin/python benchmarks/bench_storage.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MT = str(Path(sys.executable).with_name("mt"))
ARTIFACTS = 12  # the demo: 3 embeddings + 9 videos


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """tests/s3server.py in a subprocess, with its request counts read through SIGUSR2."""

    def __init__(self, folder: Path):
        self.port, self.stats = free_port(), folder / "s3-stats.json"
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "s3server.py"), "--host", "127.0.0.1",
                                      "--port", str(self.port), "--bucket", "bench", "--stats", str(self.stats)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line

    def counts(self) -> dict[str, int]:
        before = self.stats.stat().st_mtime_ns if self.stats.exists() else 0
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.stats.exists() and self.stats.stat().st_mtime_ns != before:
                try:
                    return json.loads(self.stats.read_text())
                except ValueError:
                    pass  # being replaced
            time.sleep(0.05)
        raise RuntimeError("the S3 server did not write its counts")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def mt_run(manifest: Path, out: str, env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    done = subprocess.run([MT, "run", str(manifest), "--out", out, "--json"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"mt run {out} failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout[done.stdout.index("{"):])


def delta(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before)) if after.get(k, 0) - before.get(k, 0)}


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    server = Server(folder)
    env = dict(os.environ, PREFECT_HOME=str(folder / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               RAY_USAGE_STATS_ENABLED="0", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret-key",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{server.port}")
    env.pop("PREFECT_API_URL", None)
    manifest = REPO / "manifests" / "demo.yaml"
    try:
        mt_run(manifest, str(folder / "warm-up"), env)  # Prefect's database, Ray's first start: untimed
        results: dict[str, list[tuple[float, float]]] = {"local": [], "s3": []}
        requests = []
        for i, kind in enumerate(("local", "s3", "s3", "local")):
            out = str(folder / f"out-{i}") if kind == "local" else f"s3://bench/out-{i}"
            before = server.counts()
            wall, summary = mt_run(manifest, out, env)
            assert summary["failed"] == 0 and summary["transfers_computed"] == 9, summary
            results[kind].append((wall, summary["wall_seconds"]))
            print(f"{kind:5} run {i}: command {wall:6.1f} s, flow {summary['wall_seconds']:6.1f} s", flush=True)
            if kind == "s3":
                requests.append(delta(server.counts(), before))
                print(f"        requests: {requests[-1]}", flush=True)
        before = server.counts()
        wall, summary = mt_run(manifest, "s3://bench/out-1", env)
        cached = delta(server.counts(), before)
        assert summary["transfers_computed"] == 0
        print(f"cached re-run on s3: command {wall:.1f} s, flow {summary['wall_seconds']:.1f} s, requests {cached} "
              f"({sum(cached.values())} in all for {ARTIFACTS} artifacts)")
    finally:
        server.close()
    flow = {k: statistics.mean(f for _, f in v) for k, v in results.items()}
    command = {k: statistics.mean(c for c, _ in v) for k, v in results.items()}
    per_artifact = statistics.mean(sum(r.values()) for r in requests) / ARTIFACTS
    by_method = {m: statistics.mean(r.get(m, 0) for r in requests) / ARTIFACTS for m in sorted({m for r in requests for m in r})}
    print(f"mean flow: local {flow['local']:.1f} s, s3 {flow['s3']:.1f} s; mean command: local {command['local']:.1f} s, "
          f"s3 {command['s3']:.1f} s")
    print("requests per artifact by method: " + ", ".join(f"{m} {v:.1f}" for m, v in by_method.items()))
    print(f"ratio_flow={flow['s3'] / flow['local']:.2f} ratio_command={command['s3'] / command['local']:.2f} "
          f"requests_per_artifact={per_artifact:.1f}")


if __name__ == "__main__":
    main()
