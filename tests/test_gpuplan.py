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


def test_wan_counts_scale_with_the_work_and_checkpointing_saves_memory():
    """The tiny Wan transformer on the meta device, routed: the same checks as the UNet's."""
    from mtcore.method.gpuplan import meta_wan

    wan = meta_wan("tiny")
    seen = []
    hook = wan.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["hidden_states"].shape)), with_kwargs=True)
    one = count_step(wan, 9, 32, 32, batch=1, backward=True, dtype_bytes=2)
    hook.remove()
    assert seen[0] == (1, 36, 3, 4, 4)  # what the pipeline feeds it: 9 frames -> 3 latent frames, 32 px -> 4 (VAE 8x)
    two = count_step(wan, 9, 32, 32, batch=2, backward=True, dtype_bytes=2)
    assert two.flops == pytest.approx(2 * one.flops, rel=0.01)
    assert two.activation_bytes == pytest.approx(2 * one.activation_bytes, rel=0.05)  # rotary tables: once
    longer = count_step(wan, 17, 32, 32, batch=1, backward=True, dtype_bytes=2)  # 5 latent frames, not 3
    assert longer.flops > 1.2 * one.flops  # (the time embedding, a fixed cost, is a large share at this size)
    checkpointed = count_step(wan, 9, 32, 32, checkpointing=True, dtype_bytes=2)
    assert checkpointed.activation_bytes < one.activation_bytes and checkpointed.flops > one.flops
    assert one.weight_bytes == 2 * sum(p.numel() for p in wan.parameters())


def test_plan_gpu_for_wan_and_measured_beside_planned():
    r = subprocess.run([MT, "plan-gpu", "--family", "wan-i2v"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Wan 14B transformer (16.39 B parameters), 81 frames at 832x480" in r.stdout
    for gpu in ("A100 80GB", "H100 80GB", "L4 24GB"):
        assert gpu in r.stdout
    m = subprocess.run([MT, "plan-gpu", "--family", "wan-i2v", "--size", "tiny", "--measure", "--dtype", "fp32"],
                       capture_output=True, text=True, timeout=300)
    assert m.returncode == 0, m.stderr
    assert "measured on cpu: inversion step" in m.stdout and "sampling step" in m.stdout
    bad = subprocess.run([MT, "plan-gpu", "--family", "wan-i2v", "--frames", "80"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "4k + 1" in bad.stderr
