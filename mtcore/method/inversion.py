"""Motion-textual inversion: optimise only the motion embedding on one reference video.

Objective = SVD's training loss (EDM preconditioning with v-prediction):
  x = x0 + sigma * n,  ln(sigma) ~ N(p_mean, p_std^2)
  D(x) = c_skip * x + c_out * UNet(c_in * x ++ cond_latent, c_noise, m)
  loss = (1 + sigma^2) / sigma^2 * mean((D(x) - x0)^2)
with c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_noise = ln(s)/4, and the
conditioning (first) frame noise-augmented with ln(sigma_cond) ~ N(cond_p_mean, cond_p_std^2).
Constants are in `mtcore.method.config.InversionConfig`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from mtcore.method.conditioning import clip_embed, first_frame_latent, time_ids, video_latents
from mtcore.method.config import InversionConfig, config_to_dict, validate_config
from mtcore.method.embedding import MotionEmbedding, initial_tokens
from mtcore.method.family import SVD
from mtcore.errors import InputError
from mtcore.io.frames import signed_to_pil
from mtcore.io.videoio import read_video

if TYPE_CHECKING:  # annotations only: models imports this module's functions lazily
    from mtcore.method.models import SVDModel

ProgressFn = Callable[[int, int, float], None]  # (step done, total steps, loss of that step)


@dataclass(frozen=True)
class InversionStats:
    """Denoising loss on fixed (sigma, noise) draws before and after, and wall time."""

    loss_before: float
    loss_after: float
    seconds: float


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


def weighted_loss(denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of (1 + s^2)/s^2 * mean squared error."""
    per_item = ((denoised - x0) ** 2).flatten(1).mean(1)
    return ((1 + sigma**2) / sigma**2 * per_item).mean()


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


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def autocast(model, config: InversionConfig):
    """bf16 autocast of the denoiser when the config asks for it (the embedding stays float32)."""
    if config.autocast_bf16:
        return torch.autocast(model.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimise(
    param: torch.nn.Parameter,
    config: InversionConfig,
    step_losses: Callable[[int], list[torch.Tensor]],
    denoisers: list[torch.nn.Module],
    progress: ProgressFn | None = None,
    observe: Callable[[int, torch.Tensor], None] | None = None,
) -> None:
    """The optimisation every family shares: AdamW with linear warm-up on the stacked (k, G, N, D) embeddings.

    `step_losses(step)` draws that step's noise and returns the k references' losses (their sum is
    minimised: nothing in a denoiser mixes batch items, so each embedding gets its own gradient). A
    non-finite loss stops the run. `denoisers` get gradient checkpointing while it runs when the config asks.
    """
    opt = torch.optim.AdamW([param], lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, config.warmup_steps))
    switched = [m for m in denoisers if config.gradient_checkpointing and not m.is_gradient_checkpointing]
    for module in switched:
        module.enable_gradient_checkpointing()
    try:
        for step in range(config.steps):
            losses = step_losses(step)
            loss = torch.stack(losses).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            values = [value.item() for value in losses]
            if not all(math.isfinite(v) for v in values):
                raise FloatingPointError(f"inversion diverged at step {step + 1} (losses {values})")
            if progress is not None:
                progress(step + 1, config.steps, sum(values) / len(values))
            if observe is not None:
                observe(step + 1, param.detach())
    finally:
        for module in switched:
            module.disable_gradient_checkpointing()


def read_reference(model: SVDModel, path, config: InversionConfig = InversionConfig()) -> torch.Tensor:
    """The reference video's frames as `invert` takes them with this config: (F, 3, H, W) in [-1, 1].

    Frame count, size and frame sampling come from the config, unset ones from the model.
    """
    full = model.resolve(config)
    return read_video(path, full.num_frames, full.height, full.width, full.frame_sampling)


def invert(
    model: SVDModel,
    frames: torch.Tensor,
    config: InversionConfig = InversionConfig(),
    reference_sha256: str = "",
    progress: ProgressFn | None = None,
    eval_draws: int = 4,
    caption: str | None = None,
) -> tuple[MotionEmbedding, InversionStats]:
    """Optimise a (F + 1) x N motion embedding on reference `frames` (F, 3, H, W) in [-1, 1].

    The frames must have the config's frame count and size (unset ones: the model's defaults), as
    `read_reference` returns them. Only the embedding has gradients; every random draw comes from
    a CPU generator seeded with `config.seed`, so a run is deterministic for a seed on a given device.
    (`invert_batch` with one reference.)
    """
    return invert_batch(model, [frames], config, [reference_sha256], progress, eval_draws,
                        captions=None if caption is None else [caption])[0]


