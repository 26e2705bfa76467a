"""Cache keys are pure functions of content: stable, and changed by every input that changes an artifact."""

from __future__ import annotations

import hashlib
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
