"""Wan I2V's side of inversion: its flow-matching loss, its reference encoding and its noise draws (the
optimisation around them is the families' shared one, `mtcore.method.inversion`).

Flow matching (rectified flow), as Wan is trained and as diffusers' flow-matching training scripts do it:
  x0 = the reference's normalised VAE latents (1, C, F', h, w),  n ~ N(0, I)
  u ~ logit-normal(LOGIT_MEAN, LOGIT_STD),  sigma = shift * u / (1 + (shift - 1) * u)   (the scheduler's shift)
  x_sigma = (1 - sigma) * x0 + sigma * n,  timestep = 1000 * sigma
  loss = mean((v(x_sigma ++ condition, timestep, motion embedding, CLIP image tokens) - (n - x0))^2)
The condition (first-frame latents and mask) and the CLIP image tokens are built by the pipeline's own
methods from the reference's first frame, exactly as sampling builds them from a target image.
The embedding starts, in every frame group, from the first N tokens of the encoded caption ("" = the empty
prompt: its end-of-text token, then the zeros of its padding), and in the shared group from zeros (which
project as the padding does: the start is the caption's stock context), plus `init_noise` x their std of noise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from mtcore.io.frames import signed_to_pil
from mtcore.method.config import InversionConfig

LOGIT_MEAN = 0.0
LOGIT_STD = 1.0
"""ln(u / (1 - u)) ~ N(0, 1) before the shift: SD3's choice, the default of diffusers' flow-matching scripts."""


def shift_of(model) -> float:
    """The scheduler's flow shift (UniPC: flow_shift; FlowMatchEuler: shift); Wan 2.1 480P uses 3."""
    cfg = model.pipe.scheduler.config
    return float(cfg.get("flow_shift") or cfg.get("shift") or 1.0)


def draw_sigma(count: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.sigmoid(LOGIT_MEAN + LOGIT_STD * torch.randn(count, generator=generator))
    return shift * u / (1 + (shift - 1) * u)


def initial_tokens(prompt: torch.Tensor, groups: int, config: InversionConfig, generator: torch.Generator) -> torch.Tensor:
    """(G, N, D) start: every frame group = the prompt's first N tokens (N, D), the shared group zeros, plus noise.

    Zero tokens project as the padding does, so a latent frame's start context, [prompt, zeros, padding], is
    the stock context of the prompt ("zeros": every group zero, the empty context)."""
    n = config.tokens_per_frame
    base = prompt[:n].float().cpu()
    if config.init == "zeros":
        base = torch.zeros_like(base)
    tokens = base[None].expand(groups, -1, -1).clone()
    if groups > 1:
        tokens[-1] = 0.0
    if config.init_noise > 0 and base.abs().sum() > 0:
        jitter = torch.randn(tokens.shape, generator=generator, dtype=torch.float32)
        tokens += config.init_noise * base.std() * jitter
    return tokens


@dataclass
class WanReference:
    """What Wan's loss needs of one reference video, computed once."""

    x0: torch.Tensor
    """(1, C, F', h, w) normalised VAE latents: the x0 of the loss."""
    condition: torch.Tensor
    """(1, 4 + C, F', h, w) the first frame's mask and latents, as the pipeline builds them."""
    image: torch.Tensor | None
    """(1, L, D_img) the first frame's CLIP image tokens (Wan 2.1), or None."""
    tokens: torch.Tensor
    """(G, N, D) the embedding's start."""


def encode_reference(model, frames: torch.Tensor, config: InversionConfig, generator: torch.Generator,
                     caption: str | None = None) -> WanReference:
    """The frozen inputs of one reference (F, 3, H, W) in [-1, 1] and its start (init noise from `generator`)."""
    groups = model.embedding_groups(frames.shape[0])
    start = initial_tokens(model.prompt_tokens(caption or ""), groups, config, generator)
    return WanReference(model.video_latents(frames), model.condition(frames[:1], frames.shape[0]),
                        model.image_context(signed_to_pil(frames[:1])), start)


def draw(model, reference: WanReference, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's noise for one reference: (sigma (b,), noise (b, C, F', h, w)), in that order."""
    sigma = draw_sigma(batch, shift_of(model), generator)
    return sigma, torch.randn((batch, *reference.x0.shape[1:]), generator=generator)


def flow_errors(model, x0: torch.Tensor, condition: torch.Tensor, image, tokens: torch.Tensor, sigma: torch.Tensor,
                noise: torch.Tensor, autocast=None) -> torch.Tensor:
    """(B,) flow-matching loss of each item: tokens (B, G, N, D) at noise levels sigma (B,) in [0, 1]."""
    s = sigma.view(-1, 1, 1, 1, 1).to(x0.dtype)
    noisy = (1 - s) * x0 + s * noise
    scale = model.pipe.scheduler.config.num_train_timesteps
    with autocast or contextlib.nullcontext():
        pred = model.velocity(noisy, condition, sigma * scale, model.hidden_states(tokens), image)
    return ((pred.float() - (noise - x0)) ** 2).flatten(1).mean(1)


def errors(model, references: list[WanReference], draws: list[tuple], tokens: torch.Tensor, autocast) -> torch.Tensor:
    """(k*b,) loss of each item: reference i's b draws against its tokens (rows i*b..), tokens (k*b, G, N, D)."""
    b = len(draws[0][0])
    sigma = torch.cat([d[0] for d in draws]).to(model.device)
    noise = torch.cat([d[1] for d in draws]).to(model.device)
    x0 = torch.cat([r.x0.expand(b, -1, -1, -1, -1) for r in references])
    condition = torch.cat([r.condition.expand(b, -1, -1, -1, -1) for r in references])
    image = None if references[0].image is None else torch.cat([r.image.expand(b, -1, -1) for r in references])
    return flow_errors(model, x0, condition, image, tokens, sigma, noise, autocast)


def eval_draws(model, reference: WanReference, count: int, config: InversionConfig) -> list:
    """`count` fixed (sigma (1,), noise) pairs from seed + 1: the before/after yardstick."""
    g = torch.Generator().manual_seed(config.seed + 1)
    shift = shift_of(model)
    return [(draw_sigma(1, shift, g), torch.randn(tuple(reference.x0.shape), generator=g)) for _ in range(count)]


@torch.no_grad()
def eval_loss(model, reference: WanReference, tokens: torch.Tensor, draws) -> float:
    """The loss of one embedding (G, N, D) averaged over fixed draws."""
    total = 0.0
    with model.routing.route(tokens.shape[0], tokens.shape[1]):
        for sigma, noise in draws:
            total += flow_errors(model, reference.x0, reference.condition, reference.image, tokens[None].to(model.device),
                                 sigma.to(model.device), noise.to(model.device)).item()
    return total / len(draws)
