"""Pipeline overhead benchmark: `mt run` (Prefect flow + Ray model worker + catalogs) against a bare
Python loop doing the same mtcore work, and the cost of a fully cached re-run.

What it measures (wall seconds, each around ONE subprocess, so interpreter start-up and imports count
on both sides):
  * bare: `python benchmarks/bench_pipeline.py --bare MANIFEST OUT` loads the model once with
    `load_model(manifest.model or the default)`; for each reference: read_reference + invert (the
    manifest's inversion config; frame count and size resolved against the model by
    `SVDModel.resolve`, as tasks/work.py does) + save_embedding; then for each reference its transfers
    (pairs x seeds, in manifest order) in batches of 4 via `transfer` + write_mp4 per video;
  * first run: `mt run MANIFEST --out OUT` (the real CLI) into an empty OUT;
  * re-run: the same `mt run` on the same OUT (everything cached: no Ray, no model load).
Printed: the three wall times, overhead_ratio = first_run / bare, rerun_ratio = rerun / first_run,
and last, exactly: `overhead_ratio=X.XX rerun_ratio=Y.YYY`.

The manifest is manifests/demo.yaml (3 reference videos x 3 targets, cross pairs), copied with its
media into a temp folder, with `inversion.steps` set to --inversion-steps (default 1000, so the
compute is well over a minute: an inversion step at 64 px / 8 frames is ~0.05 s here) and seeds
0..N-1 (--seeds N, default 1), written with yaml.safe_dump.

Prefect and Ray start-up: the first Prefect start on a fresh PREFECT_HOME creates and migrates its
database, which is a one-time cost no steady-state user pays per run. So all `mt run`s share one
PREFECT_HOME under the temp folder, and an untimed-for-the-ratio warm-up `mt run` (1 reference x 1
target, 1 inversion step, 1 sampling step, its own OUT) runs first; its time is printed separately
as "prefect/ray warm-up". Ray's own start-up is NOT amortised: every `mt run` that computes
something starts a local Ray and a model worker, and that is part of the measured overhead.
Subprocess env: PREFECT_SERVER_ANALYTICS_ENABLED=false, RAY_USAGE_STATS_ENABLED=0, PREFECT_HOME.

Run (full; several minutes):
    .venv/bin/python benchmarks/bench_pipeline.py
Smoke test (inversion steps 20; ~2 minutes, most of it Prefect/Ray start-up):
    .venv/bin/python benchmarks/bench_pipeline.py --quick
Flags: --inversion-steps N (1000), --seeds N (1), --keep (keep the temp folder), --quick,
       --threads N (torch threads of the bare loop; default = CPU count, what `mt run`'s single
       CPU worker gets).
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
DEMO = REPO / "manifests" / "demo.yaml"
BATCH = 4  # `mt run`'s default --batch-size
INVERSION_BATCH = 4  # references inverted together, passed to `mt run --inversion-batch` too
sys.path.insert(0, str(REPO))

from tasks.results import RunSummary  # noqa: E402  (light: no torch, ray or prefect)


# --------------------------------------------------------------------------- bare loop (subprocess)

def bare(manifest_path: str, out: str, threads: int) -> int:
    """The same mtcore work as `mt run`, in one process with no Prefect, Ray or catalogs."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    t0 = time.perf_counter()
    import torch

    from mtcore.method.embedding import save_embedding
    from mtcore.method.inversion import invert_batch, read_reference
    from mtcore.io.fileio import sha256_file
    from mtcore.data.manifest import load_manifest
    from mtcore.method.models import load_model
    from mtcore.method.sampling import transfer
    from mtcore.io.videoio import read_image, write_mp4

    torch.set_num_threads(max(1, threads))
    out_dir = Path(out)
    t_import = time.perf_counter()
    manifest = load_manifest(manifest_path)
    model = load_model(manifest.model, revision=manifest.revision)  # None = the default model, as `mt run`
    t_load = time.perf_counter()

    embeddings = {}
    refs = list(manifest.references)
    for start in range(0, len(refs), INVERSION_BATCH):  # as `mt run --inversion-batch INVERSION_BATCH`
        group = refs[start : start + INVERSION_BATCH]
        frames = [read_reference(model, ref.path, manifest.inversion) for ref in group]
        results = invert_batch(model, frames, manifest.inversion, [sha256_file(ref.path) for ref in group])
        for ref, (emb, _) in zip(group, results):
            embeddings[ref.id] = emb
            save_embedding(emb, out_dir / "embeddings" / f"{ref.id}.safetensors")
    t_inv = time.perf_counter()

    targets = {t.id: t for t in manifest.targets}
    videos = 0
    for ref in manifest.references:
        full = model.resolve(manifest.transfer, num_frames=embeddings[ref.id].num_frames)
        jobs = [(tgt, seed) for r, tgt in manifest.pairs if r == ref.id for seed in manifest.seeds]
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start : start + BATCH]
            images = [read_image(targets[t].path, full.height, full.width) for t, _ in batch]
            vids = transfer(model, images, embeddings[ref.id], manifest.transfer, seeds=[s for _, s in batch])
            for (tgt, seed), video in zip(batch, vids):
                write_mp4(video, out_dir / "videos" / f"{ref.id}__{tgt}__seed{seed}.mp4", fps=manifest.transfer.fps)
                videos += 1
    t_tr = time.perf_counter()
    print(json.dumps({"bare_inversions": len(embeddings), "bare_transfers": videos,
                      "import_s": round(t_import - t0, 2), "load_s": round(t_load - t_import, 2),
                      "inversions_s": round(t_inv - t_load, 2), "transfers_s": round(t_tr - t_inv, 2)}))
    return 0


