"""Wan 2.x image-to-video (diffusers' WanImageToVideoPipeline) as a model family: loading, conditioning,
the tiny random pipelines for tests, and what the method needs of it (`mtcore.method.family.MotionModel`).

The mapping of motion-textual inversion onto Wan (docs/method.md has the full account):
- the motion embedding lives where the umT5 text embedding does (width `text_dim`), G = F' + 1 groups of
  N tokens, F' = (F - 1) / 4 + 1 latent frames (Wan's VAE compresses time 4x, so F must be 4k + 1);
- routing: `mtcore.method.wan_routing` (latent frame f sees group f and the shared group);
- the loss: Wan's flow-matching objective (`mtcore.method.wan_inversion`);
- sampling: the stock pipeline's loop, negative prompt ("") and guidance (`mtcore.method.wan_sampling`).
Wan 2.2's second transformer (`transformer_2`, `boundary_ratio`) is routed too and serves the low-noise
timesteps, as in the pipeline; Wan 2.2 TI2V (`expand_timesteps`) is refused in one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from mtcore.errors import InputError
from mtcore.method.config import Config, resolve
from mtcore.method.family import WAN_I2V, latent_frames
from mtcore.method.wan_routing import TEXT_LENGTH, WanMotionRouting

STOCK_FRAMES = 81
"""Frames of a Wan 2.1 I2V video when nothing says otherwise (the pipeline's default)."""
STOCK_SIZE = (480, 832)
"""(height, width) of Wan2.1-I2V-14B-480P (the pipeline's default)."""
DEFAULTS_FILE = "motion_transfer.json"
"""Optional file in a Wan folder with its native {"num_frames", "height", "width"} (the tiny folders have one)."""


@dataclass
class WanModel:
    """A loaded Wan I2V pipeline with motion routing installed, on one device and dtype."""

    pipe: object
    """The frozen WanImageToVideoPipeline."""
    model_id: str
    """Identity ("wan-i2v:local:<sha256>" or "hub:<id>@<rev>")."""
    routing: WanMotionRouting
    device: torch.device
    dtype: torch.dtype
    """The transformer's (and umT5's) dtype; the VAE and CLIP load in float32 (as Wan's own examples load them)."""
    native: tuple[int, tuple[int, int]] = (STOCK_FRAMES, STOCK_SIZE)
    """(frames, (height, width)) when a config leaves them unset."""
    family: str = WAN_I2V
    _negative: torch.Tensor | None = field(default=None, repr=False)

    @property
    def transformer(self):
        return self.pipe.transformer

    def invertible_modules(self) -> list:
        return [t for t in (self.pipe.transformer, self.pipe.transformer_2) if t is not None]

    @property
    def token_dim(self) -> int:
        """D: umT5's width (4096 for Wan 2.x)."""
        return int(self.invertible_modules()[0].config.text_dim)

    @property
    def default_num_frames(self) -> int:
        return self.native[0]

    @property
    def default_size(self) -> tuple[int, int]:
        return self.native[1]

    @property
    def temporal_factor(self) -> int:
        return int(self.pipe.vae_scale_factor_temporal)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's 8x times the transformer's 2x patches."""
        return int(self.pipe.vae_scale_factor_spatial * self.invertible_modules()[0].config.patch_size[1])

    def latent_frames(self, num_frames: int) -> int:
        return latent_frames(num_frames, self.temporal_factor)

    def embedding_groups(self, num_frames: int) -> int:
        return self.latent_frames(num_frames) + 1

    def resolve(self, cfg: Config, num_frames: int | None = None) -> Config:
        """`cfg` with frames and size filled in; frame counts other than 4k + 1 and sizes off the grid are refused."""
        full = resolve(cfg, num_frames or self.default_num_frames, self.default_size)
        k = self.temporal_factor
        if (full.num_frames - 1) % k:
            raise InputError("num_frames", f"Wan's VAE compresses time {k}x: a video has {k}k + 1 frames (5, 9, ..., 81), "
                                           f"got {full.num_frames}")
        m = self.size_multiple
        if full.height % m or full.width % m:
            raise InputError("height/width", f"Wan needs multiples of {m} pixels, got {full.height}x{full.width}")
        n = getattr(full, "tokens_per_frame", 1)
        if 2 * n > TEXT_LENGTH - 1:
            raise InputError("tokens_per_frame", f"a Wan frame sees 2N of its {TEXT_LENGTH} text tokens: N must be at "
                                                 f"most {(TEXT_LENGTH - 1) // 2}, got {n}")
        return full

    # -- conditioning, as the pipeline builds it --------------------------------------------------------
    @torch.no_grad()
    def prompt_tokens(self, text: str) -> torch.Tensor:
        """(512, D) umT5 embedding of a prompt as the pipeline encodes it (its tokens, then zeros)."""
        emb, _ = self.pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=TEXT_LENGTH,
                                         device=self.device, dtype=torch.float32)
        return emb[0]

    def negative(self, batch: int) -> torch.Tensor:
        """(B, 512, D) the stock negative prompt's embedding (the pipeline's default, "")."""
        if self._negative is None:
            self._negative = self.prompt_tokens("")
        return self._negative[None].expand(batch, -1, -1).to(self.dtype)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, G, N, D) tokens -> (B, G*N + 1, D): the groups, then the zero token the padding projects from."""
        flat = tokens.flatten(1, 2)
        return torch.cat([flat, flat.new_zeros(flat.shape[0], 1, flat.shape[2])], dim=1)

    @torch.no_grad()
    def image_context(self, images: list[Image.Image]) -> torch.Tensor | None:
        """(B, L, D_img) CLIP image tokens (Wan 2.1: penultimate layer), or None for a model without them."""
        if self.pipe.image_encoder is None or self.invertible_modules()[0].config.image_dim is None:
            return None
        return self.pipe.encode_image(images, self.device).to(self.dtype)

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor | None:
        """(B, D') pooled CLIP image embeddings (the appearance metrics), or None without an image encoder."""
        if self.pipe.image_encoder is None:
            return None
        inputs = self.pipe.image_processor(images=images, return_tensors="pt").to(self.device)
        return self.pipe.image_encoder(**inputs).pooler_output

    @torch.no_grad()
    def condition(self, image: torch.Tensor, num_frames: int) -> torch.Tensor:
        """For (B, 3, H, W) first frames in [-1, 1]: (mask, latent) stacked as the pipeline's `condition`,
        (B, 4 + C, F', h, w), built by the pipeline's own prepare_latents one image at a time."""
        vae = self.pipe.vae
        out = []
        for one in image:
            h, w = one.shape[-2:]
            shape = (1, vae.config.z_dim, self.latent_frames(num_frames), h // self.pipe.vae_scale_factor_spatial,
                     w // self.pipe.vae_scale_factor_spatial)
            zeros = torch.zeros(shape, device=self.device)  # given latents: prepare_latents draws nothing
            _, cond = self.pipe.prepare_latents(one[None].to(self.device, torch.float32), 1, vae.config.z_dim, h, w,
                                                num_frames, torch.float32, self.device, None, zeros)
            out.append(cond)
        return torch.cat(out)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.pipe.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def video_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """(1, C, F', h, w) normalised latents of (F, 3, H, W) frames in [-1, 1]: the x0 of the loss."""
        video = frames.permute(1, 0, 2, 3)[None].to(self.device, self.pipe.vae.dtype)  # (1, 3, F, H, W)
        lat = self.pipe.vae.encode(video).latent_dist.mode().float()
        mean, std = self._latent_stats(lat)
        return (lat - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [0, 1] from normalised latents, as the pipeline decodes them."""
        lat = latents.to(self.device, self.pipe.vae.dtype)
        mean, std = self._latent_stats(lat)
        video = self.pipe.vae.decode(lat * std + mean, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type="pt")

    def velocity(self, noisy: torch.Tensor, condition: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                 image: torch.Tensor | None) -> torch.Tensor:
        """The transformer's flow prediction for (B, C, F', h, w) latents at timesteps (B,) in [0, 1000]; with
        Wan 2.2's two experts, each timestep goes to the one the pipeline would use."""
        experts = self.invertible_modules()
        x = torch.cat([noisy, condition.to(noisy.dtype)], dim=1).to(self.dtype)
        ratio = self.pipe.config.boundary_ratio
        if len(experts) == 1 or ratio is None:
            return self._call(experts[0], x, timestep, text, image)
        high = timestep >= ratio * self.pipe.scheduler.config.num_train_timesteps
        out = None
        for expert, rows in ((experts[0], high), (experts[1], ~high)):
            if rows.any():
                part = self._call(expert, x[rows], timestep[rows], text[rows], None if image is None else image[rows])
                if out is None:  # in the experts' output dtype (bf16 under autocast)
                    out = part.new_empty((noisy.shape[0], *part.shape[1:]))
                out[rows] = part.to(out.dtype)
        return out

    def _call(self, transformer, x, timestep, text, image):
        return transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=text.to(self.dtype),
                           encoder_hidden_states_image=image, return_dict=False)[0]

    def route(self, groups: int, tokens_per_group: int):
        """Transformer calls inside this block whose text is a (G x N)-token motion embedding are routed."""
        return self.routing.route(groups, tokens_per_group)

    # Wan's loss (flow matching) and its inputs: mtcore.method.wan_inversion
    def encode_reference(self, frames, config, generator, caption=None):
        from mtcore.method import wan_inversion

        return wan_inversion.encode_reference(self, frames, config, generator, caption)

    def draw(self, reference, batch, config, generator):
        from mtcore.method import wan_inversion

        return wan_inversion.draw(self, reference, batch, generator)

    def errors(self, references, draws, tokens, config, autocast):
        from mtcore.method import wan_inversion

        return wan_inversion.errors(self, references, draws, tokens, autocast)

    def eval_draws(self, reference, count, config):
        from mtcore.method import wan_inversion

        return wan_inversion.eval_draws(self, reference, count, config)

    def eval_loss(self, reference, tokens, draws, config) -> float:
        from mtcore.method import wan_inversion

        return wan_inversion.eval_loss(self, reference, tokens, draws)

    def sample(self, images, embedding, config, seeds, progress=None, guidance_passes=1):
        from mtcore.method.wan_sampling import sample

        return sample(self, images, embedding, config, seeds, progress)


