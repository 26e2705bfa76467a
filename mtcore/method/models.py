"""Loading image-to-video pipelines (Stable Video Diffusion, Wan I2V) for inversion and transfer.

Every model, real or toy, goes through `StableVideoDiffusionPipeline.from_pretrained` (a local
folder or a hub id + revision); its identity comes from `mtcore.method.identity`. The SVD building
blocks and tiny random pipelines for tests live in `mtcore.method.svd`.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

from mtcore.method.config import Config, resolve
from mtcore.method.family import SVD, WAN_I2V, family_of_class, family_of_folder
from mtcore.errors import InputError
from mtcore.io.locations import is_url
from mtcore.method.identity import DEFAULT_MODEL, is_local, locate_model, model_identity
from mtcore.method.routing import MotionRouting


@dataclass
class SVDModel:
    """A loaded pipeline with motion routing installed, on one device and dtype."""

    pipe: StableVideoDiffusionPipeline
    """The frozen diffusers pipeline (UNet, VAE, CLIP image encoder, scheduler)."""
    model_id: str
    """Identity recorded in embeddings, keys and catalogs ("local:<sha256>" or "hub:<id>@<rev>")."""
    routing: MotionRouting
    """Routes a (F + 1) x N motion embedding to the UNet's cross-attention layers."""
    device: torch.device
    """Where the pipeline's weights are."""
    dtype: torch.dtype
    """The UNet's compute dtype (float32 on CPU, float16 or bfloat16 on GPUs)."""
    family: str = SVD
    """The model family (mtcore.method.family): this class implements "svd"."""

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

    def resolve(self, cfg: Config, num_frames: int | None = None) -> Config:
        """`cfg` with unset frame count and size taken from `num_frames` (if given) or the model's defaults.

        The one place a config meets a model: inversion, transfer, the pipeline and the CLI all call it.
        """
        return resolve(cfg, num_frames or self.default_num_frames, self.default_size)

    # -- the rest of mtcore.method.family.MotionModel ----------------------------------------------------
    def embedding_groups(self, num_frames: int) -> int:
        """G = F + 1: a group per frame (spatial cross-attention) and one shared (temporal)."""
        return num_frames + 1

    def invertible_modules(self) -> list:
        return [self.unet]

    def route(self, groups: int, tokens_per_group: int):
        """UNet calls inside this block read (F + 1) x N-token embeddings as motion embeddings."""
        return self.routing.route(groups - 1, tokens_per_group)

    # SVD's loss (EDM, v-prediction) and its inputs: mtcore.method.svd_loss
    def encode_reference(self, frames, config, generator, caption=None):
        from mtcore.method import svd_loss

        if caption:
            raise ValueError("SVD embeddings start from the reference's frames, not from a caption")
        return svd_loss.encode_reference(self, frames, config, generator)

    def draw(self, reference, batch, config, generator):
        from mtcore.method import svd_loss

        return svd_loss.draw(reference, batch, config, generator)

    def errors(self, references, draws, tokens, config, autocast):
        from mtcore.method import svd_loss

        return svd_loss.errors(self, references, draws, tokens, config, autocast)

    def eval_draws(self, reference, count, config):
        from mtcore.method import svd_loss

        return svd_loss.eval_draws(reference, count, config)

    def eval_loss(self, reference, tokens, draws, config) -> float:
        from mtcore.method import svd_loss

        return svd_loss.eval_loss(self, reference, tokens, draws, config)

    def sample(self, images, embedding, config, seeds, progress=None, guidance_passes=1):
        from mtcore.method.sampling import transfer

        return transfer(self, images, embedding, config, seeds, progress, guidance_passes)

    def image_embeddings(self, images) -> torch.Tensor:
        """(B, D) CLIP image embeddings, the stock pipeline's preprocessing (the appearance metrics)."""
        from mtcore.method.conditioning import clip_embed

        return clip_embed(self, images)


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU. Never touched at import time."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU by default, float16 on CUDA by default (bf16 for Wan: load_model); 'bf16'/'fp16'/'fp32' accepted."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise InputError("dtype", f"unknown dtype {name!r}; use one of {', '.join(table)}")
    return table[name]


def quiet_libraries() -> None:
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


