"""What motion-textual inversion costs on GPUs with the real SVD UNet, estimated where no GPU is.

The real architecture (diffusers' UNetSpatioTemporalConditionModel with its default config: SVD
img2vid, 1.52 B parameters) is run on PyTorch's `meta` device, where nothing is computed or stored,
to count exactly, at any size:
- the FLOPs of a forward pass (sampling) and of a forward + backward to the motion embedding
  (inversion; the weights are frozen, so no weight gradients), with torch's FlopCounterMode;
- the bytes autograd saves for the backward (the activations), with saved-tensor hooks, leaving out
  the weights themselves. Attention is counted as a fused kernel (flash / memory-efficient SDPA, what
  GPUs run in bf16): it saves q, k, v, its output and the log-sum-exp, not the L x L matrix.
A step's time is FLOPs / (the GPU's dense bf16 peak x an assumed model-FLOPs utilisation); its peak
memory is weights + saved activations (+ with gradient checkpointing, one segment's activations
recomputed at a time) + 1.5 GiB for the CUDA context and allocator. `benchmarks/bench_gpuplan.py`
calibrates the FLOP/s on this CPU with the same real UNet at small sizes and checks the time and
memory predictions against CPU measurements it did not fit on.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

GPUS = {
    # name: (memory GiB, dense bf16 TFLOP/s from the vendor's sheet, assumed model-FLOPs utilisation)
    "A100 80GB": (80, 312.0, 0.40),
    "H100 80GB": (80, 989.0, 0.35),
    "L4 24GB": (24, 121.0, 0.40),
}
"""Assumptions, stated: utilisation 35-40% is what diffusion UNet training reaches with bf16 and fused
attention on these parts; memory bandwidth and kernel launch overheads are not modelled apart."""
CONTEXT_BYTES = 1.5 * 2**30


@dataclass(frozen=True)
class StepCost:
    """Counted on the meta device for one UNet step."""

    flops: float
    """Forward (+ backward for inversion) FLOPs."""
    activation_bytes: float
    """Bytes autograd keeps for the backward (0 for sampling), in the given dtype."""
    transient_bytes: float
    """Largest extra held during the backward of one checkpointed segment (0 without checkpointing)."""
    weight_bytes: float
    """The UNet's weights in the given dtype."""

    @property
    def peak_bytes(self) -> float:
        return self.weight_bytes + self.activation_bytes + self.transient_bytes + CONTEXT_BYTES