def invert_batch(
    model: SVDModel,
    references: list[torch.Tensor],
    config: InversionConfig = InversionConfig(),
    reference_sha256s: list[str] | None = None,
    progress: ProgressFn | None = None,
    eval_draws: int = 4,
    observe: Callable[[int, torch.Tensor], None] | None = None,
    captions: list[str] | None = None,
) -> list[tuple[MotionEmbedding, InversionStats]]:
    """Invert k references at once: one UNet forward/backward per step for all of them.

    `captions` (Wan only): the texts the embeddings start from; SVD starts from the reference's frames.

    Each reference keeps its own embedding, its own generator (seeded with `config.seed`, as alone)
    and so its own draws; the k losses are summed, and since nothing in the UNet mixes batch items,
    each embedding gets exactly the gradient it would get alone: a batch gives each reference the
    embedding it would get by itself (up to float rounding of the batched kernels; a test checks).
    AdamW is elementwise, so one optimiser over the stacked (k, F + 1, N, D) parameter is k optimisers.
    `observe(step, tokens)` sees the (k, F + 1, N, D) embeddings after each step (studies of steps).
    """
    validate_config(config, "inversion")
    full = model.resolve(config)
    expected = (full.num_frames, 3, full.height, full.width)
    for frames in references:
        if tuple(frames.shape) != expected:
            raise InputError("reference frames", f"shape {tuple(frames.shape)}, but the inversion config asks for "
                                                 f"(F, 3, H, W) = {expected}; read them with read_reference()")
    if model.family != SVD:  # the family's own loss and conditioning, the same optimisation (optimise)
        return model.invert_batch(references, config, reference_sha256s, progress, eval_draws, observe, captions)
    t0 = time.perf_counter()
    k, num_frames, n = len(references), expected[0], config.tokens_per_frame
    gens = [torch.Generator().manual_seed(config.seed) for _ in references]

    # Frozen inputs, computed once per reference: x0 latents (1, F, C, h, w), CLIP frame embeddings (F, D).
    x0s = [video_latents(model, frames).float() for frames in references]
    tokens = [initial_tokens(clip_embed(model, signed_to_pil(frames)).float(), n, config.init, config.init_noise, gen)
              for frames, gen in zip(references, gens)]  # k x (F+1, N, D)
    param = torch.nn.Parameter(torch.stack(tokens).to(model.device, torch.float32))  # (k, F+1, N, D)

    draws = fixed_draws(tuple(x0s[0].shape), eval_draws, config.seed + 1, config.p_mean, config.p_std)
    losses_before = [denoising_loss(model, frames, param[i].detach(), draws, config) for i, frames in enumerate(references)]

    b = config.batch_size
    ids = time_ids(model, config.fps, config.motion_bucket_id, config.noise_aug_strength, k * b)
    x0_b = torch.cat([x0.expand(b, -1, -1, -1, -1) for x0 in x0s])  # (k*b, F, C, h, w)
    first = torch.cat([frames[:1].expand(b, -1, -1, -1) for frames in references])  # (k*b, 3, H, W)

    def step_losses(step: int) -> list[torch.Tensor]:
        # each reference's draws from its own generator, in the order a lone inversion draws them
        sigma, noise, cond_sigma, cond_noise = [], [], [], []
        for gen in gens:
            sigma.append((config.p_mean + config.p_std * torch.randn(b, generator=gen)).exp())
            noise.append(torch.randn((b, *x0_b.shape[1:]), generator=gen))
            cond_sigma.append((config.cond_p_mean + config.cond_p_std * torch.randn(b, generator=gen)).exp())
            cond_noise.append(torch.randn((b, *first.shape[1:]), generator=gen))
        sigma, noise = torch.cat(sigma).to(model.device), torch.cat(noise).to(model.device)
        cond_sigma, cond_noise = torch.cat(cond_sigma), torch.cat(cond_noise)
        cond = first_frame_latent(model, first + cond_sigma.view(-1, 1, 1, 1) * cond_noise)
        hidden = param.reshape(k, 1, -1, param.shape[-1]).expand(k, b, -1, -1).reshape(k * b, -1, param.shape[-1])
        with autocast(model, config):
            d = edm_denoise(model, x0_b + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, cond, hidden, ids)
        return [weighted_loss(d[i * b:(i + 1) * b].float(), x0_b[i * b:(i + 1) * b], sigma[i * b:(i + 1) * b])
                for i in range(k)]

    with model.routing.route(num_frames, n):
        optimise(param, config, step_losses, [model.unet], progress, observe)

    seconds = time.perf_counter() - t0
    shas = reference_sha256s or [""] * k
    results = []
    for i, frames in enumerate(references):
        final = param[i].detach().float().cpu()
        emb = MotionEmbedding(tokens=final, model_id=model.model_id, reference_sha256=shas[i],
                              inversion_config=config_to_dict(config))
        stats = InversionStats(losses_before[i], denoising_loss(model, frames, final, draws, config), seconds / k)
        results.append((emb, stats))
    return results


def invert_fitting(
    model: SVDModel,
    references: list[torch.Tensor],
    config: InversionConfig = InversionConfig(),
    reference_sha256s: list[str] | None = None,
    free_bytes: float | None = None,
    captions: list[str] | None = None,
) -> list[tuple[MotionEmbedding, InversionStats]]:
    """`invert_batch` over as many references at a time as the device holds; same results, in order.

    On a CUDA device the batch is sized from its free memory and the model's own UNet counted on the
    meta device (mtcore.method.gpuplan.references_that_fit), and halved again if a step still runs out of
    memory; on a CPU (or with no size known) every reference goes in one batch. `free_bytes` overrides
    the device's figure. A batch gives each reference the embedding it would get alone, so how the
    references are cut into batches changes no result.
    """
    shas = list(reference_sha256s or [""] * len(references))
    size = len(references)
    if free_bytes is None and model.device.type == "cuda":
        free_bytes = torch.cuda.mem_get_info(model.device)[0]
    if free_bytes is not None and references and model.family == SVD:  # counted for SVD's UNet; others halve on OOM
        from mtcore.method.gpuplan import references_that_fit

        full = model.resolve(config)
        half = config.autocast_bf16 or model.dtype in (torch.float16, torch.bfloat16)
        size = min(size, references_that_fit(model.unet, full.num_frames, full.height, full.width,
                                             config.tokens_per_frame, config.gradient_checkpointing,
                                             2 if half else 4, free_bytes))
    results: list[tuple[MotionEmbedding, InversionStats]] = []
    while len(results) < len(references):
        start = len(results)
        try:
            results += invert_batch(model, references[start:start + size], config, shas[start:start + size],
                                    captions=captions[start:start + size] if captions else None)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)  # the count was optimistic for this device: fewer at a time
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
    return results