def import_project_components(folder: str | os.PathLike) -> None:
    """Import the project's own component modules a local pipeline folder names in its model_index.json.

    diffusers loads a component class from a module only once that module is imported (it never imports
    a module a downloaded file names). The toy models name theirs (`["mtcore.toy.model", "ToyUNet"]`),
    so the modules under `mtcore.` that a folder names are imported here, and no other: loading stays
    closed to code outside the project, and the method package needs no import of the toy package.
    """
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        return
    try:
        entries = json.loads(index.read_text()).values()
    except (OSError, ValueError):
        return  # from_pretrained reports the unreadable file
    for entry in entries:
        if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0].startswith("mtcore."):
            importlib.import_module(entry[0])


def family_of(src: str, revision: str | None = None) -> str:
    """The family of a local folder (its model_index.json) or of a hub model (its model_index.json, fetched
    by diffusers' own `load_config`, which uses the hub cache)."""
    if is_local(src):
        return family_of_folder(src)
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(src, revision=revision)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise InputError(src, f"cannot read the hub model's model_index.json ({str(exc).splitlines()[0][:200]})") from None
    return family_of_class(str(index.get("_class_name", "")), src)


def _pretrained(cls, what: str, model, src: str, revision: str | None, dtype, device: torch.device):
    """`cls.from_pretrained` in `dtype` (one, or per component), moved to `device`, its progress bars off; a load
    error in one line."""
    try:
        pipe = cls.from_pretrained(src, revision=revision, dtype=dtype)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise InputError(model, f"cannot load {what} pipeline ({str(exc).splitlines()[0][:200]})") from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_model(
    model: str | os.PathLike | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool = False,
    compile_unet: bool = False,
) -> "SVDModel | WanModel":
    """Load a pipeline with `from_pretrained`, freeze it, install motion routing.

    The family is read from the folder's model_index.json (`mtcore.method.family`): an SVD folder gives an
    `SVDModel`, a Wan I2V folder a `mtcore.method.wan.WanModel`, any other class is refused in one line.

    `model`: a local pipeline folder or a hub id (None = the project's default CPU model); a
    relative folder is found from the current directory (`identity.locate_model`).
    Weights load directly in the target dtype (`from_pretrained(dtype=...)`, no float32 copy
    first) and are then moved to `device`. GPU options (each gives the same results to float
    rounding, a test checks): `channels_last` stores the UNet's conv weights NHWC (faster convs on
    tensor cores); `compile_unet` wraps the UNet in `torch.compile` (slow first call, then faster).
    Attention runs through PyTorch's SDPA (diffusers' AttnProcessor2_0, wrapped by the routing).
    """
    global _LOADS
    model = DEFAULT_MODEL if model is None else model
    if is_url(model):  # a bucket: this machine's copy, downloaded once (mtcore.io.modelcache)
        from mtcore.io.modelcache import fetch_model

        model = fetch_model(str(model))
    if not is_local(model):
        model, _ = locate_model(str(model), Path.cwd())
    dev = pick_device(str(device) if device is not None else None)
    model_id = model_identity(model, revision)
    src = str(Path(model).expanduser().resolve()) if is_local(model) else str(model)
    quiet_libraries()
    import_project_components(src)

    family = family_of(src, revision)
    # Wan is trained and released in bf16 (fp16 overflows in its attention); SVD's checkpoints are fp16
    dt = parse_dtype("bf16" if dtype is None and family == WAN_I2V and dev.type == "cuda" else dtype, dev)
    if family == WAN_I2V:
        from diffusers import WanImageToVideoPipeline

        from mtcore.method.wan import wrap

        # the VAE and CLIP in float32 as Wan's own examples load them (cast after loading, bits would be lost)
        parts = {"default": dt, "vae": torch.float32, "image_encoder": torch.float32}
        pipe = _pretrained(WanImageToVideoPipeline, "a Wan I2V", model, src, revision, parts, dev)
        wan = wrap(pipe, model_id, dev, dt, src if is_local(src) else None)
        if compile_unet:
            pipe.transformer = torch.compile(pipe.transformer)
        _LOADS += 1
        return wan
    pipe = _pretrained(StableVideoDiffusionPipeline, "an SVD", model, src, revision, dt, dev)
    for part in (pipe.unet, pipe.vae, pipe.image_encoder):
        part.requires_grad_(False)
        part.eval()
    routing = MotionRouting.install(pipe.unet)
    if channels_last:  # the 2-D convolutions (the temporal layers' weights are not 4-D)
        for module in pipe.unet.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    _LOADS += 1
    return SVDModel(pipe=pipe, model_id=model_id, routing=routing, device=dev, dtype=dt)


__all__ = ["SVDModel", "load_model", "import_project_components", "load_count", "pick_device", "parse_dtype"]
