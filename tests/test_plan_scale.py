"""Planning many transfers: columnar sets, keys in bulk, the store listed once per folder. In-process
(no Ray, no Prefect); benchmarks/bench_plan.py measures the same code at a million transfers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtcore.data.catalog import append_rows, store_path
from mtcore.data.keys import transfer_key
from mtcore.data.manifest import load_manifest
from tasks.plan import FEW, plan_run
from tasks.rows import embedding_row, transfer_row
from tests.conftest import write_manifest


def many(tmp_path: Path, refs: int = 3, targets: int = 15, **extra) -> Path:
    """A cross manifest of tiny distinct media files (planning hashes them; nothing decodes them)."""
    media = tmp_path / "media"
    media.mkdir()
    for i in range(refs):
        (media / f"r{i}.mp4").write_bytes(f"reference {i}".encode())
    for j in range(targets):
        (media / f"t{j}.png").write_bytes(f"target {j}".encode())
    return write_manifest(tmp_path, {f"r{i}": media / f"r{i}.mp4" for i in range(refs)},
                          {f"t{j}": media / f"t{j}.png" for j in range(targets)}, **extra)


def finish(out: Path, plan, skip_rows: set[str] = frozenset()) -> None:
    """Every planned artifact in the store, with its ok row (but for the keys in `skip_rows`)."""
    for job in plan.inversions_todo:
        store_path(out, "embeddings", job.key).parent.mkdir(parents=True, exist_ok=True)
        store_path(out, "embeddings", job.key).write_bytes(b"emb")
    for job in plan.transfers_todo:
        store_path(out, "transfers", job.key).parent.mkdir(parents=True, exist_ok=True)
        store_path(out, "transfers", job.key).write_bytes(b"mp4")
    append_rows(out, "embeddings", [embedding_row(j, 14, None, 1.0, "w") for j in plan.inversions_todo])
    append_rows(out, "transfers", [transfer_row(j, None, 1.0, "w") for j in plan.transfers_todo if j.key not in skip_rows])


def test_planned_transfers_are_the_keys_transfer_key_gives_one_by_one(tmp_path):
    manifest = load_manifest(many(tmp_path, seeds=[0, 5]))
    plan = plan_run(manifest, tmp_path / "out")
    assert len(plan.transfers_todo) == 3 * 15 * 2 and len(plan.transfers_todo.parts) == 3
    by_id = {t.id: t for t in manifest.targets}
    from mtcore.io.fileio import sha256_file

    for job in plan.transfers_todo:
        want = transfer_key(job.embedding_key, sha256_file(by_id[job.target_id].path), manifest.transfer, job.seed)
        assert job.key == want and job.video_path == f"store/videos/{want[:2]}/{want}.mp4"
    assert len({job.key for job in plan.transfers_todo}) == 90


def test_a_cached_rerun_lists_the_store_and_still_finds_a_deleted_artifact(tmp_path, monkeypatch):
    """Past FEW keys, the store is listed per folder, not asked about each file; a video deleted since its
    row was written is made again, and one stored without its row is marked for recording, not remaking."""
    manifest = load_manifest(many(tmp_path))
    out = tmp_path / "out"
    first = plan_run(manifest, out)
    assert len(first.transfers_todo) == 45 > FEW
    jobs = list(first.transfers_todo)
    deleted, orphan = jobs[7], jobs[30]
    finish(out, first, skip_rows={orphan.key})
    store_path(out, "transfers", deleted.key).unlink()
    store_path(out, "embeddings", first.inversions_todo[1].key).unlink()

    from mtcore.io import storage as storage_module

    asked = []
    real_exists = storage_module.Storage.exists
    monkeypatch.setattr(storage_module.Storage, "exists", lambda self, rel: asked.append(rel) or real_exists(self, rel))
    again = plan_run(manifest, out)
    assert not [rel for rel in asked if rel.startswith("store/videos/")], "a video was asked about one by one"
    assert sorted(j.key for j in again.transfers_todo) == sorted([deleted.key, orphan.key])
    assert len(again.transfers_cached) == 43
    stored = set().union(*(part.stored_keys() for part in again.transfers_todo.parts))
    assert stored == {orphan.key}  # in the store without its row: recorded by the stage, not remade
    assert [j.key for j in again.inversions_todo] == [first.inversions_todo[1].key]


def test_two_target_ids_with_identical_content_plan_one_video(tmp_path):
    path = many(tmp_path, refs=2, targets=3)
    (tmp_path / "media" / "t2.png").write_bytes(b"target 0")  # t2 now holds t0's bytes
    plan = plan_run(load_manifest(path), tmp_path / "out")
    keys = plan.transfers_todo.keys()
    assert len(keys) == 4 and len(np.unique(keys)) == 4  # 2 references x 2 distinct targets


def test_evaluate_plans_missing_metrics_from_the_catalogs_in_chunks(tmp_path):
    """`mt evaluate`'s plan (tasks.plan_metrics): every ok transfer without a metrics row of the version,
    a video gone from the store counted apart, and TransferJobs made a chunk at a time."""
    from mtcore import METRICS_VERSION
    from mtcore.data.catalog import read_table, store_path
    from tasks.plan_metrics import plan_missing_metrics
    from tests.synthetic import make_run

    _, out = make_run(tmp_path, 3, 10)
    assert plan_missing_metrics(str(out), METRICS_VERSION).plans == []  # every video measured
    keys = sorted(read_table(out, "transfers").transfer_key)
    store_path(out, "transfers", keys[0]).unlink()
    todo = plan_missing_metrics(str(out), "a-new-version")
    assert todo.missing_files == 1 and todo.unmeasurable == 0 and len(todo.plans) == 1
    jobs = todo.plans[0].metrics_todo
    assert len(jobs) == 29 and [len(c) for c in jobs.chunks(8)] == [8, 8, 8, 5]
    assert sorted(j.key for j in jobs) == keys[1:]
    job = next(iter(jobs))
    assert job.embedding.model.model_id == read_table(out, "transfers").model_id[0] and job.video_path.endswith(".mp4")
