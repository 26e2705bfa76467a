"""Models in a bucket (mtcore.io.modelcache) on the local S3 server: fetched once per machine however many
workers ask at once, the identity of the same folder on disk, and a missing or partial model refused in one
line by `mt run` before anything runs. (A whole run with its model in a bucket: tests/test_object_storage.py;
on a second host with no copy of the model: tests/test_two_hosts.py.)"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mtcore.errors import InputError
from mtcore.io.modelcache import fetch_model
from mtcore.io.storage import Storage
from mtcore.method.identity import model_identity
from tests.conftest import cli_env, upload_folder, write_manifest

MT = str(Path(sys.executable).with_name("mt"))


def test_workers_starting_at_once_download_the_model_once(s3_server, bucket, tiny_model_dir, tmp_path, monkeypatch,
                                                          caplog):
    monkeypatch.setenv("MT_MODEL_CACHE", str(tmp_path / "cache"))
    url = f"s3://{bucket}/models/tiny"
    upload_folder(tiny_model_dir, url)
    folders, errors = [], []
    start = threading.Barrier(4)

    def worker():
        try:
            start.wait()
            folders.append(fetch_model(url))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="mtcore.io.modelcache"):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and len(set(folders)) == 1
    assert sum("downloaded" in r.getMessage() for r in caplog.records) == 1  # one download, three waited
    assert model_identity(url) == model_identity(tiny_model_dir)  # the same folder's identity
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".partial-" in p.name] == []
    # another object in the bucket: another cache folder (the listing's names, sizes and ETags key it)
    Storage(url).write_bytes("unet/extra.txt", b"changed")
    assert fetch_model(url) != folders[0]


def test_missing_and_partial_models_are_refused(s3_server, bucket, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MT_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="no model there"):
        fetch_model(f"s3://{bucket}/models/none")
    url = f"s3://{bucket}/models/partial"
    upload_folder(tiny_model_dir, url)
    Storage(url).delete("unet/diffusion_pytorch_model.safetensors")
    with pytest.raises(InputError, match=r"incomplete model: missing unet/ \(no weights file\)"):
        fetch_model(url)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing downloaded


@pytest.mark.parametrize("kind", ["missing", "partial"])
def test_mt_run_refuses_a_missing_or_partial_model_in_one_line(kind, s3_server, bucket, tiny_model_dir, media,
                                                                tmp_path, prefect_api):
    url = f"s3://{bucket}/models/{kind}"
    if kind == "partial":
        upload_folder(tiny_model_dir, url)
        Storage(url).delete("vae/diffusion_pytorch_model.safetensors")
    manifest = write_manifest(tmp_path, {"right": media / "right.mp4"}, {"cat": media / "cat.png"}, model=url)
    env = cli_env(tmp_path / "home", prefect_api, MT_MODEL_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([MT, "run", str(manifest), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: ")
    assert ("no model there" if kind == "missing" else "missing vae/ (no weights file)") in lines[0]
    assert not (tmp_path / "out" / "catalog").exists()  # nothing ran
