"""Motion embedding files: exact round-trip, metadata, refusal of another model or shape."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from mtcore.method.embedding import MotionEmbedding, load_embedding, save_embedding
from mtcore.errors import EmbeddingMismatch, InputError


def _emb():
    return MotionEmbedding(
        tokens=torch.randn(9, 5, 32, generator=torch.Generator().manual_seed(0)),
        model_id="local:abc",
        reference_sha256="f" * 64,
        inversion_config={"steps": 10, "tokens_per_frame": 5},
    )


def test_round_trip_is_exact(tmp_path):
    e = _emb()
    p = save_embedding(e, tmp_path / "e.safetensors")
    back = load_embedding(p, model_id="local:abc", num_frames=8, token_dim=32)
    assert torch.equal(back.tokens, e.tokens)
    assert (back.model_id, back.reference_sha256, back.inversion_config) == (e.model_id, e.reference_sha256, e.inversion_config)
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    assert meta["num_frames"] == "8" and meta["tokens_per_frame"] == "5" and meta["token_dim"] == "32"
    assert json.loads(meta["inversion_config"])["steps"] == 10
    assert meta["code_version"]
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"model_id": "local:other"}, "made for model local:abc"),
        ({"num_frames": 14}, "F=8"),
        ({"token_dim": 1024}, "D=32"),
    ],
)
def test_mismatch_is_refused_with_reason(tmp_path, kwargs, words):
    p = save_embedding(_emb(), tmp_path / "e.safetensors")
    with pytest.raises(EmbeddingMismatch) as info:
        load_embedding(p, **kwargs)
    assert words in str(info.value) and str(p) in str(info.value)


def test_not_an_embedding_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(InputError, match="not a safetensors file"):
        load_embedding(bad)
    with pytest.raises(InputError, match="file not found"):
        load_embedding(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a motion embedding"):
        load_embedding(tmp_path / "other.safetensors")


def test_no_pickle_in_the_project():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = [
        str(p) for d in ("mtcore", "tasks", "flows") for p in (root / d).rglob("*.py")
        if "import pickle" in p.read_text() or "torch.load(" in p.read_text()
    ]
    assert offenders == []
