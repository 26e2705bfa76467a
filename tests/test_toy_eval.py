"""A reduced held-out evaluation of the shipped toy model: motion-textual inversion must move the
target's sprite like the reference clearly better than the model's stock conditioning.

This can fail: a model that ignores cross-attention, or an inversion that does not find the motion,
gives MTI about the stock cosine (~0)."""

from __future__ import annotations

import pytest

from mtcore.method.config import InversionConfig, TransferConfig
from mtcore.method.identity import DEFAULT_MODEL
from mtcore.toy.evaluate import evaluate


@pytest.fixture(scope="module")
def toy_model():
    from mtcore.method.models import load_model

    m = load_model(DEFAULT_MODEL, device="cpu", dtype="fp32")
    if type(m.unet).__name__ != "ToyUNet":
        pytest.fail(f"the built-in model at {DEFAULT_MODEL} is not the trained toy model")
    return m


def test_mti_beats_stock_conditioning_on_held_out_pairs(toy_model):
    df, _ = evaluate(toy_model, n_pairs=5, seed=11, inversion=InversionConfig(steps=150),
                     transfer_cfg=TransferConfig(steps=12), methods=("mti", "stock"))
    mean = df.groupby("method").cosine.mean()
    assert set(df.motion) == {"translate", "orbit", "zigzag", "bounce", "pan"}
    assert mean["mti"] > mean["stock"] + MARGIN, df.to_string()
    assert mean["mti"] > 0.5, df.to_string()
    # motion fidelity, which needs no ground truth, ranks the methods as the true trajectories do
    fidelity = df.groupby("method").motion_fidelity.mean()
    assert fidelity["mti"] > fidelity["stock"], df.to_string()


MARGIN = 0.3
