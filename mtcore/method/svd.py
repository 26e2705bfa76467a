"""Stable Video Diffusion's building blocks, below both the loader and the toy model.

SVD's scheduler settings, the CLIP image processor class, and tiny randomly initialised SVD
pipelines with the real architecture (for tests and CPU trials). No project module above this
one is imported here, so `mtcore.method.models` and `mtcore.toy.model` can both use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

try:  # transformers >= 5 names the torchvision-free processor separately
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # pragma: no cover
    from transformers import CLIPImageProcessor


def svd_scheduler() -> EulerDiscreteScheduler:
    """Euler scheduler with Stable Video Diffusion's scheduler_config.json settings that matter."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        interpolation_type="linear",
        sigma_min=0.002,
        sigma_max=700.0,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def tiny_unet_config(sample_size: int = 8, num_frames: int = 8, token_dim: int = 32) -> dict:
    """The tiny UNet's diffusers config: 2 levels (32, 64 channels), 1 layer per block (tests, the GPU plan)."""
    return dict(
        sample_size=sample_size,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=3 * 32,
        layers_per_block=1,
        cross_attention_dim=token_dim,
        num_attention_heads=(2, 4),
        num_frames=num_frames,
    )


def build_tiny_pipeline(
    seed: int = 0, sample_size: int = 8, num_frames: int = 8, token_dim: int = 32
) -> StableVideoDiffusionPipeline:
    """A small randomly initialised SVD with the real architecture (for tests and CPU trials).

    UNet: 2 levels (32, 64 channels), 1 layer per block; VAE: temporal decoder with SVD's 8x
    downscale (4 levels of 32 channels); CLIP vision tower at 224 px with 32-px patches and a
    projection to `token_dim`; Euler scheduler with SVD's settings. ~1-2 M parameters.
    """
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**tiny_unet_config(sample_size, num_frames, token_dim))
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        sample_size=sample_size * 8,
    )
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=token_dim,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
            intermediate_size=64,
        )
    )
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=svd_scheduler(),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


def init_tiny_model(folder: str | os.PathLike, seed: int = 0, sample_size: int = 8, num_frames: int = 8) -> Path:
    """Write a tiny random SVD pipeline folder with `save_pretrained` (safetensors weights)."""
    out = Path(folder)
    build_tiny_pipeline(seed=seed, sample_size=sample_size, num_frames=num_frames).save_pretrained(
        out, safe_serialization=True
    )
    return out


__all__ = ["CLIPImageProcessor", "svd_scheduler", "tiny_unet_config", "build_tiny_pipeline", "init_tiny_model"]