# --------------------------------------------------------------------------- orchestration

def prepare(tmp: Path, inversion_steps: int, seeds: int) -> tuple[Path, Path, int, int]:
    """Copy the demo manifest and media to tmp/inputs; write bench.yaml and warmup.yaml there."""
    import yaml

    from mtcore.data.manifest import load_manifest

    demo = load_manifest(DEMO)
    inputs = tmp / "inputs"
    for item in (*demo.references, *demo.targets):
        rel = item.path.relative_to(DEMO.parent)
        (inputs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item.path, inputs / rel)
    raw = yaml.safe_load(DEMO.read_text())
    raw["name"] = "bench"
    raw["inversion"] = {**(raw.get("inversion") or {}), "steps": inversion_steps}
    raw["seeds"] = list(range(seeds))
    raw["metrics"] = False  # the bare loop measures nothing; metrics are timed apart (bench-metrics.yaml)
    (inputs / "bench-metrics.yaml").write_text(yaml.safe_dump({**raw, "name": "bench-metrics", "metrics": True},
                                                               sort_keys=False))
    bench = inputs / "bench.yaml"
    bench.write_text(yaml.safe_dump(raw, sort_keys=False))
    warm = {**raw, "name": "warmup", "references": raw["references"][:1], "targets": raw["targets"][:1],
            "pairs": "cross", "seeds": [0], "inversion": {**raw["inversion"], "steps": 1},
            "transfer": {**(raw.get("transfer") or {}), "steps": 1}}
    warmup = inputs / "warmup.yaml"
    warmup.write_text(yaml.safe_dump(warm, sort_keys=False))
    manifest = load_manifest(bench)  # validates what was written
    load_manifest(warmup)
    return bench, warmup, len(manifest.references), len(manifest.pairs) * len(manifest.seeds)


