"""Motion-textual inversion on Wan I2V: only the motion embedding is optimised, with Wan's own objective.

Flow matching (rectified flow), as Wan is trained and as diffusers' flow-matching training scripts do it:
  x0 = the reference's normalised VAE latents (1, C, F', h, w),  n ~ N(0, I)
  u ~ logit-normal(LOGIT_MEAN, LOGIT_STD),  sigma = shift * u / (1 + (shift - 1) * u)   (the scheduler's shift)
  x_sigma = (1 - sigma) * x0 + sigma * n,  timestep = 1000 * sigma
  loss = mean((v(x_sigma ++ condition, timestep, motion embedding, CLIP image tokens) - (n - x0))^2)
The condition (first-frame latents and mask) and the CLIP image tokens are built by the pipeline's own
methods from the reference's first frame, exactly as sampling builds them from a target image.
The embedding starts, in every group, from the first N tokens of the encoded caption ("" = the empty
prompt: its end-of-text token, then the zeros of its padding), plus `init_noise` x their std of noise.
"""

from __future__ import annotations

import time

import torch

from mtcore.io.frames import signed_to_pil
from mtcore.method.config import InversionConfig, config_to_dict
from mtcore.method.embedding import MotionEmbedding
from mtcore.method.inversion import InversionStats, autocast, optimise

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
    """(G, N, D) start: every group = the prompt's first N tokens (N, D) ("zeros": all zero), plus noise."""
    n = config.tokens_per_frame
    base = prompt[:n].float().cpu()
    if config.init == "zeros":
        base = torch.zeros_like(base)
    tokens = base[None].expand(groups, -1, -1).clone()
    if config.init_noise > 0 and base.abs().sum() > 0:
        jitter = torch.randn(tokens.shape, generator=generator, dtype=torch.float32)
        tokens += config.init_noise * base.std() * jitter
    return tokens


def flow_loss(model, x0: torch.Tensor, condition: torch.Tensor, image, tokens: torch.Tensor, sigma: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """Per-item flow-matching loss (B,) of tokens (B, G, N, D) at noise levels sigma (B,) in [0, 1]."""
    s = sigma.view(-1, 1, 1, 1, 1).to(x0.dtype)
    noisy = (1 - s) * x0 + s * noise
    scale = model.pipe.scheduler.config.num_train_timesteps
    pred = model.velocity(noisy, condition, sigma * scale, model.hidden_states(tokens), image)
    return ((pred.float() - (noise - x0)) ** 2).flatten(1).mean(1)


@torch.no_grad()
def mean_loss(model, x0, condition, image, tokens: torch.Tensor, draws, groups: int) -> float:
    """The loss of one embedding (G, N, D) averaged over fixed (sigma, noise) draws: the before/after yardstick."""
    total = 0.0
    with model.routing.route(groups, tokens.shape[1]):
        for sigma, noise in draws:
            total += flow_loss(model, x0, condition, image, tokens[None].to(model.device), sigma.to(model.device),
                               noise.to(model.device)).item()
    return total / len(draws)


def invert_batch(model, references: list[torch.Tensor], config: InversionConfig, reference_sha256s=None,
                 progress=None, eval_draws: int = 4, observe=None, captions: list[str] | None = None):
    """k references (F, 3, H, W) in [-1, 1] at once, each with its own generator and embedding (as alone)."""
    t0 = time.perf_counter()
    full = model.resolve(config)
    k, n, b = len(references), config.tokens_per_frame, config.batch_size
    groups = model.embedding_groups(full.num_frames)
    shift = shift_of(model)
    gens = [torch.Generator().manual_seed(config.seed) for _ in references]

    # Frozen inputs per reference: x0 (1, C, F', h, w), condition (1, 4 + C, F', h, w), CLIP tokens or None.
    x0s = [model.video_latents(frames) for frames in references]
    conds = [model.condition(frames[:1], full.num_frames) for frames in references]
    images = [model.image_context(signed_to_pil(frames[:1])) for frames in references]
    captions = captions or [""] * k
    tokens = [initial_tokens(model.prompt_tokens(caption), groups, config, gen) for caption, gen in zip(captions, gens)]
    param = torch.nn.Parameter(torch.stack(tokens).to(model.device, torch.float32))  # (k, G, N, D)

    g = torch.Generator().manual_seed(config.seed + 1)
    draws = [(draw_sigma(1, shift, g), torch.randn(tuple(x0s[0].shape), generator=g)) for _ in range(eval_draws)]
    before = [mean_loss(model, x0s[i], conds[i], images[i], param[i].detach(), draws, groups) for i in range(k)]

    x0_b = torch.cat([x0.expand(b, -1, -1, -1, -1) for x0 in x0s])  # (k*b, C, F', h, w)
    cond_b = torch.cat([c.expand(b, -1, -1, -1, -1) for c in conds])
    image_b = None if images[0] is None else torch.cat([i.expand(b, -1, -1) for i in images])

    def step_losses(step: int) -> list[torch.Tensor]:
        sigma, noise = [], []
        for gen in gens:  # each reference's draws from its own generator, as a lone inversion draws them
            sigma.append(draw_sigma(b, shift, gen))
            noise.append(torch.randn((b, *x0_b.shape[1:]), generator=gen))
        sigma, noise = torch.cat(sigma).to(model.device), torch.cat(noise).to(model.device)
        hidden = param[:, None].expand(k, b, -1, -1, -1).flatten(0, 1)  # (k*b, G, N, D)
        with autocast(model, config):
            per_item = flow_loss(model, x0_b, cond_b, image_b, hidden, sigma, noise)
        return [per_item[i * b:(i + 1) * b].mean() for i in range(k)]

    with model.routing.route(groups, n):
        optimise(param, config, step_losses, model.invertible_modules(), progress, observe)

    seconds = time.perf_counter() - t0
    shas = reference_sha256s or [""] * k
    results = []
    for i in range(k):
        final = param[i].detach().float().cpu()
        emb = MotionEmbedding(tokens=final, model_id=model.model_id, reference_sha256=shas[i],
                              inversion_config=config_to_dict(config), family=model.family,
                              video_frames=full.num_frames)
        after = mean_loss(model, x0s[i], conds[i], images[i], final, draws, groups)
        results.append((emb, InversionStats(before[i], after, seconds / k)))
    return results
