"""Transfer: sample videos for target images with a motion embedding (stock SVD sampling otherwise).

Mirrors `StableVideoDiffusionPipeline.__call__` step for step (noise augmentation of the target,
VAE latent, time ids, Karras Euler sampling, per-frame guidance ramp, chunked decoding), with the
CLIP image embedding replaced by the routed motion embedding. Several targets share one UNet
call; each target has its own seed, drawn in the same order as a single stock call, so a batch
equals the same targets sampled one at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from mtcore.method.conditioning import clip_embed, time_ids
from mtcore.method.config import TransferConfig, validate_config
from mtcore.method.embedding import MotionEmbedding
from mtcore.errors import EmbeddingMismatch
from mtcore.method.family import SVD

if TYPE_CHECKING:  # annotations only: models imports this module's functions lazily
    from mtcore.method.models import SVDModel

StepFn = Callable[[int, int], None]  # (step done, total steps)


@torch.no_grad()
def transfer(
    model: SVDModel,
    images: list[Image.Image],
    embedding: MotionEmbedding | None,
    config: TransferConfig = TransferConfig(),
    seeds: list[int] | None = None,
    progress: StepFn | None = None,
    guidance_passes: int = 1,
) -> torch.Tensor:
    """Videos (B, F, 3, H, W) in [0, 1] for B target images (RGB PIL, any size: resized as stock).

    `embedding` None = stock SVD (each target's own CLIP embedding). `seeds` default to 0 each.
    With guidance on, the unconditional and conditional branches run in one UNet pass of 2B videos
    (`guidance_passes=1`, faster) or in two passes of B (half the activation memory); the results
    agree to float rounding, so this is not part of any cache key.
    """
    if guidance_passes not in (1, 2):
        raise ValueError(f"guidance_passes must be 1 or 2, got {guidance_passes}")
    validate_config(config, "transfer")
    if model.family != SVD:  # the family's own sampling loop (mtcore.method.family.MotionModel.sample)
        return model.sample(images, embedding, config, list(seeds) if seeds is not None else [0] * len(images),
                            progress, guidance_passes)
    pipe, dev = model.pipe, model.device
    b = len(images)
    seeds = list(seeds) if seeds is not None else [0] * b
    if len(seeds) != b:
        raise ValueError(f"{b} target images but {len(seeds)} seeds")
    full = model.resolve(config, num_frames=embedding.num_frames if embedding is not None else None)
    height, width, frames = full.height, full.width, full.num_frames
    if embedding is not None and embedding.num_frames != frames:
        raise EmbeddingMismatch("embedding", f"made for F={embedding.num_frames} frames, {frames} requested")
    guidance_on = config.max_guidance_scale > 1
    # One CPU generator per target: device-independent, and the same draws as a lone stock call.
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    # Cross-attention input: (B, T, D); the unconditional branch is SVD's zero embedding.
    if embedding is None:
        hidden = clip_embed(model, images)[:, None].to(model.dtype)  # (B, 1, D)
    else:
        hidden = embedding.as_hidden_states(b, dev, model.dtype)
    if guidance_on:
        hidden = torch.cat([torch.zeros_like(hidden), hidden])

    # Target image -> noise-augmented VAE latent, repeated over frames (zero latent when unconditional).
    image = pipe.video_processor.preprocess(images, height=height, width=width).to(dev)
    image = image + config.noise_aug_strength * randn_tensor(image.shape, generator=gens, device=dev, dtype=image.dtype)
    needs_upcast = pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast
    if needs_upcast:
        pipe.vae.to(dtype=torch.float32)
    image_latent = pipe.vae.encode(image.to(pipe.vae.dtype)).latent_dist.mode().to(model.dtype)  # (B, C, h, w)
    if needs_upcast:
        pipe.vae.to(dtype=torch.float16)
    if guidance_on:
        image_latent = torch.cat([torch.zeros_like(image_latent), image_latent])
    image_latent = image_latent[:, None].repeat(1, frames, 1, 1, 1)  # (B', F, C, h, w)

    ids = time_ids(model, config.fps, config.motion_bucket_id, config.noise_aug_strength, b)
    if guidance_on:
        ids = torch.cat([ids, ids])

    pipe.scheduler.set_timesteps(config.steps, device=dev)
    shape = (b, frames, pipe.unet.config.in_channels // 2, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    # The noisy video latents being denoised: (B, F, C, h, w).
    latents = randn_tensor(shape, generator=gens, device=dev, dtype=model.dtype) * pipe.scheduler.init_noise_sigma
    guidance = torch.linspace(config.min_guidance_scale, config.max_guidance_scale, frames, device=dev)
    guidance = guidance.to(latents.dtype).view(1, frames, 1, 1, 1)

    tokens_per_frame = embedding.tokens_per_frame if embedding is not None else 1
    timesteps = pipe.scheduler.timesteps
    with model.routing.route(frames, tokens_per_frame):
        for i, t in enumerate(timesteps):
            x = torch.cat([latents] * 2) if guidance_on else latents
            x = pipe.scheduler.scale_model_input(x, t)
            x = torch.cat([x, image_latent], dim=2)
            if guidance_on and guidance_passes == 2:  # the two branches one after the other
                pred = torch.cat([model.unet(xs, t, encoder_hidden_states=hs, added_time_ids=i, return_dict=False)[0]
                                  for xs, hs, i in zip(x.chunk(2), hidden.chunk(2), ids.chunk(2))])
            else:
                pred = model.unet(x, t, encoder_hidden_states=hidden, added_time_ids=ids, return_dict=False)[0]
            if guidance_on:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance * (cond - uncond)
            latents = pipe.scheduler.step(pred, t, latents).prev_sample
            if progress is not None:
                progress(i + 1, len(timesteps))

    video = pipe.decode_latents(latents.to(pipe.vae.dtype), frames, config.decode_chunk_size or frames)
    return pipe.video_processor.postprocess_video(video=video, output_type="pt")  # (B, F, 3, H, W)
