"""`mt report` at 2,000 transfers (or 100,000: --references 200 --targets 500): time to write the page, its
size and its data file's, and how it behaves in headless Chromium (time to load the page, to the first
page's videos playing, to every transfer loaded from data/items.js, elements in the page, a sort of all rows).

A synthetic OUT: 40 reference videos x 50 target images (real mp4s and PNGs written by mtcore), one
transfer each (their outputs hard links to 10 real mp4s), with catalog rows and metrics rows of the
real schemas. Needs Debian's chromium and chromium-driver (as the report test).

Run: .venv/bin/python benchmarks/bench_report.py [--references 40 --targets 50]
     .venv/bin/python benchmarks/bench_report.py --memory [--code OLD_CHECKOUT]
       (peak RSS of writing the report at 2 x 10^4, 10^5 and 10^6 transfers, no browser)
     .venv/bin/python benchmarks/bench_report.py --compare [--repeat 5]
       (2,000 against 100,000 transfers side by side: both reports written, then each page opened
       `--repeat` times, alternating, each in a fresh Chromium profile; medians and their ratio)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtcore import METRICS_VERSION  # noqa: E402
from mtcore.data.catalog import append_rows, store_path, store_relpath  # noqa: E402
from mtcore.eval.report import write_report  # noqa: E402
from mtcore.io.videoio import write_mp4  # noqa: E402
from tests.conftest import moving_square_frames  # noqa: E402


def build(out: Path, media: Path, n_refs: int, n_targets: int) -> int:
    rng = np.random.default_rng(0)
    now = dt.datetime.now(dt.timezone.utc)
    refs = [write_mp4(moving_square_frames(8, size=64, step=2 + i % 5, seed=i), media / f"ref{i}.mp4")
            for i in range(n_refs)]
    targets = []
    for j in range(n_targets):
        path = media / f"target{j}.png"
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
        targets.append(path)
    outputs = [write_mp4(moving_square_frames(8, size=64, step=3, seed=100 + k), media / f"out{k}.mp4")
               for k in range(10)]
    transfers, metrics = [], []
    for i, ref in enumerate(refs):
        for j, target in enumerate(targets):
            key = f"{i * n_targets + j:064x}"
            dest = store_path(out, "transfers", key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(outputs[(i + j) % len(outputs)], dest)
            transfers.append({
                "transfer_key": key, "embedding_key": f"{i:064x}", "reference_id": f"ref{i}", "target_id": f"target{j}",
                "target_sha256": "0" * 64, "seed": 0, "model_id": "local:" + "a" * 64,
                "video_path": store_relpath("transfers", key), "status": "ok", "error": None, "seconds": 1.0,
                "worker": "bench", "created_at": now, "run_id": "bench", "model": "toy", "inversion_config": "{}",
                "transfer_config": "{}", "reference_path": str(ref), "target_path": str(target)})
            metrics.append({
                "transfer_key": key, "metrics_version": METRICS_VERSION, "motion_fidelity": float(rng.uniform(-1, 1)),
                "motion_fidelity_output_to_reference": None, "motion_fidelity_reference_to_output": None,
                "moving_tracks_output": 10, "moving_tracks_reference": 10, "psnr_first": float(rng.uniform(15, 35)),
                "ssim_first": float(rng.uniform(0, 1)), "clip_first": None, "clip_avg": None, "clip_note": "bench",
                "warp_error": 0.01, "frame_change": 0.02, "tracker": "opencv_lk", "seconds": 0.1, "worker": "bench",
                "created_at": now, "run_id": "bench"})
    append_rows(out, "transfers", transfers)
    append_rows(out, "metrics", metrics)
    return len(transfers)


def browse(page: Path, profile: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        t0 = time.perf_counter()
        driver.get(page.as_uri())
        loaded = time.perf_counter() - t0

        def wait_videos() -> float:
            t = time.perf_counter()
            while time.perf_counter() - t < 60:
                states = driver.execute_script("return [...document.querySelectorAll('video')].map(v => v.readyState)")
                if states and all(s >= 2 for s in states):
                    break
                time.sleep(0.05)
            return time.perf_counter() - t

        playing = loaded + wait_videos()
        t = time.perf_counter()
        while time.perf_counter() - t < 120 and not driver.execute_script("return complete"):
            time.sleep(0.05)
        all_loaded = playing + time.perf_counter() - t
        found = driver.execute_script(
            "return {rows: document.querySelectorAll('#transfers tbody tr').length,"
            " videos: document.querySelectorAll('video').length, elements: document.getElementsByTagName('*').length}")
        t0 = time.perf_counter()  # sort every row by a metric
        driver.execute_script("document.querySelector('th[data-key=motion_fidelity]').click()")
        sort_s = time.perf_counter() - t0
        heap = driver.execute_script("return performance.memory ? performance.memory.usedJSHeapSize : null")
        return {"load_s": loaded, "first_page_playing_s": playing, "all_loaded_s": all_loaded, "sort_s": sort_s, "js_heap_mb": (heap or 0) / 2**20,
                **found}
    finally:
        driver.quit()


PEAK = r"""
import os, sys, time
sys.path.insert(0, sys.argv[2])
from mtcore.eval.report import write_report
t = time.perf_counter()
write_report(sys.argv[1])
# VmHWM, not ru_maxrss: the latter keeps the parent's RSS at fork time across exec
hwm = [int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(f"{time.perf_counter() - t:.1f} {hwm:.0f}")
"""


def synthetic(tmp: Path, refs: int, targets: int) -> tuple[int, Path]:
    """(transfers, OUT) of a synthetic run of refs x targets under `tmp` (`build`)."""
    out, media = tmp / f"out-{refs}", tmp / f"media-{refs}"
    media.mkdir(parents=True)
    return build(out, media, refs, targets), out


def memory(code: Path | None) -> int:
    """`mt report`'s peak RSS (a fresh process each) at 20,000 and 100,000 transfers, then at 1,000,000 (the
    100,000 rows' catalog copied 10 times with distinct keys, the store shared: those have no video). With
    --code, an older checkout's report on the same OUTs, side by side."""
    from benchmarks.bench_evaluate import scaled

    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-report-"))
    try:
        outs = {}
        for refs, targets in ((40, 500), (200, 500)):
            n, outs[n] = synthetic(tmp, refs, targets)
            write_report(outs[n])  # the media previews, made once for all that follows
        big = scaled(outs[100_000], 10, tmp / "out-scaled")
        (big / "store").symlink_to(outs[100_000] / "store")
        outs[1_000_000] = big
        for n, out in outs.items():
            for label, checkout in [("this checkout", REPO)] + ([("--code", code)] if code else []):
                done = subprocess.run([sys.executable, "-c", PEAK, str(out), str(checkout)], capture_output=True,
                                      text=True, cwd=checkout)
                if done.returncode != 0:
                    print(f"{n:>9,} transfers, {label}: failed: {done.stderr.strip().splitlines()[-1][:200]}", flush=True)
                    continue
                seconds, peak = done.stdout.split()
                print(f"{n:>9,} transfers, {label}: mt report {seconds} s, peak RSS {peak} MB", flush=True)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(repeat: int) -> int:
    """2,000 against 100,000 transfers, alternating loads; medians and the ratio."""
    import statistics

    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-report-"))
    try:
        pages = {}
        for refs, targets in ((40, 50), (200, 500)):
            n, out = synthetic(tmp, refs, targets)
            t0 = time.perf_counter()
            pages[n] = write_report(out)
            print(f"{n} transfers: mt report {time.perf_counter() - t0:.1f} s, "
                  f"index.html {pages[n].stat().st_size / 2**20:.3f} MiB", flush=True)
        seen: dict[int, list[dict]] = {n: [] for n in pages}
        for i in range(repeat):
            for n, page in pages.items():
                seen[n].append(browse(page, tmp / f"profile-{n}-{i}"))
        median = {n: {k: statistics.median(r[k] for r in runs) for k in ("load_s", "first_page_playing_s", "all_loaded_s")}
                  for n, runs in seen.items()}
        for n, m in median.items():
            runs = ", ".join("%.2f" % r["first_page_playing_s"] for r in seen[n])
            print(f"{n:>7} transfers, median of {repeat}: load {m['load_s']:.2f} s, first page playing "
                  f"{m['first_page_playing_s']:.2f} s (runs: {runs}), all loaded {m['all_loaded_s']:.2f} s")
        small, large = sorted(median)
        print(f"ratio_first_page_playing={median[large]['first_page_playing_s'] / median[small]['first_page_playing_s']:.2f} "
              f"({large} against {small} transfers)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--references", type=int, default=40)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--compare", action="store_true", help="2,000 against 100,000 transfers, side by side")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="peak RSS of mt report at 2 x 10^4, 10^5 and 10^6 transfers")
    ap.add_argument("--code", type=Path, help="with --memory: an older checkout, side by side")
    args = ap.parse_args()
    if args.memory:
        return memory(args.code)
    if args.compare:
        return compare(args.repeat)
    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-report-"))
    try:
        out, media = tmp / "out", tmp / "media"
        media.mkdir(parents=True)
        t0 = time.perf_counter()
        n = build(out, media, args.references, args.targets)
        print(f"synthetic OUT: {n} transfers in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        page = write_report(out)
        write_s = time.perf_counter() - t0
        media_mb = sum(p.stat().st_size for p in (out / "report").rglob("*") if p.is_file()) / 2**20
        data = out / "report" / "data" / "items.js"
        data_mb = data.stat().st_size / 2**20 if data.exists() else 0.0
        print(f"mt report: {write_s:.1f} s; index.html {page.stat().st_size / 2**20:.3f} MiB; data/items.js "
              f"{data_mb:.2f} MiB; report folder {media_mb:.1f} MiB")
        t0 = time.perf_counter()
        write_report(out)
        print(f"mt report again (media already converted): {time.perf_counter() - t0:.1f} s")
        seen = browse(page, tmp / "profile")
        print("chromium: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in seen.items()))
        print(f"transfers={n} report_s={write_s:.1f} page_mib={page.stat().st_size / 2**20:.3f} "
              f"load_s={seen['load_s']:.2f} first_page_playing_s={seen['first_page_playing_s']:.2f} "
              f"all_loaded_s={seen['all_loaded_s']:.2f} videos_in_page={seen['videos']}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
