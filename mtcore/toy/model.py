"""The toy image-to-video model: Stable Video Diffusion's architecture, small enough to train on a CPU.

Components of a complete `StableVideoDiffusionPipeline` folder:
- `ToyUNet`: diffusers' spatio-temporal UNet with two changes that stock config cannot express,
  so they are config fields of this subclass and `from_pretrained` rebuilds them exactly:
  GroupNorm with `channels_per_group` channels per group (stock hard-codes 32 groups, which at
  32-64 channels leaves 1-2 channels per group and wipes each channel's per-frame mean, i.e. the
  background colour), and circular padding in every 2-D convolution (the toy world wraps around,
  so no border tells the model where the sprite came from).
- `PixelShuffleVAE`: an exact, invertible latent mapping (pixel unshuffle by 2: (3, H, W) ->
  (12, H/2, W/2)) with the encode/decode interface the pipeline uses; no weights to learn.
- a tiny CLIP vision tower whose projection is zero: the toy model's "usual" image embedding is
  SVD's zero (unconditional) embedding, and inversion initialised from it starts from zero.
Motion reaches the model only through cross-attention (one token per frame + one temporal token,
see `mtcore.toy.tokens.motion_tokens`); appearance only through the first-frame latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from mtcore.method.svd import CLIPImageProcessor, svd_scheduler


class ToyUNet(UNetSpatioTemporalConditionModel):
    """SVD's UNet with `channels_per_group`-channel GroupNorms and circular 2-D padding."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        in_channels: int = 24,
        out_channels: int = 12,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
        up_block_types: tuple[str, ...] = ("CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels: tuple[int, ...] = (32, 64),
        addition_time_embed_dim: int = 32,
        projection_class_embeddings_input_dim: int = 96,
        layers_per_block: int = 1,
        cross_attention_dim: int = 32,
        transformer_layers_per_block: int = 1,
        num_attention_heads: tuple[int, ...] = (2, 4),
        num_frames: int = 8,
        channels_per_group: int = 8,
        circular_padding: bool = True,
    ):
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            down_block_types=down_block_types, up_block_types=up_block_types,
            block_out_channels=block_out_channels, addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads, num_frames=num_frames,
        )
        _regroup_norms(self, channels_per_group)
        if circular_padding:
            for module in self.modules():
                if isinstance(module, nn.Conv2d) and any(p > 0 for p in module.padding):
                    module.padding_mode = "circular"


def _regroup_norms(root: nn.Module, channels_per_group: int) -> None:
    """Replace every GroupNorm(32, C) by GroupNorm(C / channels_per_group, C); parameters keep their shapes."""
    for name, child in list(root.named_children()):
        if isinstance(child, nn.GroupNorm):
            groups = max(1, child.num_channels // channels_per_group)
            setattr(root, name, nn.GroupNorm(groups, child.num_channels, eps=child.eps, affine=child.affine))
        else:
            _regroup_norms(child, channels_per_group)


@dataclass
class _Latent:
    """Stands in for a Gaussian latent distribution: the mapping is deterministic."""

    z: torch.Tensor

    def mode(self) -> torch.Tensor:
        return self.z

    def sample(self, generator=None) -> torch.Tensor:
        return self.z


@dataclass
class _EncoderOutput:
    latent_dist: _Latent


@dataclass
class _DecoderOutput:
    sample: torch.Tensor


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    """(B, 3, H, W) in [-1, 1] <-> (B, 3 * factor^2, H / factor, W / factor): exact and invertible.

    `block_out_channels` only has the length the pipeline reads its scale factor from
    (2 ** (len - 1) = factor).
    """

    @register_to_config
    def __init__(self, factor: int = 2, in_channels: int = 3, latent_channels: int = 12,
                 block_out_channels: tuple[int, ...] = (12, 12), scaling_factor: float = 1.0,
                 force_upcast: bool = False):
        super().__init__()
        if latent_channels != in_channels * factor**2 or 2 ** (len(block_out_channels) - 1) != factor:
            raise ValueError("PixelShuffleVAE: latent_channels must be in_channels * factor^2 and "
                             "2 ** (len(block_out_channels) - 1) must equal factor")
        # A buffer so the module has a dtype and device like any other component.
        self.register_buffer("anchor", torch.zeros(1))

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = F.pixel_unshuffle(x.to(self.anchor.dtype), self.config.factor)
        return _EncoderOutput(_Latent(z)) if return_dict else (_Latent(z),)

    def decode(self, z: torch.Tensor, num_frames: int | None = None, return_dict: bool = True):
        x = F.pixel_shuffle(z.to(self.anchor.dtype), self.config.factor)
        return _DecoderOutput(x) if return_dict else (x,)

    def forward(self, sample: torch.Tensor, num_frames: int | None = None):
        return self.decode(self.encode(sample).latent_dist.mode(), num_frames=num_frames)


def build_toy_pipeline(seed: int = 0, size: int = 16, frames: int = 8, token_dim: int = 32, factor: int = 2,
                       block_out_channels: tuple[int, ...] = (32, 64), num_attention_heads: tuple[int, ...] = (2, 4),
                       circular_padding: bool = True) -> StableVideoDiffusionPipeline:
    """A fresh (untrained) toy pipeline: ToyUNet + PixelShuffleVAE + zero-projection CLIP + SVD's scheduler.

    The defaults are the original 16-px model; the built-in 32-px model uses factor 4 (a 32 x 32 x 3
    frame is an 8 x 8 x 48 latent), channels (64, 96), heads (4, 6) and zero padding (see
    mtcore.toy.train.ToyTrainConfig).
    """
    torch.manual_seed(seed)
    latent_channels = 3 * factor**2
    unet = ToyUNet(sample_size=size // factor, in_channels=2 * latent_channels, out_channels=latent_channels,
                   block_out_channels=tuple(block_out_channels), num_attention_heads=tuple(num_attention_heads),
                   cross_attention_dim=token_dim, num_frames=frames, circular_padding=circular_padding)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=token_dim, num_hidden_layers=1, num_attention_heads=4,
        image_size=224, patch_size=32, intermediate_size=64,
    ))
    with torch.no_grad():
        clip.visual_projection.weight.zero_()  # image embedding == SVD's unconditional embedding
    levels = int(round(np.log2(factor))) + 1  # the pipeline reads its scale factor as 2 ** (levels - 1)
    vae = PixelShuffleVAE(factor=factor, latent_channels=latent_channels, block_out_channels=(latent_channels,) * levels)
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=clip, unet=unet, scheduler=svd_scheduler(),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
