"""What the pipeline itself costs per row: the real flow (`flows.bulk.bulk_run`: plan, claims, pools,
storage, catalogs, metrics, compaction) on a stand-in model (benchmarks/standin.py: the real toy model
loaded by the real ModelWorker, the model's and the encoder's work replaced), at 10^4 .. 10^6 transfers.

A `ray.cluster_utils.Cluster` of NODES nodes on this machine (2 fake GPUs each), one worker per GPU
(8 in all). The driver is a subprocess of its own (its own process group, as `mt run` is), so that
its RSS is its own and so that it can be killed. It samples itself every 0.25 s into a JSON-lines file:
its RSS, and the rows committed so far per table. Reported per case:

  * rows/s of the driver: transfers committed / seconds of the transfer stage (first to last row);
  * driver peak RSS (sampled over the run);
  * Ray calls per row (items sent, ray.wait, ray.get in the driver);
  * catalog parts written (append_rows calls), and parts left after the run's compaction;
  * S3 requests per video (the local S3 server's own counts), with OUT on s3://;
  * time to the first video (from the driver's start, and from the flow's start).

Cases (--case, repeatable; default: the issue's set at 10^5 local, 10^4 on S3):
  local-off  OUT a local folder, metrics off;   local-on  the same, metrics on;
  s3-off     OUT on the local S3 server (10^4 by default: the server itself is slow);
  kill       local, metrics off: SIGKILL the driver's process group at half, run again; every key ok
             exactly once, the resume's plan seconds, and videos made twice (the stand-in logs each).

Run:  .venv/bin/python benchmarks/bench_execute.py                      (about 20 minutes here)
      .venv/bin/python benchmarks/bench_execute.py --case local-off --refs 100 --targets 10000 --png rows.png
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

NODES, GPUS_PER_NODE = 4, 2
SAMPLE_S = 0.25


# ---------------------------------------------------------------------------------------------- media
def write_media(folder: Path, refs: int, targets: int, metrics: bool) -> Path:
    """`refs` distinct 8-frame 16-px reference videos, `targets` distinct 16-px PNGs, one cross manifest."""
    import numpy as np
    from PIL import Image

    from mtcore.io.videoio import write_mp4

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(refs):
        path = media / f"r{i}.mp4"
        if not path.exists():
            frames = np.zeros((8, 16, 16, 3), np.uint8)
            frames[..., 0] = i % 256  # every reference distinct
            for f in range(8):
                frames[f, (i + f) % 16, :, 1] = 255
                frames[f, :, (i * 7 + f) % 16, 2] = 200
            write_mp4(frames, path)
    for j in range(targets):
        path = media / f"t{j}.png"
        if not path.exists():
            arr = np.full((16, 16, 3), j % 251, np.uint8)
            arr[0, 0] = [(j >> 16) & 255, (j >> 8) & 255, j & 255]  # every target distinct
            Image.fromarray(arr).save(path)
    name = f"exec-{refs}x{targets}-{'m' if metrics else 'n'}.yaml"
    lines = [f"name: exec-{refs}x{targets}", "pairs: cross", "seeds: [0]", f"metrics: {'true' if metrics else 'false'}",
             "inversion: {steps: 1, tokens_per_frame: 1}", "transfer: {steps: 1}", "references:"]
    lines += [f"  - {{id: r{i}, path: media/r{i}.mp4}}" for i in range(refs)]
    lines.append("targets:")
    lines += [f"  - {{id: t{j}, path: media/t{j}.png}}" for j in range(targets)]
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


# ---------------------------------------------------------------------------------------------- driver
def drive(args) -> int:
    """The driver process: the real flow, instrumented from outside (counting wrappers, a sampler thread)."""
    import ray

    import flows.bulk as bulk
    import standin
    import tasks.dispatch as dispatch
    import tasks.sink as sink

    counts = Counter()
    t_start = float(os.environ.get("BENCH_T0", time.time()))
    first_video = [None]

    real_add = sink.RowSink.add

    def add(self, rows, recovered=False):
        for table, table_rows in rows.items():
            counts[f"rows_{table}"] += len(table_rows)
            if table == "transfers" and first_video[0] is None and any(r["status"] == "ok" for r in table_rows):
                first_video[0] = time.time()
        return real_add(self, rows, recovered)

    sink.RowSink.add = add
    real_append = sink.append_rows

    def append_rows(out, table, rows):
        counts["parts"] += 1
        return real_append(out, table, rows)

    sink.append_rows = append_rows
    real_wait, real_get = ray.wait, ray.get

    def wait(*a, **k):
        counts["ray_wait"] += 1
        return real_wait(*a, **k)

    def get(*a, **k):
        counts["ray_get"] += 1
        return real_get(*a, **k)

    ray.wait, ray.get = wait, get
    real_dispatch = dispatch.dispatch

    def counted_dispatch(actors, items, *a, **k):
        items = list(items)
        counts["ray_items"] += len(items)
        return real_dispatch(actors, items, *a, **k)

    import tasks.pool as pool
    pool.dispatch = counted_dispatch
    real_plan = bulk.plan_stage
    plan_s = [None]

    def plan_stage(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_plan(*a, **k)
        finally:
            plan_s[0] = time.perf_counter() - t0

    bulk.plan_stage = plan_stage

    import pyarrow as pa

    samples = open(args.samples, "a", buffering=1)
    stop = threading.Event()

    def sampler():
        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.is_set():
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            usage = resource.getrusage(resource.RUSAGE_SELF)
            samples.write(json.dumps({"t": time.time(), "rss": rss, "cpu": usage.ru_utime + usage.ru_stime,
                                      "arrow": pa.total_allocated_bytes(), "transfers": counts["rows_transfers"],
                                      "metrics": counts["rows_metrics"]}) + "\n")
            stop.wait(SAMPLE_S)

    threading.Thread(target=sampler, daemon=True).start()
    if os.environ.get("BENCH_TRACEMALLOC"):  # where the driver's memory goes (slows it about 2x)
        import tracemalloc
        tracemalloc.start(8)
    runtime_env = standin.ray_runtime_env(args.made_log)
    # the nodes were started before the S3 server: its endpoint and credentials go with the job
    runtime_env["env_vars"].update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    ray.init(address=args.address, runtime_env=runtime_env, log_to_driver=False)
    t_flow = time.time()
    summary = bulk.bulk_run(args.manifest, args.out, ray_address=args.address, gpus_per_worker=1,
                            workers=NODES * GPUS_PER_NODE, batch_size=args.batch_size)
    stop.set()
    if os.environ.get("BENCH_TRACEMALLOC"):
        import tracemalloc
        top = tracemalloc.take_snapshot().statistics("traceback")[:12]
        with open(args.result + ".memory.txt", "w") as f:
            for stat in top:
                f.write(f"{stat.size / 2**20:.1f} MB in {stat.count} blocks\n" + "\n".join(stat.traceback.format()[-8:]) + "\n\n")
    with open(args.result, "w") as f:
        json.dump({"summary": summary.to_json(),
                   "counts": dict(counts), "t_start": t_start, "t_flow": t_flow, "t_end": time.time(),
                   "first_video": first_video[0], "plan_s": plan_s[0],
                   "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime},
                  f, default=str)
    return 0


# ---------------------------------------------------------------------------------------------- orchestration
class Driver:
    """One driver subprocess in its own process group."""

    def __init__(self, work: Path, tag: str, manifest: Path, out: str, address: str, batch_size: int, env: dict,
                 made_log: Path | None = None, profile: str | None = None):
        self.samples, self.result = work / f"{tag}.samples.jsonl", work / f"{tag}.result.json"
        for p in (self.samples, self.result):
            p.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--drive", "--manifest", str(manifest), "--out", out, "--address", address,
               "--batch-size", str(batch_size), "--samples", str(self.samples), "--result", str(self.result)]
        if made_log:
            cmd += ["--made-log", str(made_log)]
        self.log = open(work / f"{tag}.log", "w")
        self.t0 = time.time()
        self.proc = subprocess.Popen(cmd, cwd=manifest.parent, env={**env, "BENCH_T0": str(self.t0)},
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.profiler = None
        if profile:  # py-spy samples the driver (its Python threads) for the whole run
            self.profiler = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(self.proc.pid), "--format", "raw",
                                              "--rate", "50", "--nonblocking", "-o", profile],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows(self) -> int:
        try:
            lines = self.samples.read_text().splitlines()
        except FileNotFoundError:
            return 0
        for line in reversed(lines):
            try:
                return json.loads(line)["transfers"]
            except ValueError:
                continue
        return 0

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self) -> dict:
        rc = self.proc.wait()
        self.log.close()
        if self.profiler is not None:
            self.profiler.wait(timeout=60)
        if rc != 0:
            raise RuntimeError(f"driver failed ({rc}); see {self.log.name}:\n" + Path(self.log.name).read_text()[-3000:])
        result = json.loads(self.result.read_text())
        result["samples"] = [json.loads(line) for line in self.samples.read_text().splitlines() if line.strip()]
        return result


def report(case: str, n: int, r: dict, out: str, s3_requests: dict | None) -> dict:
    samples = r["samples"]
    c = r["counts"]
    with_rows = [s for s in samples if s["transfers"] > 0]
    t_first = r["first_video"]
    t_last = next((s["t"] for s in samples if s["transfers"] >= c.get("rows_transfers", 0)), r["t_end"])
    transfers = c.get("rows_transfers", 0)
    rate = transfers / (t_last - t_first) if t_first and t_last > t_first else float("nan")
    # the driver's own CPU per row while videos were coming: what caps one driver when the workers are
    # on other machines (one Python process: about 1 core at most)
    window = [s for s in samples if with_rows and with_rows[0]["t"] <= s["t"] <= t_last]
    cpu_ms = (1000 * (window[-1]["cpu"] - window[0]["cpu"]) / max(1, window[-1]["transfers"] - window[0]["transfers"])
              if len(window) > 1 else float("nan"))
    peak = max(s["rss"] for s in samples) / 2**20
    calls = c.get("ray_items", 0) + c.get("ray_wait", 0) + c.get("ray_get", 0)
    parts_left = sum(1 for _ in Path(out, "catalog").rglob("*.parquet")) if not out.startswith("s3://") else None
    line = {"case": case, "transfers": transfers, "metrics_rows": c.get("rows_metrics", 0),
            "rows_per_s": round(rate, 1), "driver_cpu_ms_per_row": round(cpu_ms, 3), "driver_s": round(r["t_end"] - r["t_start"], 1),
            "flow_s": round(r["t_end"] - r["t_flow"], 1), "driver_cpu_s": round(r["cpu_s"], 1), "plan_s": round(r["plan_s"] or 0, 2),
            "peak_rss_mb": round(peak),
            "rss_growth_kb_per_1k_rows": round((window[-1]["rss"] - window[0]["rss"]) / 1024
                                               / max(1, (window[-1]["transfers"] - window[0]["transfers"]) / 1000), 1)
            if len(window) > 1 else None,
            "arrow_mb_end": round(samples[-1].get("arrow", 0) / 2**20, 1), "ray_calls_per_row": round(calls / max(1, transfers), 3),
            "ray_items": c.get("ray_items", 0), "catalog_parts_written": c.get("parts", 0),
            "catalog_parts_left": parts_left,
            "first_video_s": round(t_first - r["t_start"], 1) if t_first else None,
            "first_video_after_flow_s": round(t_first - r["t_flow"], 1) if t_first else None}
    if s3_requests is not None:
        line["s3_requests"] = s3_requests
        line["s3_requests_per_video"] = round(sum(s3_requests.values()) / max(1, transfers), 2)
    print(json.dumps(line), flush=True)
    return line


def rows_png(samples: list[dict], t0: float, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] - t0 for s in samples]
    rows = [s["transfers"] for s in samples]
    rate, times = [], []
    window = max(1, int(10 / SAMPLE_S))
    for i in range(window, len(samples)):
        rate.append((rows[i] - rows[i - window]) / (t[i] - t[i - window]))
        times.append(t[i])
    fig, ax = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax[0].plot(t, rows)
    ax[0].set_ylabel("transfers committed")
    ax[0].set_title(title)
    ax[1].plot(times, rate)
    ax[1].set_ylabel("rows/s (10-s window)")
    ax[1].set_xlabel("seconds since the driver started")
    ax2 = ax[1].twinx()
    ax2.plot(t, [s["rss"] / 2**20 for s in samples], color="tab:red", alpha=0.5)
    ax2.set_ylabel("driver RSS (MB)", color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def metrics_cpu_per_video(out: str, manifest: Path, n: int = 40) -> float:
    """CPU seconds (this process and its ffmpeg children) that `tasks.work.run_metrics` takes per video, on
    `n` videos of the run, in one process on an idle machine: the metrics' own cost, without the pipeline."""
    from mtcore.data.manifest import load_manifest
    from mtcore.method.models import load_model
    from tasks.plan import plan_run
    from tasks.work import run_metrics

    plan = plan_run(load_manifest(manifest), out)
    jobs = [job for _, job in zip(range(n + 2), plan.transfers_cached)]
    model = load_model(plan.models[0].model)
    run_metrics(model, jobs[:2], out, "bench")  # warm: imports, the reference's frames
    cpu = lambda: sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)  # noqa: E731
                      for f in ("ru_utime", "ru_stime"))
    c0 = cpu()
    rows = run_metrics(model, jobs[2:], out, "bench")["metrics"]
    assert len(rows) == len(jobs) - 2, "metrics failed"
    return (cpu() - c0) / len(rows)


