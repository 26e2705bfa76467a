"""SVD's side of inversion: its training loss, its reference encoding and its noise draws.

Objective = SVD's training loss (EDM preconditioning with v-prediction):
  x = x0 + sigma * n,  ln(sigma) ~ N(p_mean, p_std^2)
  D(x) = c_skip * x + c_out * UNet(c_in * x ++ cond_latent, c_noise, m)
  loss = (1 + sigma^2) / sigma^2 * mean((D(x) - x0)^2)
with c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_noise = ln(s)/4, and the
conditioning (first) frame noise-augmented with ln(sigma_cond) ~ N(cond_p_mean, cond_p_std^2).
Constants are in `mtcore.method.config.InversionConfig`. The optimisation around it is the families'
shared one (`mtcore.method.inversion`); `SVDModel` exposes these as its `MotionModel` methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mtcore.io.frames import signed_to_pil
from mtcore.method.conditioning import clip_embed, first_frame_latent, time_ids, video_latents
from mtcore.method.config import InversionConfig
from mtcore.method.embedding import initial_tokens

if TYPE_CHECKING:  # annotations only: models imports this module lazily
    from mtcore.method.models import SVDModel


def edm_denoise(
    model: SVDModel,
    noisy: torch.Tensor,
    sigma: torch.Tensor,
    cond_latent: torch.Tensor,
    hidden_states: torch.Tensor,
    added_time_ids: torch.Tensor,
) -> torch.Tensor:
    """D(x; sigma): denoised (B, F, C, h, w) latents. sigma: (B,); cond_latent: (B, C, h, w)."""
    s = sigma.view(-1, 1, 1, 1, 1).to(noisy.dtype)
    c_in, c_skip, c_out = 1 / (s**2 + 1).sqrt(), 1 / (s**2 + 1), -s / (s**2 + 1).sqrt()
    frames = noisy.shape[1]
    cond = cond_latent[:, None].expand(-1, frames, -1, -1, -1)  # first frame repeated over frames
    unet_in = torch.cat([c_in * noisy, cond.to(noisy.dtype)], dim=2).to(model.dtype)
    out = model.unet(
        unet_in,
        (0.25 * sigma.log()).to(model.dtype),
        encoder_hidden_states=hidden_states.to(model.dtype),
        added_time_ids=added_time_ids,
        return_dict=False,
    )[0]
    return c_skip * noisy + c_out * out.float()


def weighted_errors(denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(B,) (1 + s^2)/s^2 * mean squared error of each item."""
    per_item = ((denoised - x0) ** 2).flatten(1).mean(1)
    return (1 + sigma**2) / sigma**2 * per_item


def weighted_loss(denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of (1 + s^2)/s^2 * mean squared error."""
    return weighted_errors(denoised, x0, sigma).mean()


def fixed_draws(shape: tuple[int, ...], count: int, seed: int, p_mean: float, p_std: float):
    """`count` (sigma (1,), noise shape) pairs from a seed: a fixed yardstick for the loss."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        sigma = (p_mean + p_std * torch.randn(1, generator=g)).exp()
        out.append((sigma, torch.randn(shape, generator=g)))
    return out


@torch.no_grad()
def denoising_loss(model: SVDModel, frames: torch.Tensor, tokens: torch.Tensor, draws, config: InversionConfig) -> float:
    """Mean weighted loss of embedding `tokens` (F+1, N, D) over fixed draws, no augmentation."""
    x0 = video_latents(model, frames).float()
    cond = first_frame_latent(model, frames[:1])
    ids = time_ids(model, config.fps, config.motion_bucket_id, config.noise_aug_strength, 1)
    hidden = tokens.reshape(1, -1, tokens.shape[-1]).to(model.device)
    total = 0.0
    with model.routing.route(tokens.shape[0] - 1, tokens.shape[1]):
        for sigma, noise in draws:
            sigma, noise = sigma.to(model.device), noise.to(model.device)
            d = edm_denoise(model, x0 + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, cond, hidden, ids)
            total += weighted_loss(d, x0, sigma).item()
    return total / len(draws)


@dataclass
class SVDReference:
    """What SVD's loss needs of one reference video, computed once."""

    frames: torch.Tensor
    """(F, 3, H, W) in [-1, 1]."""
    x0: torch.Tensor
    """(1, F, C, h, w) scaled VAE latents: the x0 of the loss."""
    tokens: torch.Tensor
    """(F + 1, N, D) the embedding's start (CLIP embeddings of the frames, `InversionConfig.init`)."""


def encode_reference(model: SVDModel, frames: torch.Tensor, config: InversionConfig, generator: torch.Generator,
                     caption: str | None = None) -> SVDReference:
    """The frozen inputs of one reference and its start, the init noise drawn from `generator`."""
    x0 = video_latents(model, frames).float()
    start = initial_tokens(clip_embed(model, signed_to_pil(frames)).float(), config.tokens_per_frame, config.init,
                           config.init_noise, generator)
    return SVDReference(frames, x0, start)


def draw(reference: SVDReference, batch: int, config: InversionConfig, generator: torch.Generator) -> tuple:
    """One step's noise for one reference: (sigma (b,), noise, sigma_cond (b,), conditioning noise), in that order."""
    sigma = (config.p_mean + config.p_std * torch.randn(batch, generator=generator)).exp()
    noise = torch.randn((batch, *reference.x0.shape[1:]), generator=generator)
    cond_sigma = (config.cond_p_mean + config.cond_p_std * torch.randn(batch, generator=generator)).exp()
    cond_noise = torch.randn((batch, *reference.frames.shape[1:]), generator=generator)
    return sigma, noise, cond_sigma, cond_noise


def errors(model: SVDModel, references: list[SVDReference], draws: list[tuple], tokens: torch.Tensor,
           config: InversionConfig, autocast) -> torch.Tensor:
    """(k*b,) loss of each item: reference i's b draws against its tokens (rows i*b..), tokens (k*b, G, N, D)."""
    b = len(draws[0][0])
    sigma = torch.cat([d[0] for d in draws]).to(model.device)
    noise = torch.cat([d[1] for d in draws]).to(model.device)
    cond_sigma, cond_noise = torch.cat([d[2] for d in draws]), torch.cat([d[3] for d in draws])
    x0 = torch.cat([r.x0.expand(b, -1, -1, -1, -1) for r in references])  # (k*b, F, C, h, w)
    first = torch.cat([r.frames[:1].expand(b, -1, -1, -1) for r in references])  # (k*b, 3, H, W)
    cond = first_frame_latent(model, first + cond_sigma.view(-1, 1, 1, 1) * cond_noise)
    ids = time_ids(model, config.fps, config.motion_bucket_id, config.noise_aug_strength, len(first))
    hidden = tokens.reshape(len(tokens), -1, tokens.shape[-1])  # (k*b, (F + 1) * N, D)
    with autocast:
        d = edm_denoise(model, x0 + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, cond, hidden, ids)
    return weighted_errors(d.float(), x0, sigma)


def eval_draws(reference: SVDReference, count: int, config: InversionConfig) -> list:
    return fixed_draws(tuple(reference.x0.shape), count, config.seed + 1, config.p_mean, config.p_std)


def eval_loss(model: SVDModel, reference: SVDReference, tokens: torch.Tensor, draws, config: InversionConfig) -> float:
    return denoising_loss(model, reference.frames, tokens, draws, config)