def native_of(folder: str | os.PathLike | None) -> tuple[int, tuple[int, int]]:
    """(frames, (height, width)) a Wan folder declares in motion_transfer.json, else the stock 81 x 480x832."""
    if folder is not None:
        path = Path(folder) / DEFAULTS_FILE
        if path.is_file():
            data = json.loads(path.read_text())
            return int(data["num_frames"]), (int(data["height"]), int(data["width"]))
    return STOCK_FRAMES, STOCK_SIZE


def wrap(pipe, model_id: str, device: torch.device, dtype: torch.dtype, folder: str | None) -> WanModel:
    """Freeze a loaded WanImageToVideoPipeline and install the routing (load_model's Wan branch)."""
    if pipe.config.expand_timesteps:
        raise InputError(model_id, "Wan 2.2 TI2V (expand_timesteps) is not supported: its first frame is a "
                                   "timestep mask, not a condition latent; supported: Wan 2.1 / 2.2 I2V")
    for part in (pipe.transformer, pipe.transformer_2, pipe.vae, pipe.text_encoder, pipe.image_encoder):
        if part is not None:
            part.requires_grad_(False)
            part.eval()
    routing = WanMotionRouting.install(*[t for t in (pipe.transformer, pipe.transformer_2) if t is not None])
    return WanModel(pipe=pipe, model_id=model_id, routing=routing, device=device, dtype=dtype, native=native_of(folder))


