"""Configuration of inversion and transfer: frozen dataclasses, one docstring per field.

All numeric constants of the method live here (EDM noise distribution, conditioning
noise augmentation, optimiser defaults, SVD micro-conditioning), so that a cache key
built from `asdict(config)` covers every knob that changes an artifact.
"""

from __future__ import annotations

import dataclasses
import math
import json
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mtcore.errors import InputError, ProblemsError, did_you_mean

# SVD's micro-conditioning, as the stock pipeline passes it (fps is stored as fps - 1).
SVD_FPS = 7
SVD_MOTION_BUCKET_ID = 127
SVD_NOISE_AUG_STRENGTH = 0.02


@dataclass(frozen=True)
class InversionConfig:
    """How a motion embedding is optimised on one reference video (motion-textual inversion)."""

    steps: int = 150
    """Optimisation steps (the unofficial re-implementation uses 5000 at 1024x576 on an A100). 150 with
    lr 3e-2 and 10 warm-up steps matched the earlier default of 300 at lr 1e-2 (benchmarks/bench_steps.py)."""
    tokens_per_frame: int = 5
    """N: tokens per group; the embedding has (F + 1) x N tokens (paper default 5)."""
    num_frames: int | None = None
    """F: frames read from the reference video; None = the UNet's `config.num_frames`."""
    height: int | None = None
    """Frame height in pixels; None = `unet.config.sample_size * vae_scale_factor`."""
    width: int | None = None
    """Frame width in pixels; None = `unet.config.sample_size * vae_scale_factor`."""
    frame_sampling: Literal["uniform", "consecutive"] = "uniform"
    """How F frames are taken from the reference: spread evenly over the whole clip, or the first F."""
    lr: float = 3e-2
    """AdamW learning rate (unofficial code: 1e-2; 3e-2 reaches the same motion in half the steps here)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up from 0 over this many steps (unofficial code: 500 of 5000)."""
    batch_size: int = 1
    """(sigma, noise) draws per optimisation step, all on the same reference video."""
    p_mean: float = 1.0
    """Mean of ln(sigma) for training noise levels (SVD fine-tuning: 0.7; unofficial MTI code: 2.8)."""
    p_std: float = 1.6
    """Std of ln(sigma) for training noise levels (unofficial MTI code: 1.6)."""
    cond_p_mean: float = -3.0
    """Mean of ln(sigma_cond), the noise augmentation of the conditioning (first) frame."""
    cond_p_std: float = 0.5
    """Std of ln(sigma_cond)."""
    init: Literal["reference_frames", "first_frame", "zeros"] = "reference_frames"
    """Initial embedding: each group f from the CLIP image embedding of reference frame f (temporal
    group from frame 0); or every group from frame 0; or zeros."""
    init_noise: float = 0.1
    """Gaussian noise added at init, as a fraction of the initial embedding's std."""
    fps: int = SVD_FPS
    """Micro-conditioning fps (passed to the UNet as fps - 1, as the stock pipeline does)."""
    motion_bucket_id: int = SVD_MOTION_BUCKET_ID
    """Micro-conditioning motion bucket id."""
    noise_aug_strength: float = SVD_NOISE_AUG_STRENGTH
    """Micro-conditioning noise-augmentation value fed to the UNet (fixed during inversion)."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass (saves memory on large models/GPUs)."""
    autocast_bf16: bool = False
    """Run the UNet under bf16 autocast (GPUs with bf16 support); the embedding stays float32."""
    seed: int = 0
    """Seed of every random draw of the inversion (init noise, sigmas, noise, augmentation)."""


@dataclass(frozen=True)
class TransferConfig:
    """How a video is sampled for a target image (stock SVD Euler sampling)."""

    steps: int = 25
    """Euler sampling steps (Karras sigmas, as SVD)."""
    num_frames: int | None = None
    """Frames to generate; None = the embedding's F (or the UNet's `config.num_frames` without one)."""
    height: int | None = None
    """Output height; None = `unet.config.sample_size * vae_scale_factor`."""
    width: int | None = None
    """Output width; None = `unet.config.sample_size * vae_scale_factor`."""
    min_guidance_scale: float = 1.0
    """Classifier-free guidance at the first frame (linear ramp to the last frame, as SVD)."""
    max_guidance_scale: float = 1.0
    """Guidance at the last frame. 1.0 disables guidance (unofficial MTI code); stock SVD uses 3.0."""
    fps: int = SVD_FPS
    """Micro-conditioning fps and the fps of the written mp4."""
    motion_bucket_id: int = SVD_MOTION_BUCKET_ID
    """Micro-conditioning motion bucket id."""
    noise_aug_strength: float = SVD_NOISE_AUG_STRENGTH
    """Noise added to the target image before VAE encoding (and fed to the UNet)."""
    decode_chunk_size: int | None = None
    """Frames decoded by the VAE at a time; None = all at once."""
    guidance_scale: float | None = None
    """Wan: classifier-free guidance against the stock negative prompt; None = the pipeline's 5.0. SVD uses
    min/max_guidance_scale instead. (Left out of keys and catalogs while None, so SVD's are unchanged.)"""


