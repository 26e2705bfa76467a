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

from mtcore.method.family import latent_frames

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
    unet = unet.to("meta").requires_grad_(False)
    if hasattr(unet.config, "text_dim"):  # a Wan transformer: counted routed, with Wan 2.1's CLIP tokens if it takes them
        return with_routing(unet, WanSpec(dict(unet.config), image_tokens=257 if unet.config.image_dim else 0))
    return unet


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

    def fused(*args, **kw):  # positional (diffusers' processors) or query=/key=/value= (diffusers' dispatch)
        q, k, v = args[:3] if len(args) >= 3 else (kw["query"], kw["key"], kw["value"])
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
    F.scaled_dot_product_attention = fused
    try:
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if backward else contextlib.nullcontext()
            with routed(unet, frames, tokens):  # the backward recomputes checkpointed blocks: routed too
                with hooks, (contextlib.nullcontext() if backward else torch.no_grad()):
                    out = denoise(unet, frames, height, width, batch, tokens, backward)
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
                       and m.__class__.__name__.endswith(("ResBlock", "TransformerSpatioTemporalModel",
                                                          "WanTransformerBlock")))
        transient = full / max(1, segments)
    return StepCost(counter.get_total_flops() + attention_flops[0], saved[0], transient, params * dtype_bytes)


def routed(model: torch.nn.Module, frames: int, tokens: int):
    """The routing of a Wan transformer built by meta_wan, for videos of `frames` (a no-op for SVD's UNet,
    whose plan counts N tokens unrouted: the same work)."""
    if not hasattr(model, "_motion_routing"):
        return contextlib.nullcontext()
    return model._motion_routing.route(latent_frames(frames, wan_spec_of(model).temporal) + 1, tokens)


