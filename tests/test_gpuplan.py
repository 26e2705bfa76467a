"""The GPU plan's counts (mtcore.method.gpuplan) on known answers, and `mt plan-gpu` end to end."""

from __future__ import annotations

import subprocess

import pytest

from mtcore.method.gpuplan import count_step
from tests.test_cli_core import MT


@pytest.fixture(scope="module")
def meta_unet(tiny_model_dir):
    """The tests' tiny SVD UNet rebuilt on the meta device (shapes only), as the plan counts a model."""
    from diffusers import UNetSpatioTemporalConditionModel

    from mtcore.method.gpuplan import meta_unet

    return meta_unet(UNetSpatioTemporalConditionModel,
                     UNetSpatioTemporalConditionModel.load_config(tiny_model_dir / "unet"))


def test_counts_scale_with_the_work_and_checkpointing_saves_memory(meta_unet):
    one = count_step(meta_unet, 4, 64, 64, batch=1, backward=True, dtype_bytes=2)
    two = count_step(meta_unet, 4, 64, 64, batch=2, backward=True, dtype_bytes=2)
    assert two.flops == pytest.approx(2 * one.flops, rel=0.01)  # a batch of two is twice the work
    assert two.activation_bytes == pytest.approx(2 * one.activation_bytes, rel=0.01)
    assert count_step(meta_unet, 4, 64, 64, dtype_bytes=4).activation_bytes == pytest.approx(2 * one.activation_bytes)
    forward = count_step(meta_unet, 4, 64, 64, backward=False, dtype_bytes=2)
    assert forward.activation_bytes == 0 and 0.25 < forward.flops / one.flops <= 0.55  # backward >= forward
    checkpointed = count_step(meta_unet, 4, 64, 64, checkpointing=True, dtype_bytes=2)
    assert checkpointed.activation_bytes < 0.75 * one.activation_bytes and checkpointed.transient_bytes > 0  # real UNet: 55%
    assert checkpointed.flops > one.flops  # the forward is recomputed
    params = sum(p.numel() for p in meta_unet.parameters())
    assert one.weight_bytes == 2 * params


def test_plan_gpu_prints_every_gpu_class_for_the_real_unet():
    r = subprocess.run([MT, "plan-gpu", "--frames", "14", "--height", "576", "--width", "1024"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for gpu in ("A100 80GB", "H100 80GB", "L4 24GB"):
        assert gpu in r.stdout
    bad = subprocess.run([MT, "plan-gpu", "--height", "500"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "multiples of 64" in bad.stderr