def check_once(out: str, manifest: Path) -> dict:
    """Every planned key: ok rows in the catalog (exactly one expected)."""
    import pyarrow.compute as pc

    from mtcore.data.catalog import read_arrow
    from mtcore.data.manifest import load_manifest
    from tasks.plan import plan_run

    plan = plan_run(load_manifest(manifest), out)
    keys = set()
    for part in plan.transfers_cached.parts + plan.transfers_todo.parts:
        keys.update(k.decode() for k in part.key)
    table = read_arrow(out, "transfers", columns=["transfer_key", "status"])
    ok = table.filter(pc.equal(table["status"], "ok"))["transfer_key"].to_pylist()
    per_key = Counter(ok)
    return {"planned": len(keys), "ok_keys": len(per_key), "ok_rows": len(ok),
            "keys_with_two_ok_rows": sum(1 for v in per_key.values() if v > 1),
            "planned_without_ok": len(keys - set(per_key)), "left_to_do": len(plan.transfers_todo)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=["local-off", "local-on", "s3-off", "kill"])
    parser.add_argument("--refs", type=int, default=100)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--s3-targets", type=int, default=100, help="targets per reference on S3 (10^4 in all)")
    parser.add_argument("--metrics-targets", type=int, default=None, help="targets with metrics on (default --targets)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--png", help="draw the first case's rows/s over time")
    parser.add_argument("--profile", help="py-spy the first case's driver into this file (collapsed stacks)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    # the driver subprocess
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    for name in ("--manifest", "--out", "--address", "--samples", "--result", "--made-log"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        args.batch_size = int(args.batch_size)
        return drive(args)

    import ray
    from ray.cluster_utils import Cluster

    cases = args.case or ["local-off", "local-on", "s3-off", "kill"]
    work = Path(tempfile.mkdtemp(prefix="bench-execute-"))
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks")]))
    env.pop("PREFECT_API_URL", None)
    print(f"work folder {work}; cases {cases}; {args.refs} references", flush=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": GPUS_PER_NODE})
    for _ in range(NODES - 1):
        cluster.add_node(num_cpus=2, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    server = None
    results = []
    drivers: list[Driver] = []
    try:
        for i, case in enumerate(cases):
            metrics = case == "local-on"
            targets = args.s3_targets if case == "s3-off" else (args.metrics_targets or args.targets) if metrics else args.targets
            manifest = write_media(work, args.refs, targets, metrics)
            n = args.refs * targets
            case_env = dict(env)
            requests = None
            if case == "s3-off":
                from bench_storage import Server
                server = server or Server(work)
                case_env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret-key",
                                AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{server.port}")
                out = f"s3://bench/exec-{i}"
                before = server.counts()
            else:
                out = str(work / f"out-{i}")
            print(f"== {case}: {n:,} transfers, OUT {out}", flush=True)
            if case == "kill":
                made = work / f"made-{i}.log"
                first = Driver(work, f"{case}-1", manifest, out, cluster.address, args.batch_size, case_env, made)
                drivers.append(first)
                while first.rows() < n // 2:
                    if first.proc.poll() is not None:
                        raise RuntimeError(f"the driver ended before half: see {first.log.name}")
                    time.sleep(0.2)
                at = first.rows()
                first.kill()
                print(f"   killed the driver's process group at {at:,} committed rows", flush=True)
                second = Driver(work, f"{case}-2", manifest, out, cluster.address, args.batch_size, case_env, made)
                drivers.append(second)
                r = second.wait()
                line = report(case + " (resume)", n, r, out, None)
                made_keys = Counter(made.read_text().split())
                once = check_once(out, manifest)
                line.update({"killed_at_rows": at, "resume_plan_s": r["plan_s"], **once,
                             "videos_made": sum(made_keys.values()),
                             "made_twice": sum(1 for v in made_keys.values() if v > 1),
                             "resume_computed": r["summary"]["transfers_computed"],
                             "resume_cached": r["summary"]["transfers_cached"]})
                print(json.dumps({k: line[k] for k in ("killed_at_rows", "resume_plan_s", "planned", "ok_keys", "ok_rows",
                                                       "keys_with_two_ok_rows", "planned_without_ok", "videos_made", "made_twice",
                                                       "resume_computed", "resume_cached")}), flush=True)
            else:
                driver = Driver(work, case, manifest, out, cluster.address, args.batch_size, case_env,
                                profile=args.profile if not results else None)
                drivers.append(driver)
                r = driver.wait()
                if case == "s3-off":
                    from bench_storage import delta
                    requests = delta(server.counts(), before)
                line = report(case, n, r, out, requests)
                if metrics:
                    line["metrics_cpu_s_per_video"] = round(metrics_cpu_per_video(out, manifest), 3)
                    print(f"   the metrics' own CPU: {line['metrics_cpu_s_per_video']} s per video (one process, "
                          f"ffmpeg decoding included)", flush=True)
                if args.png and not results:
                    rows_png(r["samples"], r["t_start"], args.png, f"bench_execute {case}: {n:,} transfers")
                    print(f"   wrote {args.png}", flush=True)
            results.append(line)
    finally:
        for driver in drivers:  # a failure here leaves no driver behind
            if driver.proc.poll() is None:
                driver.kill()
        if server is not None:
            server.close()
        cluster.shutdown()
        if not args.keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
        del ray
    print("summary: " + " ".join(f"{r['case'].split()[0]}_rows_per_s={r['rows_per_s']}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
