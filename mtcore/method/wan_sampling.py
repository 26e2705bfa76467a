"""Transfer on Wan I2V: `WanImageToVideoPipeline.__call__` step for step, the prompt replaced by the routed
motion embedding.

Kept as stock: the first-frame condition (the pipeline's prepare_latents), the CLIP image tokens, the
scheduler and its timesteps, the negative prompt ("", the pipeline's default) in an unrouted second pass
and the guidance scale (5.0 unless TransferConfig.guidance_scale says otherwise), Wan 2.2's switch to
`transformer_2` below the boundary timestep, and the decoding. Each target has its own CPU generator,
drawn as a lone stock call draws it, so a batch equals the same targets sampled one at a time.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.utils.torch_utils import randn_tensor

from mtcore.errors import EmbeddingMismatch

STOCK_GUIDANCE = 5.0
"""The pipeline's classifier-free guidance scale (TransferConfig.guidance_scale None means this)."""


@torch.no_grad()
def sample(model, images, embedding, config, seeds: list[int], progress=None, tokens: torch.Tensor | None = None,
           num_frames: int | None = None) -> torch.Tensor:
    """Videos (B, F, 3, H, W) in [0, 1] of B target images (PIL) moved by `embedding` (None = stock, the empty
    prompt). `tokens` (G, N, D) with `num_frames` stands in for an embedding (tests, studies)."""
    pipe, dev = model.pipe, model.device
    b = len(images)
    if embedding is not None:
        tokens, num_frames = embedding.tokens, embedding.num_frames
    full = model.resolve(config, num_frames=num_frames)
    height, width, frames = full.height, full.width, full.num_frames
    if embedding is not None and embedding.num_frames != frames:
        raise EmbeddingMismatch("embedding", f"made for F={embedding.num_frames} frames, {frames} requested")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    guidance = config.guidance_scale if config.guidance_scale is not None else STOCK_GUIDANCE
    negative = model.negative(b) if guidance > 1 else None
    if tokens is None:  # the stock model: the empty prompt's 512 tokens, unrouted
        text, routing = model.negative(b), contextlib.nullcontext()
    else:
        groups = tokens.shape[0]
        if groups not in (1, model.embedding_groups(frames)):
            raise EmbeddingMismatch("embedding", f"{groups} token groups; {frames} frames need "
                                                 f"{model.embedding_groups(frames)} (latent frames + 1)")
        text = model.hidden_states(tokens[None].to(dev, torch.float32)).expand(b, -1, -1).to(model.dtype)
        routing = model.route(groups, tokens.shape[1])
    image_tokens = model.image_context(images)

    image = pipe.video_processor.preprocess(images, height=height, width=width).to(dev, dtype=torch.float32)
    z = pipe.vae.config.z_dim
    shape = (b, z, model.latent_frames(frames), height // pipe.vae_scale_factor_spatial,
             width // pipe.vae_scale_factor_spatial)
    latents = randn_tensor(shape, generator=gens, device=dev, dtype=torch.float32)
    condition = model.condition(image, frames)

    pipe.scheduler.set_timesteps(config.steps, device=dev)
    timesteps = pipe.scheduler.timesteps
    with routing:
        for i, t in enumerate(timesteps):
            step_t = t.expand(b)
            pred = model.velocity(latents, condition, step_t, text, image_tokens)
            if negative is not None:  # the stock negative prompt: 512 tokens, so the routing lets it pass
                uncond = model.velocity(latents, condition, step_t, negative, image_tokens)
                pred = uncond + guidance * (pred - uncond)  # Wan 2.2's second expert: the same scale, as stock
            latents = pipe.scheduler.step(pred, t, latents, return_dict=False)[0]
            if progress is not None:
                progress(i + 1, len(timesteps))
    return model.decode(latents)
