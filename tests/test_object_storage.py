"""A whole run with its manifest, media and OUT in object storage (a real S3 server on loopback: moto), through
the real Prefect flow and a real local Ray: every artifact lands in the bucket, keys equal a local run's, a
re-run computes nothing, the model itself can be in the bucket (rows name the identity of the same folder on
disk), and `mt compact`, `mt evaluate`, `mt report` and `mt sheet` work on the s3:// OUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtcore.data.catalog import read_table
from mtcore.io.storage import Storage
from tests.conftest import S3_SECRET, cli_env, upload_folder, write_manifest

MT = str(Path(sys.executable).with_name("mt"))


@pytest.fixture(scope="module")
def s3_run(prefect_harness, s3_server, media, tiny_model_dir, tmp_path_factory):
    """The same 2 x 2 manifest run twice from object storage, and once locally."""
    import uuid

    from flows.bulk import bulk_run
    from mtcore.io.storage import filesystem

    bucket = f"mt-run-{uuid.uuid4().hex[:8]}"
    filesystem(f"s3://{bucket}")[0].mkdir(bucket)
    folder, local_folder = tmp_path_factory.mktemp("s3-manifest"), tmp_path_factory.mktemp("local-manifest")
    for name in ("right.mp4", "left.mp4", "cat.png", "dog.png"):
        (folder / name).write_bytes((media / name).read_bytes())
        (local_folder / name).write_bytes((media / name).read_bytes())
    # the model too is in the bucket (fetched into a cache of this machine), the local run's on disk
    upload_folder(tiny_model_dir, f"s3://{bucket}/models/tiny")
    cache = tmp_path_factory.mktemp("model-cache")
    saved, os.environ["MT_MODEL_CACHE"] = os.environ.get("MT_MODEL_CACHE"), str(cache)  # the driver's and Ray's
    # relative media paths: they resolve against the manifest's own location, in the bucket
    pairs = {"right": "right.mp4", "left": "left.mp4"}, {"cat": "cat.png", "dog": "dog.png"}
    write_manifest(folder, *pairs, model=f"s3://{bucket}/models/tiny", allow_outside=False)
    write_manifest(local_folder, *pairs, model=str(tiny_model_dir), allow_outside=False)
    upload_folder(folder, f"s3://{bucket}/in")
    out = f"s3://{bucket}/out"
    try:
        first = bulk_run(f"s3://{bucket}/in/manifest.yaml", out=out)
        second = bulk_run(f"s3://{bucket}/in/manifest.yaml", out=out)
    finally:
        if saved is None:
            os.environ.pop("MT_MODEL_CACHE")
        else:
            os.environ["MT_MODEL_CACHE"] = saved
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] != []  # fetched into the cache
    local_out = local_folder / "local-out"
    local = bulk_run(str(local_folder / "manifest.yaml"), out=str(local_out))
    return bucket, out, first, second, local, local_out


def test_run_from_object_storage_lands_every_artifact_in_the_bucket(s3_run):
    bucket, out, first, second, _, _ = s3_run
    assert (first.inversions_computed, first.transfers_computed, first.failed) == (2, 4, 0)
    assert first.out == out and first.catalogs == f"{out}/catalog"
    store = Storage(out)
    emb, tr = read_table(out, "embeddings"), read_table(out, "transfers")
    assert set(emb.status) == {"ok"} and set(tr.status) == {"ok"}
    assert set(store.files("store/embeddings")) == set(emb.path)
    assert set(store.files("store/videos")) == set(tr.video_path)
    assert emb.reference_path.str.startswith(f"s3://{bucket}/in/").all()
    # side files are gone: the probe, the model-load counters, the claims
    assert store.files(".probe") == [] and store.files(".loads") == [] and store.files("claims") == []
    assert first.workers[0].model_loads == 1


def test_rerun_from_object_storage_computes_nothing(s3_run):
    _, out, _, second, _, _ = s3_run
    assert (second.inversions_computed, second.transfers_computed, second.failed) == (0, 0, 0)
    assert (second.inversions_cached, second.transfers_cached) == (2, 4) and second.workers == []
    assert read_table(out, "transfers").transfer_key.is_unique


def test_keys_equal_a_local_run_of_the_same_media(s3_run):
    """Keys are content hashes: the bucket's copy of a file keys like the local file, and the bucket's copy of
    the model has the identity of the folder it was uploaded from."""
    _, out, _, _, local, local_out = s3_run
    assert local.failed == 0
    for table, key in (("embeddings", "embedding_key"), ("transfers", "transfer_key")):
        assert set(read_table(out, table)[key]) == set(read_table(local_out, table)[key])
    assert set(read_table(out, "embeddings").model_id) == set(read_table(local_out, "embeddings").model_id)


def test_cli_commands_work_on_an_s3_out(s3_run, prefect_api, tmp_path):
    bucket, out, _, _, _, _ = s3_run
    env = cli_env(tmp_path, prefect_api)

    def mt(*args):
        done = subprocess.run([MT, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert S3_SECRET not in done.stdout + done.stderr
        return done.stdout

    parts = len(Storage(out).files("catalog/transfers"))
    assert f"transfers: {parts} part file(s) -> 1 " in mt("compact", out)
    assert len(read_table(out, "transfers")) == 4 and len(Storage(out).files("catalog/transfers")) == 1
    result = json.loads(mt("evaluate", out, "--json"))
    assert result["filled"]["measured"] == 0  # every video was measured by the run itself
    assert sum(g["count"] for g in result["groups"]) == 4
    assert f"{out}/report/index.html" in mt("report", out)
    store = Storage(out)
    page = store.read_bytes("report/index.html").decode()
    assert "../store/videos/" in page
    assert len(store.files("report/media")) == 4  # 2 references and 2 targets as the model saw them
    mt("sheet", "--out", out, "--png", f"{out}/sheet.png", "--manifest", f"s3://{bucket}/in/manifest.yaml")
    assert store.read_bytes("sheet.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.glob("*.png")) == []  # nothing written locally
    for table in ("embeddings", "transfers", "runs", "metrics"):
        assert S3_SECRET not in read_table(out, table).to_csv()


def test_invert_transfer_and_metrics_read_and_write_urls(s3_server, bucket, media, tmp_path):
    """`mt invert`, `mt transfer` and `mt metrics` on s3:// paths only: nothing is written locally, and a
    missing input is named by its URL in one line."""
    from mtcore.io.videoio import read_frames

    store = Storage(f"s3://{bucket}")
    for name in ("right.mp4", "cat.png", "dog.png"):
        store.put_file(f"in/{name}", media / name)
    env = cli_env(tmp_path)

    def mt(*args, ok=True):
        done = subprocess.run([MT, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert (done.returncode == 0) == ok, done.stderr[-2000:]
        return done

    base = f"s3://{bucket}"
    mt("invert", "--reference", f"{base}/in/right.mp4", "--out", f"{base}/emb/right.safetensors", "--steps", "2")
    assert store.exists("emb/right.safetensors")
    mt("transfer", "--embedding", f"{base}/emb/right.safetensors", "--target", f"{base}/in/cat.png",
       "--target", f"{base}/in/dog.png", "--out", f"{base}/videos", "--steps", "2")
    with store.reading("videos/cat.mp4") as path:
        assert read_frames(path).shape[0] == 8  # the built-in model's frame count
    assert store.exists("videos/dog.mp4")
    measured = json.loads(mt("metrics", "--reference", f"{base}/in/right.mp4", "--output", f"{base}/videos/cat.mp4",
                             "--target", f"{base}/in/cat.png").stdout)
    assert -1.0 <= measured["motion_fidelity"] <= 1.0 and measured["psnr_first"] > 0
    assert list(tmp_path.glob("**/*.mp4")) == [] and list(tmp_path.glob("**/*.safetensors")) == []
    missing = mt("transfer", "--embedding", f"{base}/emb/right.safetensors", "--target", f"{base}/in/owl.png",
                 "--out", f"{base}/videos", ok=False)
    assert missing.returncode == 2 and f"{base}/in/owl.png: file not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
