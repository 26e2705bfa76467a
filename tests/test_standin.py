"""The stand-in model of the pipeline benchmarks (benchmarks/standin.py) is served by the real pipeline: the
real flow, the real ModelWorker in a real local Ray (installed in it by Ray's worker_process_setup_hook), the
real store and catalogs, the real metrics on its mp4s. So benchmarks/bench_execute.py measures the pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mtcore.data.catalog import read_table, store_path
from tests.conftest import write_manifest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_the_stand_in_runs_every_stage_of_the_real_flow(prefect_harness, media, tmp_path):
    import ray

    import standin
    from flows.bulk import bulk_run

    targets = {}
    for j in range(12):
        path = tmp_path / f"t{j}.png"
        Image.fromarray(np.full((16, 16, 3), 10 * j, np.uint8)).save(path)
        targets[f"t{j}"] = path
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4", "left": media / "left.mp4"}, targets)
    made = tmp_path / "made.log"
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=1,
             runtime_env=standin.ray_runtime_env(str(made)))
    try:
        summary = bulk_run(str(manifest), out=str(tmp_path / "out"))  # the built-in model, in the real ModelWorker
    finally:
        ray.shutdown()
    assert (summary.inversions_computed, summary.transfers_computed, summary.failed) == (2, 24, 0)
    assert summary.metrics_computed == 24  # the real metrics, on the stand-in's mp4s
    rows = read_table(tmp_path / "out", "transfers")
    videos = {store_path(tmp_path / "out", "transfers", k).read_bytes() for k in rows.transfer_key}
    assert videos == {standin.video_bytes()}  # every video is the stand-in's one real mp4, made by no model
    assert sorted(made.read_text().split()) == sorted(rows.transfer_key)  # each made once, by a worker
    emb = read_table(tmp_path / "out", "embeddings")
    assert set(emb.status) == {"ok"} and len(emb) == 2
