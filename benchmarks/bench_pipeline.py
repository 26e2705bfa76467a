"""Pipeline overhead benchmark: `mt run` (Prefect flow + Ray model worker + catalogs) against a bare
Python loop doing the same mtcore work, and the cost of a fully cached re-run.

What it measures (wall seconds, each around ONE subprocess, so interpreter start-up and imports count
on both sides):
  * bare: `python benchmarks/bench_pipeline.py --bare MANIFEST OUT` loads the model once with
    `load_model(manifest.model or the default)`; for each reference: read_video + invert (the
    manifest's inversion config, frame count and size resolved from the model's defaults as
    tasks/work.py's `resolved` does) + save_embedding; then for each reference its transfers
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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "manifests" / "demo.yaml"
BATCH = 4  # `mt run`'s default --batch-size
sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------- bare loop (subprocess)

def bare(manifest_path: str, out: str, threads: int) -> int:
    """The same mtcore work as `mt run`, in one process with no Prefect, Ray or catalogs."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    t0 = time.perf_counter()
    import torch

    from mtcore.embedding import save_embedding
    from mtcore.inversion import invert
    from mtcore.keys import sha256_file
    from mtcore.manifest import load_manifest
    from mtcore.models import load_model
    from mtcore.sampling import transfer
    from mtcore.videoio import read_image, read_video, write_mp4

    torch.set_num_threads(max(1, threads))
    out_dir = Path(out)
    t_import = time.perf_counter()
    m = load_manifest(manifest_path)
    model = load_model(m.model, revision=m.revision)  # None = the project's default model, as `mt run`
    t_load = time.perf_counter()

    def resolved(cfg):  # as tasks/work.py's `resolved`: frame count and size from the model's defaults
        h, w = model.default_size
        return replace(cfg, num_frames=cfg.num_frames or model.default_num_frames, height=cfg.height or h,
                       width=cfg.width or w)

    inv_full = resolved(m.inversion)
    embeddings = {}
    for ref in m.references:
        frames = read_video(ref.path, inv_full.num_frames, inv_full.height, inv_full.width, m.inversion.frame_sampling)
        emb, _ = invert(model, frames, m.inversion, reference_sha256=sha256_file(ref.path))
        embeddings[ref.id] = emb
        save_embedding(emb, out_dir / "embeddings" / f"{ref.id}.safetensors")
    t_inv = time.perf_counter()

    tr_full = resolved(m.transfer)
    targets = {t.id: t for t in m.targets}
    videos = 0
    for ref in m.references:
        jobs = [(tgt, seed) for r, tgt in m.pairs if r == ref.id for seed in m.seeds]
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start : start + BATCH]
            images = [read_image(targets[t].path, tr_full.height, tr_full.width) for t, _ in batch]
            vids = transfer(model, images, embeddings[ref.id], m.transfer, seeds=[s for _, s in batch])
            for (tgt, seed), video in zip(batch, vids):
                write_mp4(video, out_dir / "videos" / f"{ref.id}__{tgt}__seed{seed}.mp4", fps=m.transfer.fps)
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

    from mtcore.manifest import load_manifest

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
    bench = inputs / "bench.yaml"
    bench.write_text(yaml.safe_dump(raw, sort_keys=False))
    warm = {**raw, "name": "warmup", "references": raw["references"][:1], "targets": raw["targets"][:1],
            "pairs": "cross", "seeds": [0], "inversion": {**raw["inversion"], "steps": 1},
            "transfer": {**(raw.get("transfer") or {}), "steps": 1}}
    warmup = inputs / "warmup.yaml"
    warmup.write_text(yaml.safe_dump(warm, sort_keys=False))
    m = load_manifest(bench)  # validates what was written
    load_manifest(warmup)
    return bench, warmup, len(m.references), len(m.pairs) * len(m.seeds)