def run_timed(cmd: list[str], env: dict, log: Path, cpu: dict | None = None) -> tuple[float, int, str]:
    """Wall seconds, exit status and stdout of one subprocess; stdout+stderr also saved to `log`.

    With `cpu`, fills it with the CPU seconds (user + system) each process of the run's tree used,
    by process name, sampled every 0.2 s (the last sample of a process that exits is kept).
    """
    import psutil

    t0 = time.perf_counter()
    popen = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, tuple[str, float]] = {}
    if cpu is not None:
        root = psutil.Process(popen.pid)
        while popen.poll() is None:
            try:
                for p in [root, *root.children(recursive=True)]:
                    with p.oneshot():
                        times = p.cpu_times()
                        name = " ".join(p.cmdline()[:3])
                    seen[p.pid] = (process_label(name), times.user + times.system)
            except psutil.Error:
                pass
            time.sleep(0.2)
    stdout, stderr = popen.communicate()
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    seconds = time.perf_counter() - t0
    if cpu is not None:
        for label, used in seen.values():
            cpu[label] = cpu.get(label, 0.0) + used
    log.write_text(f"$ {' '.join(cmd)}\n--- exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        print(f"  !! exit status {proc.returncode}; last lines (full log: {log}):\n{tail}", flush=True)
    return seconds, proc.returncode, proc.stdout


def process_label(cmdline: str) -> str:
    """A short name for a process of a run (what it is, not its pid)."""
    for needle, label in (("ModelWorker", "model worker (Ray actor)"), ("ray::IDLE", "idle Ray worker"),
                          ("LoadLog", "Ray LoadLog actor"), ("raylet", "raylet"), ("gcs_server", "Ray GCS"),
                          ("DashboardAgent", "Ray dashboard agent"), ("RuntimeEnvAgent", "Ray runtime-env agent"),
                          ("dashboard.py", "Ray dashboard (minimal)"), ("monitor.py", "Ray autoscaler monitor"),
                          ("log_monitor", "Ray log monitor"), ("uvicorn", "Prefect temporary server"),
                          ("bin/mt", "driver (mt run)")):
        if needle in cmdline:
            return label
    return cmdline[:60] or "?"


def read_summary(stdout: str) -> RunSummary | None:
    """The run summary `mt run --json` prints (tasks.results.RunSummary), or None if there is none."""
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        return RunSummary.from_json(json.loads(stdout[start:]))
    except (ValueError, KeyError, TypeError):
        return None


def describe(summary: RunSummary | None) -> str:
    if summary is None:
        return "(no summary found in stdout)"
    loads = ", ".join(f"model loaded {w.model_loads}x" for w in summary.workers) or "no workers"
    return (f"flow {summary.wall_seconds:.1f} s; inversions {summary.inversions_computed} computed/"
            f"{summary.inversions_cached} cached; transfers {summary.transfers_computed} computed/"
            f"{summary.transfers_cached} cached; failed {summary.failed}; {loads}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bare", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--inversion-steps", type=int, default=None, help="inversion steps of the manifest (default 1000; --quick 20)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per pair (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (outputs and logs)")
    ap.add_argument("--quick", action="store_true", help="smoke test: inversion steps 20")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the bare loop (default: CPU count)")
    args = ap.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    if args.bare:
        return bare(args.bare[0], args.bare[1], threads)

    steps = args.inversion_steps if args.inversion_steps is not None else (20 if args.quick else 1000)
    if steps < 1 or args.seeds < 1:
        ap.error("--inversion-steps and --seeds must be >= 1")
    bindir = Path(sys.executable).parent
    mt = bindir / "mt"
    if not mt.exists():
        ap.error(f"{mt} not found: run with the project's venv python (.venv/bin/python)")

    import torch

    print(f"torch {torch.__version__}; cpu_count={os.cpu_count()}; bare loop torch threads={threads}; "
          f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-pipeline-"))
    try:
        bench, warmup, n_inv, n_tr = prepare(tmp, steps, args.seeds)
        print(f"manifest: {bench} (demo: {n_inv} references, {n_tr} transfers; inversion steps {steps}, "
              f"seeds 0..{args.seeds - 1}); temp folder {tmp}{' (kept)' if args.keep else ''}", flush=True)
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
               "PREFECT_HOME": str(tmp / "prefect-home")}
        logs = tmp / "logs"
        logs.mkdir()
        out_mt, out_bare = tmp / "out-mt", tmp / "out-bare"

        t_warm, rc_warm, so = run_timed([str(mt), "run", str(warmup), "--out", str(tmp / "out-warmup"), "--json"],
                                        env, logs / "warmup.log")
        print(f"prefect/ray warm-up (fresh PREFECT_HOME, 1x1 manifest, 1 step each): {t_warm:.1f} s, exit {rc_warm}; "
              f"{describe(read_summary(so))}", flush=True)

        t_bare, rc_bare, so = run_timed([sys.executable, str(Path(__file__).resolve()), "--bare", str(bench),
                                         str(out_bare), "--threads", str(threads)], env, logs / "bare.log")
        bare_info = {}
        for line in so.splitlines()[::-1]:
            if line.startswith("{"):
                bare_info = json.loads(line)
                break
        print(f"bare loop: {t_bare:.1f} s, exit {rc_bare}; {bare_info}", flush=True)

        cpu: dict[str, float] = {}
        t_first, rc_first, so = run_timed([str(mt), "run", str(bench), "--out", str(out_mt), "--json",
                                           "--inversion-batch", str(INVERSION_BATCH)], env, logs / "mt-run-1.log", cpu)
        first = read_summary(so)
        print(f"mt run (first): {t_first:.1f} s, exit {rc_first}; {describe(first)}", flush=True)
        print(f"  CPU seconds by process during it ({t_first:.1f} s wall, {os.cpu_count()} cores):")
        for label, used in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"    {label:<30} {used:7.1f}")
        if (out_mt / "catalog" / "embeddings").is_dir():
            from mtcore.data.catalog import read_table

            inv = read_table(out_mt, "embeddings")
            print(f"  inversion seconds in the worker: {', '.join(f'{x:.1f}' for x in inv.seconds)} "
                  f"(bare loop: {bare_info.get('inversions_s', float('nan')):.1f} s for {n_inv})")

        t_rerun, rc_rerun, so = run_timed([str(mt), "run", str(bench), "--out", str(out_mt), "--json",
                                           "--inversion-batch", str(INVERSION_BATCH)], env, logs / "mt-run-2.log")
        rerun = read_summary(so)
        print(f"mt run (re-run, all cached): {t_rerun:.1f} s, exit {rc_rerun}; {describe(rerun)}", flush=True)

        t_metrics, rc_metrics, so = run_timed([str(mt), "run", str(bench.parent / "bench-metrics.yaml"), "--out",
                                               str(tmp / "out-mt-metrics"), "--json", "--inversion-batch",
                                               str(INVERSION_BATCH)], env, logs / "mt-run-metrics.log")
        with_metrics = read_summary(so)
        print(f"mt run with metrics (the same work, every video measured): {t_metrics:.1f} s, exit {rc_metrics}; "
              f"{describe(with_metrics)}; {with_metrics.metrics_computed if with_metrics else '?'} measured", flush=True)

        problems = []
        if rc_bare != 0 or bare_info.get("bare_inversions") != n_inv or bare_info.get("bare_transfers") != n_tr:
            problems.append(f"bare loop did not do {n_inv} inversions + {n_tr} transfers")
        if first is None or (first.inversions_computed, first.inversions_cached, first.transfers_computed,
                             first.transfers_cached) != (n_inv, 0, n_tr, 0):
            problems.append(f"first mt run did not compute {n_inv} inversions + {n_tr} transfers")
        if rerun is None or (rerun.inversions_computed, rerun.inversions_cached, rerun.transfers_computed,
                             rerun.transfers_cached) != (0, n_inv, 0, n_tr):
            problems.append("re-run computed something (expected everything cached)")

        print()
        print(f"{'run':<32} {'wall s':>9}")
        print(f"{'prefect/ray warm-up (excluded)':<32} {t_warm:>9.1f}")
        print(f"{'bare python loop':<32} {t_bare:>9.1f}")
        print(f"{'mt run, first (all computed)':<32} {t_first:>9.1f}")
        print(f"{'mt run, re-run (all cached)':<32} {t_rerun:>9.1f}")
        if first is not None:
            print(f"mt run first: flow body {first.wall_seconds:.1f} s of {t_first:.1f} s wall "
                  f"(the rest: interpreter, imports, Prefect start/stop)")
        print(f"mt run exit status: first={rc_first} rerun={rc_rerun} "
              f"({'both 0: ok' if rc_first == 0 and rc_rerun == 0 else 'NOT both 0'})")
        for p in problems:
            print(f"WARNING: {p}")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        overhead = t_first / t_bare
        rerun_ratio = t_rerun / t_first
        metrics_ratio = t_metrics / t_first
        print(f"ratios: first_run / bare = {overhead:.2f}; rerun / first_run = {rerun_ratio:.3f}; "
              f"with metrics / without = {metrics_ratio:.3f}")
        print(f"overhead_ratio={overhead:.2f} rerun_ratio={rerun_ratio:.3f} metrics_ratio={metrics_ratio:.3f}")
        return 0 if rc_first == 0 and rc_rerun == 0 and not problems else 1
    finally:
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
