"""Measured beside planned: real inversion and sampling steps of a family's denoiser, random weights, full size.

`mtcore.method.gpuplan` counts a step on the meta device; this runs the same step for real on the device at
hand (a GPU, or this CPU at a tiny size): the denoiser built from its config with random weights in the
given dtype (the weights do not change the cost), the motion embedding the only tensor with a gradient,
Wan's routing installed. Timing waits for the device (cuda.synchronize); peak memory is CUDA's
max_memory_allocated (weights + activations, without the CUDA context the plan adds), None on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from mtcore.method.gpuplan import WAN_SIZES, built, denoise, meta_unet, meta_wan, routed

SVD_SIZES = ("1.5B", "tiny")
"""SVD img2vid's UNet (diffusers' default config, 1.52 B parameters) and the tests' tiny one."""


def build_denoiser(family: str, size: str, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32):
    """The denoiser of a family and size: on the meta device to count, with random weights to measure."""
    if family == "wan-i2v":
        if size not in WAN_SIZES:
            raise ValueError(f"unknown Wan size {size!r}; one of {', '.join(WAN_SIZES)}")
        return meta_wan(size, device, dtype)
    if size not in SVD_SIZES:
        raise ValueError(f"unknown SVD size {size!r}; one of {', '.join(SVD_SIZES)}")
    from diffusers import UNetSpatioTemporalConditionModel

    from mtcore.method.svd import tiny_unet_config

    config = tiny_unet_config() if size == "tiny" else None
    if str(device) == "meta":
        return meta_unet(UNetSpatioTemporalConditionModel, config)
    return built(lambda: UNetSpatioTemporalConditionModel.from_config(config) if config else UNetSpatioTemporalConditionModel(),
                 device, dtype)


@dataclass(frozen=True)
class Measured:
    step_s: float
    """One inversion step: forward + backward to the embedding (mean of the timed steps)."""
    sample_step_s: float
    """One sampling step: `guidance_passes` forward passes."""
    peak_gib: float | None
    """CUDA peak allocated over the inversion steps (None on a CPU)."""
    device: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: torch.nn.Module, frames: int, height: int, width: int, batch: int = 1, tokens: int = 5,
            checkpointing: bool = True, steps: int = 3, guidance_passes: int = 1) -> Measured:
    """Time `steps` inversion steps (after one untimed warm-up) and one sampling step of `model` at this size."""
    device = next(model.parameters()).device
    model.train(checkpointing)  # diffusers checkpoints only in training mode
    model.enable_gradient_checkpointing() if checkpointing else model.disable_gradient_checkpointing()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with routed(model, frames, tokens):
            times = []
            for step in range(steps + 1):
                _sync(device)
                t0 = time.perf_counter()
                out = denoise(model, frames, height, width, batch, tokens, True, device)
                out.float().square().mean().backward()
                del out
                _sync(device)
                if step:  # the first step pays for kernel selection and allocation
                    times.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            model.eval()
            model.disable_gradient_checkpointing()
            with torch.no_grad():
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(guidance_passes):
                    denoise(model, frames, height, width, batch, tokens, False, device)
                _sync(device)
                sample_s = time.perf_counter() - t0
    finally:
        model.disable_gradient_checkpointing()
        model.eval()
    return Measured(sum(times) / len(times), sample_s, peak, str(device))


__all__ = ["SVD_SIZES", "Measured", "build_denoiser", "measure"]