def run_timed(cmd: list[str], env: dict, log: Path) -> tuple[float, int, str]:
    """Wall seconds, exit status and stdout of one subprocess; stdout+stderr also saved to `log`."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log.write_text(f"$ {' '.join(cmd)}\n--- exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        print(f"  !! exit status {proc.returncode}; last lines (full log: {log}):\n{tail}", flush=True)
    return seconds, proc.returncode, proc.stdout


def summary_counts(stdout: str) -> dict:
    """The counts `mt run` prints in its summary (flows/cli.py print_summary)."""
    out = {}
    for key, pat in (("flow_s", r"finished in ([\d.]+) s"), ("inv", r"inversions: (\d+) computed, (\d+) cached"),
                     ("tr", r"transfers:\s+(\d+) computed, (\d+) cached"), ("failed", r"failed:\s+(\d+)"),
                     ("loads", r"model loaded (\d+)x")):
        mt = re.search(pat, stdout)
        if mt:
            out[key] = tuple(float(g) if "." in g else int(g) for g in mt.groups())
    return out


def describe(c: dict) -> str:
    parts = []
    if "flow_s" in c:
        parts.append(f"flow {c['flow_s'][0]:.1f} s")
    if "inv" in c:
        parts.append(f"inversions {c['inv'][0]} computed/{c['inv'][1]} cached")
    if "tr" in c:
        parts.append(f"transfers {c['tr'][0]} computed/{c['tr'][1]} cached")
    if "failed" in c:
        parts.append(f"failed {c['failed'][0]}")
    if "loads" in c:
        parts.append(f"model loaded {c['loads'][0]}x")
    return "; ".join(parts) or "(no summary found in stdout)"


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

        t_warm, rc_warm, so = run_timed([str(mt), "run", str(warmup), "--out", str(tmp / "out-warmup")], env,
                                        logs / "warmup.log")
        print(f"prefect/ray warm-up (fresh PREFECT_HOME, 1x1 manifest, 1 step each): {t_warm:.1f} s, exit {rc_warm}; "
              f"{describe(summary_counts(so))}", flush=True)

        t_bare, rc_bare, so = run_timed([sys.executable, str(Path(__file__).resolve()), "--bare", str(bench),
                                         str(out_bare), "--threads", str(threads)], env, logs / "bare.log")
        bare_info = {}
        for line in so.splitlines()[::-1]:
            if line.startswith("{"):
                bare_info = json.loads(line)
                break
        print(f"bare loop: {t_bare:.1f} s, exit {rc_bare}; {bare_info}", flush=True)

        t_first, rc_first, so = run_timed([str(mt), "run", str(bench), "--out", str(out_mt)], env, logs / "mt-run-1.log")
        c_first = summary_counts(so)
        print(f"mt run (first): {t_first:.1f} s, exit {rc_first}; {describe(c_first)}", flush=True)

        t_rerun, rc_rerun, so = run_timed([str(mt), "run", str(bench), "--out", str(out_mt)], env, logs / "mt-run-2.log")
        c_rerun = summary_counts(so)
        print(f"mt run (re-run, all cached): {t_rerun:.1f} s, exit {rc_rerun}; {describe(c_rerun)}", flush=True)

        problems = []
        if rc_bare != 0 or bare_info.get("bare_inversions") != n_inv or bare_info.get("bare_transfers") != n_tr:
            problems.append(f"bare loop did not do {n_inv} inversions + {n_tr} transfers")
        if c_first.get("inv") != (n_inv, 0) or c_first.get("tr") != (n_tr, 0):
            problems.append(f"first mt run did not compute {n_inv} inversions + {n_tr} transfers")
        if c_rerun.get("inv") != (0, n_inv) or c_rerun.get("tr") != (0, n_tr):
            problems.append("re-run computed something (expected everything cached)")

        print()
        print(f"{'run':<32} {'wall s':>9}")
        print(f"{'prefect/ray warm-up (excluded)':<32} {t_warm:>9.1f}")
        print(f"{'bare python loop':<32} {t_bare:>9.1f}")
        print(f"{'mt run, first (all computed)':<32} {t_first:>9.1f}")
        print(f"{'mt run, re-run (all cached)':<32} {t_rerun:>9.1f}")
        if "flow_s" in c_first:
            print(f"mt run first: flow body {c_first['flow_s'][0]:.1f} s of {t_first:.1f} s wall "
                  f"(the rest: interpreter, imports, Prefect start/stop)")
        print(f"mt run exit status: first={rc_first} rerun={rc_rerun} "
              f"({'both 0: ok' if rc_first == 0 and rc_rerun == 0 else 'NOT both 0'})")
        for p in problems:
            print(f"WARNING: {p}")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        overhead = t_first / t_bare
        rerun = t_rerun / t_first
        print(f"ratios: first_run / bare = {overhead:.2f}; rerun / first_run = {rerun:.3f}")
        print(f"overhead_ratio={overhead:.2f} rerun_ratio={rerun:.3f}")
        return 0 if rc_first == 0 and rc_rerun == 0 and not problems else 1
    finally:
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
