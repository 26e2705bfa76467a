"""Cache keys are pure functions of content: stable, and changed by every input that changes an artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path
import json

import pytest

from mtcore import CODE_VERSION
from mtcore.method.config import InversionConfig, TransferConfig, config_to_dict
from mtcore.data.keys import embedding_key, transfer_key
from mtcore.io.fileio import sha256_file

REF = "a" * 64
TGT = "b" * 64
MODEL = "hub:stabilityai/stable-video-diffusion-img2vid@main"


def test_sha256_file_streams_large_files(tmp_path):
    data = bytes(range(256)) * 9000  # ~2.2 MiB: spans several 1 MiB chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_embedding_key_is_sha256_of_canonical_json():
    cfg = InversionConfig(steps=10)
    doc = {"kind": "embedding", "reference_sha256": REF, "model_id": MODEL,
           "inversion": config_to_dict(cfg), "code_version": CODE_VERSION}
    expected = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert embedding_key(REF, MODEL, cfg) == expected


def test_embedding_key_is_stable_and_sensitive_to_every_input():
    base = embedding_key(REF, MODEL, InversionConfig())
    assert base == embedding_key(REF, MODEL, InversionConfig())
    variants = [
        embedding_key("c" * 64, MODEL, InversionConfig()),
        embedding_key(REF, "local:" + "d" * 64, InversionConfig()),
        embedding_key(REF, MODEL, InversionConfig(steps=301)),
        embedding_key(REF, MODEL, InversionConfig(seed=1)),
        embedding_key(REF, MODEL, InversionConfig(betas=(0.9, 0.99))),
        embedding_key(REF, MODEL, InversionConfig(), code_version="999"),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_transfer_key_is_stable_and_sensitive_to_every_input():
    emb = embedding_key(REF, MODEL, InversionConfig())
    base = transfer_key(emb, TGT, TransferConfig(), seed=0)
    assert base == transfer_key(emb, TGT, TransferConfig(), 0)
    assert len(base) == 64 and int(base, 16) >= 0
    variants = [
        transfer_key("e" * 64, TGT, TransferConfig(), 0),
        transfer_key(emb, "f" * 64, TransferConfig(), 0),
        transfer_key(emb, TGT, TransferConfig(steps=26), 0),
        transfer_key(emb, TGT, TransferConfig(), 1),
        transfer_key(emb, TGT, TransferConfig(), 0, code_version="999"),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_embedding_and_transfer_keys_never_collide_across_kinds():
    # Same inputs in both documents still differ by "kind".
    assert embedding_key(REF, MODEL, InversionConfig()) != transfer_key(REF, MODEL, TransferConfig(), 0)


def test_wrong_config_class_or_seed_type_is_refused():
    with pytest.raises(TypeError, match="InversionConfig"):
        embedding_key(REF, MODEL, TransferConfig())
    with pytest.raises(TypeError, match="TransferConfig"):
        transfer_key(REF, TGT, InversionConfig(), 0)
    with pytest.raises(TypeError, match="seed"):
        transfer_key(REF, TGT, TransferConfig(), True)


def test_transfer_keys_in_bulk_equal_transfer_key_one_by_one():
    from mtcore.data.keys import TransferKeys

    shas = [hashlib.sha256(b"a").hexdigest(), "unreadable:/data/tête \"quoted\"\\x.png", "", hashlib.sha256(b"b").hexdigest()]
    seeds = [0, 7, -3, 2**40]
    for config in (TransferConfig(), TransferConfig(steps=3, max_guidance_scale=1.5, height=64)):
        bulk = TransferKeys(shas, seeds, config)
        for emb in (embedding_key("0" * 64, "local:x", InversionConfig()), "unreadable:é"):
            got = bulk.keys(emb, [3, 0, 1, 2, 0])
            want = [transfer_key(emb, shas[t], config, seed) for t in (3, 0, 1, 2, 0) for seed in seeds]
            assert got == want
    with pytest.raises(TypeError):
        TransferKeys(shas, [True], TransferConfig())


def test_the_svd_demo_keys_are_unchanged_by_model_families(tmp_path):
    """The demo's embedding and transfer keys, pinned when the Wan family came: a family is named in the keys of
    other families only (model identity "wan-i2v:local:..."), never in SVD's, so cached SVD runs stay cached.
    A change of mtcore.CODE_VERSION or of the built-in model changes these on purpose: re-pin them then."""
    import hashlib

    from mtcore.data.manifest import load_manifest
    from tasks.plan import plan_run, planned_transfers

    demo = Path(__file__).parents[1] / "manifests" / "demo.yaml"
    plan = plan_run(load_manifest(demo), str(tmp_path))
    assert plan.models[0].model_id == "local:197852ea758ba1c06beff7b3d7b08a19c106a334793f1441ffd9c18bc4b2a62a"
    inversions = sorted(job.key for job in plan.inversions_todo)
    transfers = sorted(planned_transfers(plan).column("transfer_key").to_pylist())
    assert len(inversions) == 3 and len(transfers) == 9
    assert hashlib.sha256(repr(inversions).encode()).hexdigest() == \
        "9de10f7217272cda752c05083556565ddc9793ab483332a4b360a43456df0fd2"
    assert hashlib.sha256(repr(transfers).encode()).hexdigest() == \
        "77151c94c6c342b8868ca87def4a8ef8c2fec0dddfb21f6c52f7c288a0447ed7"
