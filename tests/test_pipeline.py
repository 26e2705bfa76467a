"""The bulk pipeline through the real Prefect flow and a real local Ray: counts, caching, catalogs."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from mtcore.data.catalog import read_table
from mtcore.io.videoio import probe_video
from tests.conftest import write_manifest


@pytest.fixture(scope="module")
def two_by_two(prefect_harness, media, tmp_path_factory, tiny_model_dir):
    from flows.bulk import bulk_run

    folder = tmp_path_factory.mktemp("run")
    manifest = write_manifest(
        folder, {"right": media / "right.mp4", "left": media / "left.mp4"},
        {"cat": media / "cat.png", "dog": media / "dog.png"}, model=str(tiny_model_dir),
    )
    out = folder / "out"
    first = bulk_run(str(manifest), out=str(out))
    tables_after_first = {t: read_table(out, t) for t in ("embeddings", "transfers")}
    second = bulk_run(str(manifest), out=str(out))
    return out, first, second, tables_after_first


def test_fresh_run_computes_every_item_once(two_by_two):
    out, first, _, _ = two_by_two
    assert (first.inversions_computed, first.inversions_cached) == (2, 0)
    assert (first.transfers_computed, first.transfers_cached) == (4, 0)
    assert first.failed == 0


def test_catalogs_hold_ok_rows_and_decodable_videos(two_by_two):
    out, first, _, tables = two_by_two
    emb, tr = tables["embeddings"], tables["transfers"]
    assert len(emb) == 2 and set(emb.status) == {"ok"}
    assert len(tr) == 4 and set(tr.status) == {"ok"}
    assert set(zip(tr.reference_id, tr.target_id)) == {("right", "cat"), ("right", "dog"), ("left", "cat"), ("left", "dog")}
    assert emb.num_frames.tolist() == [8, 8] and emb.tokens_per_frame.tolist() == [2, 2]
    for rel in tr.video_path:
        info = probe_video(out / rel)
        assert (info.num_frames, info.width, info.height) == (8, 64, 64)
    for rel in emb.path:
        assert (out / rel).is_file()
    assert tr.embedding_key.isin(emb.embedding_key).all()
    # readable without project code
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/catalog/transfers/**/*.parquet') WHERE status = 'ok'").fetchall()
    assert n == [(4,)]
    assert len(pd.read_parquet(out / "catalog" / "embeddings")) == 2


def test_model_is_loaded_once_per_worker(two_by_two):
    _, first, _, tables = two_by_two
    assert len(first.workers) == 1
    (w,) = first.workers
    assert w.model_loads == 1 and w.items == 2 + 4
    assert set(tables["embeddings"].worker) == {w.worker} == set(tables["transfers"].worker)


def test_rerun_computes_nothing_and_adds_no_rows(two_by_two):
    out, _, second, tables = two_by_two
    assert (second.inversions_computed, second.transfers_computed, second.failed) == (0, 0, 0)
    assert (second.inversions_cached, second.transfers_cached) == (2, 4)
    assert second.workers == []  # nothing to do: Ray was not started
    for t in ("embeddings", "transfers"):
        now = read_table(out, t)
        assert len(now) == len(tables[t])
        assert now[{"embeddings": "embedding_key", "transfers": "transfer_key"}[t]].is_unique
    runs = read_table(out, "runs")
    assert len(runs) == 2 and runs.run_id.is_unique
    assert runs.transfers_computed.tolist() == [4, 0] and runs.transfers_cached.tolist() == [0, 4]


def test_deleted_artifact_is_made_again(prefect_harness, two_by_two, tmp_path):
    """The store is checked, not only the catalog: a lost video is recomputed, the rest stay cached."""
    from flows.bulk import bulk_run

    out, _, _, tables = two_by_two
    victim = out / tables["transfers"].video_path.iloc[0]
    victim.unlink()
    manifest = next(out.parent.glob("manifest.yaml"))
    third = bulk_run(str(manifest), out=str(out))
    assert (third.inversions_computed, third.transfers_computed, third.transfers_cached) == (0, 1, 3)
    assert probe_video(victim).num_frames == 8


def test_contact_sheet_of_a_run(two_by_two, tmp_path):
    import subprocess

    from PIL import Image

    from tests.test_cli_core import MT

    out, _, _, _ = two_by_two
    png = tmp_path / "sheet.png"
    manifest = next(out.parent.glob("manifest.yaml"))
    r = subprocess.run([MT, "sheet", "--out", str(out), "--manifest", str(manifest), "--png", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "right -> dog (seed 0)" in r.stdout and "left (reference)" in r.stdout
    with Image.open(png) as im:  # 2 references + 4 videos, 8 frames of 64 px each, 2-px gaps
        assert im.size == (8 * 64, 6 * (64 + 2))


def test_every_new_transfer_is_measured_and_joins_on_transfer_key(two_by_two):
    from mtcore.metrics import METRICS_VERSION

    out, first, second, tables = two_by_two
    metrics = read_table(out, "metrics")
    assert first.metrics_computed == 4 and second.metrics_computed == 0  # cached transfers keep their metrics
    assert len(metrics) == 4 and set(metrics.metrics_version) == {METRICS_VERSION}
    assert set(metrics.transfer_key) == set(tables["transfers"].transfer_key)
    assert metrics[["transfer_key", "metrics_version"]].drop_duplicates().shape[0] == 4
    assert metrics.motion_fidelity.between(-1, 1).all() and metrics.psnr_first.notna().all()
    joined = duckdb.sql(
        f"SELECT t.reference_id, t.target_id, m.motion_fidelity, m.psnr_first "
        f"FROM read_parquet('{out}/catalog/transfers/**/*.parquet') t "
        f"JOIN read_parquet('{out}/catalog/metrics/**/*.parquet') m USING (transfer_key) WHERE t.status = 'ok'"
    ).fetchall()
    assert len({(r, t) for r, t, _, _ in joined}) == 4


def test_a_new_metrics_version_plans_only_what_it_lacks(two_by_two):
    from mtcore.data.manifest import load_manifest
    from mtcore.metrics import METRICS_VERSION
    from tasks.plan import plan_run

    out, _, _, _ = two_by_two
    manifest = load_manifest(next(out.parent.glob("manifest.yaml")))
    assert len(plan_run(manifest, out, METRICS_VERSION).metrics_todo) == 0
    later = plan_run(manifest, out, METRICS_VERSION + "-next")
    assert len(later.metrics_todo) == 4 and len(later.transfers_todo) == 0


def test_two_missing_files_keep_their_own_keys_and_rows(media, tmp_path, tiny_model_dir):
    from mtcore.data.manifest import load_manifest
    from tasks.plan import plan_run

    manifest = write_manifest(tmp_path, {"gone": tmp_path / "gone.mp4", "lost": tmp_path / "lost.mp4"},
                              {"cat": media / "cat.png", "nowhere": tmp_path / "nowhere.png"}, model=str(tiny_model_dir))
    plan = plan_run(load_manifest(manifest), tmp_path / "out")
    failed = {job.reference_id: job.key for job, _ in plan.failed_inversions}
    assert set(failed) == {"gone", "lost"} and len(set(failed.values())) == 2
    transfers = list(plan.transfers_todo) + [job for job, _ in plan.failed_transfers]
    assert len({job.key for job in transfers}) == len(transfers) == 4  # every pair keeps its row
    again = plan_run(load_manifest(manifest), tmp_path / "out")
    assert {job.reference_id: job.key for job, _ in again.failed_inversions} == failed  # stable run to run


def test_cached_videos_missing_their_metrics_are_measured_by_the_next_run(two_by_two, tmp_path):
    import shutil

    from flows.bulk import bulk_run

    out, _, _, _ = two_by_two
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "catalog" / "metrics")  # as if measured by an older metrics version
    summary = bulk_run(str(next(out.parent.glob("manifest.yaml"))), out=str(copy))
    assert (summary.transfers_computed, summary.transfers_cached, summary.metrics_computed) == (0, 4, 4)
    metrics = read_table(copy, "metrics")  # (an earlier test of this module re-made one video: 5 rows, 4 keys)
    assert len(metrics) == 4 and set(metrics.transfer_key) == set(read_table(copy, "transfers").transfer_key)
