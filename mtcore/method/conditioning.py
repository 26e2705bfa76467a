"""What SVD conditions on besides the noisy latents: CLIP image embeddings, the first-frame
VAE latent, and the micro-conditioning time ids. Shared by inversion and transfer so both
feed the UNet exactly as the stock pipeline does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from PIL import Image

if TYPE_CHECKING:  # annotations only: models imports this module's functions lazily
    from mtcore.method.models import SVDModel



@torch.no_grad()
def clip_embed(model: SVDModel, images: list[Image.Image]) -> torch.Tensor:
    """(B, D) CLIP image embeddings, with the stock pipeline's own preprocessing (224 px, antialiased)."""
    emb = model.pipe._encode_image(images, model.device, 1, False)  # (B, 1, D)
    return emb[:, 0]


@torch.no_grad()
def first_frame_latent(model: SVDModel, image: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) conditioning latent of (B, 3, H, W) images in [-1, 1]: VAE mode, unscaled (as SVD)."""
    return model.vae.encode(image.to(model.device, model.vae.dtype)).latent_dist.mode()


@torch.no_grad()
def video_latents(model: SVDModel, frames: torch.Tensor) -> torch.Tensor:
    """(1, F, C, h, w) scaled latents of (F, 3, H, W) frames in [-1, 1] (the x0 of the diffusion loss)."""
    lat = model.vae.encode(frames.to(model.device, model.vae.dtype)).latent_dist.mode()
    return (lat * model.vae.config.scaling_factor)[None]


def time_ids(model: SVDModel, fps: int, motion_bucket_id: int, noise_aug_strength: float, batch: int) -> torch.Tensor:
    """(batch, 3) added time ids; fps is passed as fps - 1, as SVD was trained."""
    ids = model.pipe._get_add_time_ids(fps - 1, motion_bucket_id, noise_aug_strength, model.dtype, batch, 1, False)
    return ids.to(model.device)