UNSET_OMITTED = frozenset({"guidance_scale"})
"""Fields added after the SVD keys were fixed: a config dict leaves them out while they are None."""


def parse_config(cls: type, data: Any, where: str) -> tuple[Any | None, list[str]]:
    """A config from a plain mapping, with every problem found: (config, []) or (None, problems).

    Unknown keys (with a did-you-mean), wrong types and out-of-range values are each one line,
    "<where>.<field>: <problem>"; `where` names the source, e.g. "manifests/demo.yaml: inversion".
    None means every default.
    """
    if data is None:
        return cls(), []
    if not isinstance(data, dict):
        return None, [f"{where}: must be a mapping of {cls.__name__} fields, got {data!r}"]
    names = [f.name for f in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)
    values, problems = {}, []
    for key, value in data.items():
        if key not in names:
            problems.append(f"{where}.{key}: unknown key" + did_you_mean(key, names))
            continue
        try:
            values[key] = _coerce(value, hints[key], f"{where}.{key}")
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        return None, problems
    config = cls(**values)
    problems = range_problems(config, where)
    return (None, problems) if problems else (config, [])


def config_from_dict(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """A config from a plain mapping; ProblemsError lists every unknown key, wrong type or bad value."""
    config, problems = parse_config(cls, data, where)
    if problems:
        raise ProblemsError(where, problems)
    return config


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in args:
            raise InputError(where, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(where, f"must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(where, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(where, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(where, f"must be a number, got {value!r}")
        return float(value)
    raise TypeError(f"unsupported config type {hint} at {where}")


def range_problems(cfg: InversionConfig | TransferConfig, where: str = "config") -> list[str]:
    """Every out-of-range field, one line each ("<where>.<field>: <problem>")."""
    problems = []
    positive = ["steps"]
    if isinstance(cfg, InversionConfig):
        positive += ["tokens_per_frame", "batch_size"]
        if cfg.warmup_steps < 0:
            problems.append(f"{where}.warmup_steps: must be >= 0")
    for name in positive:
        if getattr(cfg, name) < 1:
            problems.append(f"{where}.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.num_frames is not None and cfg.num_frames < 2:
        problems.append(f"{where}.num_frames: must be >= 2, got {cfg.num_frames}")
    scale = getattr(cfg, "guidance_scale", None)
    if scale is not None and not (math.isfinite(scale) and scale >= 0):
        problems.append(f"{where}.guidance_scale: must be a number >= 0 (1 = no guidance), got {scale}")
    for name in ("height", "width"):
        v = getattr(cfg, name)
        if v is not None and (v < 8 or v % 8):
            problems.append(f"{where}.{name}: must be a positive multiple of 8, got {v}")
    return problems


def validate_config(cfg: InversionConfig | TransferConfig, where: str = "config") -> None:
    """Range checks shared by the CLI, the manifest and the Python API; ProblemsError lists them all."""
    problems = range_problems(cfg, where)
    if problems:
        raise ProblemsError(where, problems)


Config = TypeVar("Config", InversionConfig, TransferConfig)


def resolve(cfg: Config, num_frames: int, size: tuple[int, int]) -> Config:
    """The config with its unset frame count and size filled in: (num_frames, (height, width))."""
    return dataclasses.replace(cfg, num_frames=cfg.num_frames or num_frames, height=cfg.height or size[0],
                               width=cfg.width or size[1])


def config_to_dict(cfg: InversionConfig | TransferConfig) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists) for metadata and cache keys."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()
            if not (v is None and k in UNSET_OMITTED)}


def config_json(cfg: InversionConfig | TransferConfig) -> str:
    """A config as canonical JSON (the catalogs' inversion_config / transfer_config columns)."""
    return json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))


__all__ = [
    "InversionConfig",
    "TransferConfig",
    "config_from_dict",
    "parse_config",
    "range_problems",
    "resolve",
    "config_to_dict",
    "config_json",
    "validate_config",
]