class _FusedAttention(torch.autograd.Function):
    """Stands in for a fused SDPA kernel on the meta device: the output's shape, and saved q, k, v, out, lse."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def meta_unet(unet_class: type | None = None, config: dict | None = None) -> torch.nn.Module:
    """A UNet of `unet_class` (default diffusers' UNetSpatioTemporalConditionModel) built from `config`
    (default: the class's own defaults) on the meta device: shapes only, nothing allocated."""
    if unet_class is None:
        from diffusers import UNetSpatioTemporalConditionModel as unet_class
    with torch.device("meta"):
        unet = unet_class.from_config(config) if config is not None else unet_class()
    return unet.to("meta").requires_grad_(False)


@lru_cache(maxsize=1)
def svd_unet() -> torch.nn.Module:
    """The real SVD UNet (default config, 1.52 B parameters) on the meta device: shapes only."""
    return meta_unet()


def count_step(unet: torch.nn.Module, frames: int, height: int, width: int, batch: int = 1, backward: bool = True,
               checkpointing: bool = False, dtype_bytes: int = 2, tokens: int = 1) -> StepCost:
    """FLOPs and memory of one UNet step at (frames, height, width) pixels for `batch` videos.

    `backward`: forward + backward to the embedding (inversion), else forward only (one sampling pass).
    `tokens`: cross-attention tokens (the motion embedding's N per group once routed; 1 for stock SVD).
    """
    from torch.utils.flop_counter import FlopCounterMode

    weights = {id(p) for p in unet.parameters()} | {id(b) for b in unet.buffers()}
    saved = [0.0]
    attention_flops = [0.0]
    real_sdpa = F.scaled_dot_product_attention

    def fused(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        b, h, lq, d = q.shape
        lk = k.shape[-2]
        attention_flops[0] += 4 * b * h * lq * lk * d * (3.5 if backward else 1.0)  # QK^T and PV; bwd ~2.5x
        return _FusedAttention.apply(q, k, v)

    def pack(t):
        base = t._base if t._base is not None else t
        if id(t) not in weights and id(base) not in weights:
            saved[0] += t.numel() * dtype_bytes
        return t

    unet.train(checkpointing)  # diffusers checkpoints only in training mode
    unet.enable_gradient_checkpointing() if checkpointing else unet.disable_gradient_checkpointing()
    latent_h, latent_w = height // 8, width // 8
    F.scaled_dot_product_attention = fused
    try:
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            x = torch.empty(batch, frames, unet.config.in_channels, latent_h, latent_w)
            ehs = torch.empty(batch, tokens, unet.config.cross_attention_dim, requires_grad=backward)
            ids = torch.empty(batch, 3)
            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if backward else contextlib.nullcontext()
            with hooks, (contextlib.nullcontext() if backward else torch.no_grad()):
                out = unet(x, torch.ones(batch), encoder_hidden_states=ehs, added_time_ids=ids).sample
            if backward:
                out.sum().backward()
    finally:
        F.scaled_dot_product_attention = real_sdpa
        unet.disable_gradient_checkpointing()
        unet.eval()
    params = sum(p.numel() for p in unet.parameters())
    transient = 0.0
    if checkpointing and backward:  # one segment recomputed at a time: ~1/segments of the full activations
        full = count_step(unet, frames, height, width, batch, True, False, dtype_bytes, tokens).activation_bytes
        segments = sum(1 for m in unet.modules() if getattr(m, "gradient_checkpointing", False) is not None
                       and m.__class__.__name__.endswith(("ResBlock", "TransformerSpatioTemporalModel")))
        transient = full / max(1, segments)
    return StepCost(counter.get_total_flops() + attention_flops[0], saved[0], transient, params * dtype_bytes)


def seconds(cost: StepCost, tflops: float, utilisation: float) -> float:
    """A step's time at `tflops` peak and the given utilisation."""
    return cost.flops / (tflops * 1e12 * utilisation)


@dataclass(frozen=True)
class Plan:
    gpu: str
    step_s: float
    """One inversion step (forward + backward, batch of `batch` references)."""
    peak_gib: float
    fits: bool
    inversion_minutes: float
    """Minutes per reference for `steps` inversion steps (a batch shares a step)."""
    video_s: float
    """Seconds per transfer video (sampling steps; CFG passes)."""
    max_batch: int
    """References per GPU that fit in its memory."""


def plan(frames: int = 14, height: int = 576, width: int = 1024, batch: int = 1, steps: int = 300,
         sample_steps: int = 25, guidance_passes: int = 1, checkpointing: bool = True, tokens: int = 5,
         dtype_bytes: int = 2) -> list[Plan]:
    """The estimate for each GPU class in GPUS (see the module docstring for the model and its assumptions)."""
    unet = svd_unet()
    one = count_step(unet, frames, height, width, 1, True, checkpointing, dtype_bytes, tokens)
    cost = one if batch == 1 else count_step(unet, frames, height, width, batch, True, checkpointing, dtype_bytes,
                                             tokens)
    sample = count_step(unet, frames, height, width, guidance_passes, False, False, dtype_bytes, tokens)
    per_reference = one.activation_bytes + one.transient_bytes
    plans = []
    for name, (memory_gib, tflops, utilisation) in GPUS.items():
        step_s = seconds(cost, tflops, utilisation)
        free = memory_gib * 2**30 - one.weight_bytes - CONTEXT_BYTES
        plans.append(Plan(name, step_s, cost.peak_bytes / 2**30, cost.peak_bytes <= memory_gib * 2**30,
                          steps * step_s / batch / 60, sample_steps * seconds(sample, tflops, utilisation),
                          max(0, int(free // per_reference))))
    return plans


@lru_cache(maxsize=16)
def _reference_bytes(unet_class: type, config_json: str, frames: int, height: int, width: int, tokens: int,
                     checkpointing: bool, dtype_bytes: int) -> float:
    # the config travels as canonical JSON so the count is cached per (architecture, size)
    one = count_step(meta_unet(unet_class, json.loads(config_json)), frames, height, width, 1, True, checkpointing, dtype_bytes, tokens)
    return one.activation_bytes + one.transient_bytes


def references_that_fit(unet: torch.nn.Module, frames: int, height: int, width: int, tokens: int, checkpointing: bool,
                        dtype_bytes: int, free_bytes: float, headroom: float = 0.85) -> int:
    """How many references of this size one batched inversion step can hold in `free_bytes` (>= 1).

    Counted for the model's own UNet (its class rebuilt from its config on the meta device), so it
    holds for any SVD-family checkpoint, not only the default architecture.
    """
    per_reference = _reference_bytes(type(unet), json.dumps(dict(unet.config), sort_keys=True, default=str), frames,
                                     height, width, tokens, checkpointing, dtype_bytes)
    return max(1, int(headroom * free_bytes // per_reference))


__all__ = ["GPUS", "StepCost", "Plan", "count_step", "plan", "seconds", "svd_unet", "meta_unet", "references_that_fit"]
