"""Loading Stable Video Diffusion pipelines, and tiny random ones for tests.

Every model, real or tiny, goes through `StableVideoDiffusionPipeline.from_pretrained`
(a local folder or a hub id + revision); its identity comes from `mtcore.identity`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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

from mtcore.errors import InputError
from mtcore.identity import DEFAULT_MODEL, is_local, model_identity
from mtcore.routing import MotionRouting


@dataclass
class SVDModel:
    """A loaded pipeline with motion routing installed, on one device and dtype."""

    pipe: StableVideoDiffusionPipeline
    identity: str
    routing: MotionRouting
    device: torch.device
    dtype: torch.dtype

    @property
    def unet(self) -> UNetSpatioTemporalConditionModel:
        return self.pipe.unet

    @property
    def vae(self) -> AutoencoderKLTemporalDecoder:
        return self.pipe.vae

    @property
    def token_dim(self) -> int:
        """D: width of a cross-attention token (1024 for SVD)."""
        return int(self.unet.config.cross_attention_dim)

    @property
    def default_num_frames(self) -> int:
        return int(self.unet.config.num_frames)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) the UNet was configured for: sample_size x VAE scale factor."""
        side = int(self.unet.config.sample_size) * self.pipe.vae_scale_factor
        return side, side


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU. Never touched at import time."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU by default, float16 on CUDA by default; 'bf16'/'fp16'/'fp32' accepted."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise InputError("dtype", f"unknown dtype {name!r}; use one of {', '.join(table)}")
    return table[name]


def _quiet_libraries() -> None:
    # The project reports its own progress; library bars and load chatter would drown it.
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


_LOADS = 0  # pipelines loaded by this process: workers report it to prove the model stays resident


def load_count() -> int:
    """How many times this process has called `load_model`."""
    return _LOADS


def load_model(
    model: str | os.PathLike | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> SVDModel:
    """Load an SVD pipeline with `from_pretrained`, freeze it, install motion routing.

    `model`: a local pipeline folder or a hub id (None = the project's default CPU model).

    Weights load on CPU in float32 (diffusers' convention) and are then moved to `device`/`dtype`.
    """
    global _LOADS
    model = DEFAULT_MODEL if model is None else model
    dev = pick_device(str(device) if device is not None else None)
    dt = parse_dtype(dtype, dev)
    identity = model_identity(model, revision)
    src = str(Path(model).expanduser().resolve()) if is_local(model) else str(model)
    _quiet_libraries()
    import mtcore.toy.model  # noqa: F401  custom components named in model_index.json must be imported first

    try:
        pipe = StableVideoDiffusionPipeline.from_pretrained(src, revision=revision, dtype=dt)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise InputError(model, f"cannot load an SVD pipeline ({str(exc).splitlines()[0][:200]})") from None
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.image_encoder):
        part.requires_grad_(False)
        part.eval()
    routing = MotionRouting.install(pipe.unet)
    _LOADS += 1
    return SVDModel(pipe=pipe, identity=identity, routing=routing, device=dev, dtype=dt)


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


def build_tiny_pipeline(
    seed: int = 0, sample_size: int = 8, num_frames: int = 8, token_dim: int = 32
) -> StableVideoDiffusionPipeline:
    """A small randomly initialised SVD with the real architecture (for tests and the CPU default).

    UNet: 2 levels (32, 64 channels), 1 layer per block; VAE: temporal decoder with SVD's 8x
    downscale (4 levels of 32 channels); CLIP vision tower at 224 px with 32-px patches and a
    projection to `token_dim`; Euler scheduler with SVD's settings. ~1-2 M parameters.
    """
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
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
    scheduler = svd_scheduler()
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )


def init_tiny_model(folder: str | os.PathLike, seed: int = 0, sample_size: int = 8, num_frames: int = 8) -> Path:
    """Write a tiny random SVD pipeline folder with `save_pretrained` (safetensors weights)."""
    out = Path(folder)
    build_tiny_pipeline(seed=seed, sample_size=sample_size, num_frames=num_frames).save_pretrained(
        out, safe_serialization=True
    )
    return out
