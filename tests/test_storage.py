"""The storage layer on a local folder and on a real S3 server (moto, loopback): atomic writes, conditional
creates, claims, catalogs, and outside readers (pandas with s3fs, DuckDB with the registered filesystem)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import threading
import time

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mtcore.data.catalog import append_rows, compact, ok_keys, part_files, read_table
from mtcore.io.locations import inside, join, normalize, parent, resolve
from mtcore.io.storage import Storage, local_copy, read_input, sha256_input, storage
from tasks.claims import Claims

KEY = "ab" + "0" * 62


def test_locations_are_plain_text_rules():
    assert normalize("s3://bkt/a/b/") == "s3://bkt/a/b"
    assert normalize("file:///tmp/x/../y") == "/tmp/y"
    assert join("s3://bkt/out", "store/videos") == "s3://bkt/out/store/videos"
    assert parent("s3://bkt/in/m.yaml") == "s3://bkt/in"
    assert resolve("demo/a.mp4", "s3://bkt/in") == "s3://bkt/in/demo/a.mp4"
    assert resolve("../x.mp4", "s3://bkt/in") == "s3://bkt/x.mp4"
    assert resolve("s3://other/x.mp4", "/data") == "s3://other/x.mp4"
    assert inside("s3://bkt/in/demo/a.mp4", "s3://bkt/in") and not inside("s3://bkt/x.mp4", "s3://bkt/in")
    assert not inside("s3://bkt/inside.mp4", "s3://bkt/in")  # a prefix of the name is not a folder
    assert not inside("s3://bkt/in/a.mp4", "/bkt/in")


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return f"s3://{request.getfixturevalue('bucket')}/out"


def test_writes_are_whole_or_absent(root):
    store = Storage(root)
    assert store.write_bytes("a/b.bin", b"x" * 10) == join(normalize(root), "a/b.bin")
    assert store.read_bytes("a/b.bin") == b"x" * 10 and store.exists("a/b.bin")
    with pytest.raises(RuntimeError):
        with store.writing("a/c.mp4") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("encoder died")
    assert not store.exists("a/c.mp4")
    assert store.files("a") == ["a/b.bin"]  # no temporary left behind either
    with store.writing("a/c.mp4") as tmp:
        assert tmp.suffix == ".mp4"  # ffmpeg picks the container from it
        tmp.write_bytes(b"video")
    assert store.files("a") == ["a/b.bin", "a/c.mp4"]
    assert store.existing(["a/b.bin", "a/zz.bin"], prefix="a") == {"a/b.bin"}
    store.delete_tree("a")
    assert store.files("a") == []


def test_exclusive_create_has_one_winner_among_threads(root):
    store = Storage(root)
    wins = []

    def contend(i):
        if store.create_exclusive("claims/k", str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.read_bytes("claims/k") == str(wins[0]).encode()


def test_conditional_replace_and_delete_on_s3(bucket):
    store = Storage(f"s3://{bucket}/out")
    first = store.create_exclusive("c", b"1")
    assert first and store.create_exclusive("c", b"2") is None
    second = store.replace_if("c", b"3", first)
    assert second and second != first
    assert store.replace_if("c", b"4", first) is None  # someone else's change since: refused
    assert not store.delete_if("c", first) and store.read_bytes("c") == b"3"
    assert store.delete_if("c", second) and not store.exists("c")


def test_inputs_read_by_url_hash_like_local_files(bucket, tmp_path):
    local = tmp_path / "ref.mp4"
    local.write_bytes(b"some video bytes" * 1000)
    url = Storage(f"s3://{bucket}/in").put_file("ref.mp4", local)
    assert sha256_input(url) == sha256_input(local)  # keys are content hashes: same bytes, same key
    assert read_input(url) == local.read_bytes()
    with local_copy(url) as path:
        copy = path
        assert path.read_bytes() == local.read_bytes()
    assert not copy.exists()  # the scratch copy is gone once read
    with pytest.raises(Exception, match="file not found"):
        with local_copy(f"s3://{bucket}/in/missing.mp4"):
            pass


def test_claims_on_object_storage_one_owner_and_stale_claims_broken_once(bucket):
    out = f"s3://{bucket}/out"
    with Claims(out, "run-a") as a, Claims(out, "run-b") as b:
        assert a.claim(KEY) and not b.claim(KEY)
        assert b.holder(KEY)["run_id"] == "run-a"
        a.release([KEY])
        assert b.claim(KEY) and a.holder(KEY)["run_id"] == "run-b"
    # a claim of an owner on another host that stopped refreshing it: stale after the TTL
    store = storage(out)
    dead = json.dumps({"host": "gone-host", "pid": 1, "run_id": "dead"}).encode()
    key2 = "cd" + "0" * 62
    store.write_bytes(Claims.rel(key2), dead)
    fresh = Claims(out, "run-c", ttl=3600)
    assert not fresh.claim(key2)  # not stale yet
    fresh.close()
    late = Claims(out, "run-late", ttl=0.5)
    try:
        time.sleep(1.6)  # LastModified has 1-second resolution: let the claim age past the TTL
        assert late.claim(key2) and json.loads(store.read_bytes(Claims.rel(key2)))["run_id"] == "run-late"
    finally:
        late.close()
    # a claim whose owner is a process of this host that has exited is stale at once; of the runs that
    # find it together, the If-Match on its ETag lets exactly one replace it
    ended = subprocess.Popen(["true"])
    ended.wait()
    key3 = "ef" + "0" * 62
    store.write_bytes(Claims.rel(key3), json.dumps({"host": socket.gethostname(), "pid": ended.pid,
                                                    "run_id": "dead"}).encode())
    contenders = [Claims(out, f"run-{i}") for i in range(6)]
    try:
        wins = []
        threads = [threading.Thread(target=lambda c=c: c.claim(key3) and wins.append(c.run_id)) for c in contenders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert json.loads(store.read_bytes(Claims.rel(key3)))["run_id"] == wins[0]
    finally:
        for c in contenders:
            c.close()
    assert storage(out).files("claims") == []  # every claim released


def _row(key: str, status: str = "ok") -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {"transfer_key": key, "embedding_key": KEY, "reference_id": "r", "target_id": "t", "target_sha256": "0" * 64,
            "seed": 0, "model_id": "local:x", "video_path": None if status != "ok" else f"store/videos/{key[:2]}/{key}.mp4",
            "status": status, "error": None if status == "ok" else "boom", "seconds": 1.0, "worker": "w",
            "created_at": now}


def test_catalog_on_s3_appends_compacts_and_reads_in_place(bucket, s3_server):
    out = f"s3://{bucket}/out"
    keys = [f"{i:02x}" + "1" * 62 for i in range(5)]
    for key in keys[:4]:
        append_rows(out, "transfers", [_row(key)])
    append_rows(out, "transfers", [_row(keys[4], "failed")])
    assert len(part_files(out, "transfers")) == 5 and all(str(p).startswith(out) for p in part_files(out, "transfers"))
    assert ok_keys(out, "transfers") == set(keys[:4])
    assert compact(out, "transfers") == (5, 1, 5)
    assert len(read_table(out, "transfers")) == 5 and not storage(out).exists("catalog/transfers/.compact.lock")
    # outside readers, with no project code: pandas through s3fs, DuckDB through the registered filesystem
    options = {"client_kwargs": {"endpoint_url": s3_server["AWS_ENDPOINT_URL"]}}
    assert len(pd.read_parquet(f"{out}/catalog/transfers", storage_options=options)) == 5
    import s3fs

    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["AWS_ENDPOINT_URL"]}))
    n = con.sql(f"SELECT count(*) FROM read_parquet('{out}/catalog/transfers/*.parquet') WHERE status = 'ok'").fetchall()
    assert n == [(4,)]


def test_a_manifest_in_a_bucket_resolves_media_there_and_keeps_allow_outside(bucket, tmp_path):
    from mtcore.data.manifest import ManifestError, load_manifest

    store = Storage(f"s3://{bucket}/in")

    def manifest(name: str, **extra) -> str:
        doc = {"references": [{"id": "r", "path": "clips/r.mp4"}], "targets": [{"id": "t", "path": "t.png"}], **extra}
        return store.write_bytes(name, json.dumps(doc).encode())  # JSON is YAML

    loaded = load_manifest(manifest("ok.yaml"))
    assert loaded.path == f"s3://{bucket}/in/ok.yaml" and loaded.name == "ok" and loaded.file_name == "ok.yaml"
    assert loaded.references[0].path == f"s3://{bucket}/in/clips/r.mp4"
    escaping = manifest("out.yaml", targets=[{"id": "a", "path": "../a.png"}, {"id": "b", "path": "s3://other/b.png"},
                                             {"id": "c", "path": "/etc/c.png"}])
    with pytest.raises(ManifestError) as caught:
        load_manifest(escaping)
    assert [p.split(": ")[1] for p in caught.value.problems] == ["targets[0].path", "targets[1].path", "targets[2].path"]
    assert all("outside the manifest folder" in p for p in caught.value.problems)
    allowed = load_manifest(manifest("allowed.yaml", allow_outside=True,
                                     targets=[{"id": "b", "path": "s3://other/b.png"}, {"id": "c", "path": "/etc/c.png"}]))
    assert [t.path for t in allowed.targets] == ["s3://other/b.png", Path("/etc/c.png")]
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(f"s3://{bucket}/in/none.yaml")


def test_the_store_is_listed_per_folder(root):
    """Past FEW keys, which artifacts exist is read from listings of the store's folders (on S3 one LIST per
    1,000 names), in a bucket as on a local root; a missing one is told apart."""
    import hashlib

    import numpy as np

    from mtcore.data.catalog import store_relpath
    from tasks.plan import FEW, stored_mask

    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(FEW + 9)]
    store = Storage(root)
    for key in keys[1:]:
        store.write_bytes(store_relpath("transfers", key), b"mp4")
    store.write_bytes(store_relpath("transfers", keys[0]).replace(".mp4", ".txt"), b"not a video")
    here = stored_mask(root, "transfers", np.array(keys, "S64"))
    assert not here[0] and here[1:].all()
    assert f"{keys[1]}.mp4" in store.names(store_relpath("transfers", keys[1]).rsplit("/", 1)[0])
    assert store.names("store/none") == []