def build_tiny_wan(seed: int = 0, text_dim: int = 32, image_size: int = 32, version: str = "2.1"):
    """A small randomly initialised Wan I2V pipeline with the real architecture (tests, CPU trials).

    Transformer: 2 blocks of 2 heads x 12, patches 1x2x2, CLIP image tokens; VAE: Wan's 3-D causal VAE
    (8x space, 4x time) at base width 3; umT5 encoder of 2 layers; a word-level tokenizer built here (no
    download); UniPC flow-matching scheduler with the 480P shift 3. ~0.1 M parameters.
    `version` "2.2": Wan 2.2 I2V's layout instead: no CLIP image encoder, two transformers (high-noise
    `transformer`, low-noise `transformer_2`) switched at boundary_ratio 0.9.
    """
    if version not in ("2.1", "2.2"):
        raise InputError("--wan-version", f"must be 2.1 or 2.2, got {version!r}")
    two = version == "2.2"
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from mtcore.method.svd import CLIPImageProcessor

    words = "a an the person cat dog hand waves walks runs jumps turns left right up down camera pans zooms in out"
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words.split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=text_dim, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8))
    image_encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                     image_size=image_size, patch_size=8, intermediate_size=32))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    def transformer():
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                     in_channels=36, out_channels=16, text_dim=text_dim, freq_dim=256, ffn_dim=32,
                                     num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                     rope_max_seq_len=32, image_dim=None if two else 16,
                                     added_kv_proj_dim=None if two else 24)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    if two:
        return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                       transformer=transformer(), transformer_2=transformer(), boundary_ratio=0.9)
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                   image_processor=CLIPImageProcessor(crop_size=image_size, size=image_size),
                                   image_encoder=image_encoder, transformer=transformer())


def init_tiny_wan(folder: str | os.PathLike, seed: int = 0, size: int = 32, frames: int = 9, version: str = "2.1") -> Path:
    """Write a tiny random Wan I2V folder (save_pretrained, safetensors) with its native frames and size."""
    if (frames - 1) % 4:
        raise InputError("--frames", f"Wan videos have 4k + 1 frames (5, 9, 13, ...), got {frames}")
    if size % 16 or size < 16:
        raise InputError("--size", f"Wan needs a multiple of 16 pixels, got {size}")
    out = Path(folder)
    build_tiny_wan(seed=seed, version=version).save_pretrained(out, safe_serialization=True)
    (out / DEFAULTS_FILE).write_text(json.dumps({"num_frames": frames, "height": size, "width": size}) + "\n")
    return out


__all__ = ["WanModel", "wrap", "native_of", "build_tiny_wan", "init_tiny_wan"]