def denoise(model: torch.nn.Module, frames: int, height: int, width: int, batch: int, tokens: int,
            grad: bool, device: str | torch.device = "meta", dtype: torch.dtype | None = None) -> torch.Tensor:
    """One denoiser call on inputs of the right shapes (the motion embedding with `grad`): SVD's UNet, or Wan's
    transformer (WanSpec; G = latent frames + 1 groups of `tokens`, routed inside `routed`)."""
    dtype = dtype or next(model.parameters()).dtype
    opts = {"device": device, "dtype": dtype}
    if hasattr(model.config, "text_dim"):  # WanTransformer3DModel
        spec = wan_spec_of(model)
        latent = latent_frames(frames, spec.temporal)
        # the VAE's latents (H / 8 x W / 8); the transformer cuts them into its own 2 x 2 patches
        x = torch.randn(batch, model.config.in_channels, latent, height // spec.vae, width // spec.vae, **opts)
        text = torch.randn(batch, (latent + 1) * tokens + 1, model.config.text_dim, **opts, requires_grad=grad)
        image = (torch.randn(batch, spec.image_tokens, model.config.image_dim, **opts)
                 if model.config.image_dim else None)
        return model(hidden_states=x, timestep=torch.full((batch,), 500.0, device=device), encoder_hidden_states=text,
                     encoder_hidden_states_image=image, return_dict=False)[0]
    x = torch.randn(batch, frames, model.config.in_channels, height // 8, width // 8, **opts)
    ehs = torch.randn(batch, tokens, model.config.cross_attention_dim, **opts, requires_grad=grad)
    ids = torch.randn(batch, 3, **opts)
    return model(x, torch.ones(batch, device=device), encoder_hidden_states=ehs, added_time_ids=ids).sample


@dataclass(frozen=True)
class WanSpec:
    """A Wan transformer size: its diffusers config and what the rest of its pipeline makes of a video."""

    config: dict
    vae: int = 8
    """Pixels per latent side: the VAE's spatial compression (Wan 2.1 / 2.2 A14B: 8; Wan 2.2 5B: 16)."""
    temporal: int = 4
    """Frames per latent frame (F = 4k + 1 -> k + 1 latent frames)."""
    image_tokens: int = 257
    """CLIP ViT-H/14 tokens at 224 px (Wan 2.1 I2V); 0 without an image encoder."""
    frames: int = 81
    height: int = 480
    width: int = 832

    @property
    def spatial(self) -> int:
        """Pixels per transformer token side: the VAE's compression times the patch (height and width multiple)."""
        return self.vae * int(self.config["patch_size"][1])


_WAN_BASE = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=36, out_channels=16, text_dim=4096,
                 freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                 rope_max_seq_len=1024)
WAN_SIZES = {
    # Wan-AI/Wan2.1-I2V-14B-480P-Diffusers transformer/config.json
    "14B": WanSpec({**_WAN_BASE, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40, "added_kv_proj_dim": 5120}),
    # Wan2.1-T2V-1.3B's transformer with the I2V inputs (no 1.3B I2V checkpoint is published: a fine-tune's size)
    "1.3B": WanSpec({**_WAN_BASE, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30, "added_kv_proj_dim": 1536}),
    # Wan-AI/Wan2.2-TI2V-5B-Diffusers: 16x VAE, 48 latent channels, no CLIP tokens, 121 frames at 704x1280
    "5B": WanSpec({**_WAN_BASE, "num_attention_heads": 24, "ffn_dim": 14336, "num_layers": 30, "in_channels": 48,
                   "out_channels": 48, "image_dim": None}, vae=16, image_tokens=0, frames=121, height=704, width=1280),
    # the tests' tiny random model (mtcore.method.wan.build_tiny_wan): 32 px, 9 frames
    "tiny": WanSpec({**_WAN_BASE, "num_attention_heads": 2, "attention_head_dim": 12, "text_dim": 32, "ffn_dim": 32,
                     "num_layers": 2, "image_dim": 16, "added_kv_proj_dim": 24, "rope_max_seq_len": 32},
                    image_tokens=17, frames=9, height=32, width=32),
}
"""Wan sizes by name. The 5B's TI2V pipeline (expand_timesteps) is planned here but refused by load_model."""


def wan_spec_of(transformer: torch.nn.Module) -> WanSpec:
    return getattr(transformer, "_wan_spec", None) or WAN_SIZES["14B"]


def meta_wan(size: str = "14B", device: str | torch.device = "meta", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A Wan transformer of a named size with motion routing installed: on the meta device (shapes only) for
    counting, or with random weights on a real device for measuring."""
    from diffusers import WanTransformer3DModel

    spec = WAN_SIZES[size]
    return with_routing(built(lambda: WanTransformer3DModel.from_config(spec.config), device, dtype), spec)


def built(make, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """`make()` run on `device` with `dtype` as the default dtype, frozen: the weights are created in their dtype
    (16 B float32 weights would not fit beside their bf16 copy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = make()
    finally:
        torch.set_default_dtype(previous)
    return model.requires_grad_(False)


def with_routing(transformer: torch.nn.Module, spec: WanSpec) -> torch.nn.Module:
    """A Wan transformer with the motion routing installed and its size's spec kept, as `routed` and `denoise`
    use them."""
    from mtcore.method.wan_routing import WanMotionRouting

    transformer._motion_routing = WanMotionRouting.install(transformer)
    transformer._wan_spec = spec
    return transformer


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
         dtype_bytes: int = 2, denoiser: torch.nn.Module | None = None) -> list[Plan]:
    """The estimate for each GPU class in GPUS (see the module docstring for the model and its assumptions).

    `denoiser`: the model counted (a meta UNet or Wan transformer: meta_unet, meta_wan); default SVD's UNet."""
    unet = denoiser if denoiser is not None else svd_unet()
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


__all__ = ["GPUS", "StepCost", "Plan", "count_step", "plan", "seconds", "svd_unet", "meta_unet", "references_that_fit",
           "WAN_SIZES", "WanSpec", "meta_wan", "built", "with_routing", "denoise"]
