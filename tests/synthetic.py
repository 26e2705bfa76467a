"""A synthetic finished run for export tests and benchmarks: R references x T targets, every transfer `ok`
with metrics, in a real OUT (catalogs written with the catalog schemas, videos in the store).

The keys are the real plan's (tasks.plan.plan_run on a real manifest), so `mt export` finds them as it
finds a run's. Every video is one small real mp4 (hard links to it: 100,000 store entries cost no disk),
every target a real 16-px PNG; references are distinct small files (an export never decodes them).
Metrics are random (seeded): the gate and the histograms have something to work on.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ACTIONS = ("push left", "push right", "fall", "orbit")
LICENSES = ("cc-by-4.0", "cc0-1.0")


def write_manifest(folder: Path, references: int, targets: int, seeds: list[int] | None = None) -> Path:
    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(references):
        (media / f"r{i}.mp4").write_bytes(f"reference {i}".encode())
    rng = np.random.default_rng(0)
    for j in range(targets):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(media / f"t{j}.png")
    lines = ["name: synthetic", "dataset: {name: synthetic-motion, license: cc-by-4.0}", "pairs: cross",
             f"seeds: {list(seeds or [0])}", "references:"]
    lines += [f"  - {{id: r{i}, path: media/r{i}.mp4, labels: {{action: {ACTIONS[i % len(ACTIONS)]!r}}}}}"
              for i in range(references)]
    lines.append("targets:")
    lines += [f"  - {{id: t{j}, path: media/t{j}.png, labels: {{license: {LICENSES[j % 2]}, source: synthetic}}}}"
              for j in range(targets)]
    path = folder / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_run(folder: Path, references: int, targets: int, seeds: list[int] | None = None) -> tuple[Path, Path]:
    """(manifest, OUT) of a finished synthetic run."""
    from mtcore import METRICS_VERSION
    from mtcore.data.catalog import SCHEMAS, store_relpath
    from mtcore.data.manifest import load_manifest
    from mtcore.io.videoio import write_mp4
    from tasks.plan import plan_run
    from tasks.rows import embedding_row, transfer_row

    manifest_path = write_manifest(folder, references, targets, seeds)
    out = folder / "out"
    plan = plan_run(load_manifest(manifest_path), str(out), METRICS_VERSION)
    video = folder / "video.mp4"
    write_mp4(np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), video)
    rows = {"embeddings": [embedding_row(job, 8, None, 1.0, "synthetic") for job in plan.inversions_todo],
            "transfers": []}
    for part in plan.transfers_todo.parts:
        rows["transfers"] += [transfer_row(job, None, 1.0, "synthetic") for job in part.jobs()]
    rng = np.random.default_rng(2)
    n = len(rows["transfers"])
    now = dt.datetime.now(dt.timezone.utc)
    metrics = {"transfer_key": [r["transfer_key"] for r in rows["transfers"]], "metrics_version": [METRICS_VERSION] * n,
               "motion_fidelity": rng.uniform(-0.2, 1.0, n), "motion_fidelity_output_to_reference": rng.uniform(0, 1, n),
               "motion_fidelity_reference_to_output": rng.uniform(0, 1, n), "moving_tracks_output": rng.integers(0, 40, n),
               "moving_tracks_reference": rng.integers(0, 40, n), "psnr_first": rng.uniform(10, 40, n),
               "ssim_first": rng.uniform(0, 1, n), "clip_first": [None] * n, "clip_avg": [None] * n,
               "clip_note": ["synthetic"] * n, "warp_error": rng.uniform(0, 0.2, n), "frame_change": rng.uniform(0, 0.2, n),
               "tracker": ["synthetic"] * n, "seconds": [0.1] * n, "worker": ["synthetic"] * n, "created_at": [now] * n,
               "run_id": ["synthetic"] * n}
    tables = {"embeddings": pa.Table.from_pylist(rows["embeddings"], SCHEMAS["embeddings"]),
              "transfers": pa.Table.from_pylist(rows["transfers"], SCHEMAS["transfers"]),
              "metrics": pa.Table.from_pydict(metrics, SCHEMAS["metrics"])}
    for table, data in tables.items():
        (out / "catalog" / table).mkdir(parents=True, exist_ok=True)
        pq.write_table(data, out / "catalog" / table / "part-synthetic.parquet")
    for i, row in enumerate(rows["transfers"]):
        path = out / store_relpath("transfers", row["transfer_key"])
        path.parent.mkdir(parents=True, exist_ok=True)
        if i and i % 60_000 == 0:  # a file takes at most 65,000 links on ext4: a fresh copy to link to
            video = video.with_name(f"video-{i}.mp4")
            shutil.copyfile(folder / "video.mp4", video)
        os.link(video, path)
    return manifest_path, out


__all__ = ["make_run", "write_manifest"]
