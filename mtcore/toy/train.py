"""Training the toy image-to-video model on the toy world, resumable from its last checkpoint.

Objective: SVD's EDM v-prediction loss (the same `edm_denoise` / `weighted_loss` inversion uses),
with gradients into the UNet. Appearance comes from the first-frame latent (concatenated, as in
SVD); motion only from cross-attention: (F + 1) motion tokens (`tokens.motion_tokens`), routed
like a motion embedding with N = 1, replaced by SVD's zero embedding with probability
`null_dropout`. Noise levels: a `focus_share` of them with ln(sigma) ~ N(focus_mean, focus_std^2),
where the motion input matters, the rest ~ N(base_mean, base_std^2) for appearance detail.

Checkpoints (safetensors + JSON, no pickle) hold the live and EMA weights, AdamW's moments, the
step and the loss history; each step's data and noise derive from (seed, step), so a resumed run
continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mtcore.method.conditioning import time_ids
from mtcore.method.config import SVD_FPS, SVD_MOTION_BUCKET_ID, SVD_NOISE_AUG_STRENGTH
from mtcore.io.fileio import atomic_write, write_text
from mtcore.io.frames import uint8_to_signed
from mtcore.method.svd_loss import edm_denoise, weighted_loss
from mtcore.method.models import SVDModel
from mtcore.method.routing import MotionRouting
from mtcore.toy import photos
from mtcore.toy.model import build_toy_pipeline
from mtcore.toy.scenes import SceneConfig, sample_scene
from mtcore.toy.tokens import scene_tokens


@dataclass(frozen=True)
class ToyTrainConfig:
    """Recipe of the toy model (defaults = how the shipped weights were made)."""

    size: int = 32
    """Frame side in pixels."""
    frames: int = 8
    """Frames per clip, F."""
    factor: int = 4
    """PixelShuffleVAE factor: a (3, S, S) frame is a (3 * factor^2, S / factor, S / factor) latent."""
    block_out_channels: tuple[int, ...] = (64, 96)
    """UNet channels per level."""
    num_attention_heads: tuple[int, ...] = (4, 6)
    """UNet attention heads per level (16 channels each)."""
    circular_padding: bool = False
    """Circular 2-D padding (the original wrap-around world) or zeros (photos do not wrap)."""
    token_dim: int = 32
    """Width D of the motion tokens and of cross-attention."""
    family_weights: tuple[float, float, float] = (0.3, 0.4, 0.3)
    """Share of toy, photo_sprite and camera scenes (mtcore.toy.scenes)."""
    curriculum_steps: int = 1500
    """For this many first steps the mix is `curriculum_weights`: mostly the easy-looking toy world, so
    the model learns to follow its motion input before photos' appearance takes its capacity (a first
    run on the full mix from step 0 had not used the motion input at all after 1,400 steps)."""
    curriculum_weights: tuple[float, float, float] = (0.7, 0.2, 0.1)
    """The mix during the curriculum."""
    batch_size: int = 16
    """Clips per step."""
    lr: float = 2e-3
    """AdamW learning rate after warm-up."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    ema_decay: float = 0.995
    """Weight EMA decay (the EMA weights are the ones shipped)."""
    null_dropout: float = 0.1
    """Probability that a clip's motion tokens are replaced by the zero (unconditional) embedding."""
    focus_share: float = 0.75
    """Share of noise levels drawn from the focus distribution."""
    focus_mean: float = 1.0
    """Mean of ln(sigma), focus distribution (the motion input matters at sigma ~2-20)."""
    focus_std: float = 1.2
    """Std of ln(sigma), focus distribution."""
    base_mean: float = -0.5
    """Mean of ln(sigma), the rest."""
    base_std: float = 1.4
    """Std of ln(sigma), the rest."""
    cond_p_mean: float = -3.0
    """Mean of ln(sigma_cond): noise augmentation of the conditioning frame (as inversion)."""
    cond_p_std: float = 0.5
    """Std of ln(sigma_cond)."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""
    eval_every: int = 100
    """Steps between evaluations of the loss gap (true vs null motion tokens) on a fixed batch."""
    seed: int = 0
    """Seed of the initial weights and of every step's data and noise."""


def scene_config(cfg: ToyTrainConfig, held_out: bool = False, step: int | None = None) -> SceneConfig:
    """The scenes training draws at `step` (training photos), or the full mix on held-out photos."""
    weights = cfg.curriculum_weights if step is not None and step < cfg.curriculum_steps else cfg.family_weights
    return SceneConfig(size=cfg.size, frames=cfg.frames, family_weights=weights,
                       photos=photos.HELD_OUT if held_out else photos.TRAIN)


def scene_batch(cfg: ToyTrainConfig, rng: np.random.Generator, n: int, held_out: bool = False,
                step: int | None = None):
    """(n, F, 3, S, S) frames in [-1, 1], (n, F+1, D) motion tokens, and the scenes."""
    scfg = scene_config(cfg, held_out, step)
    scenes = [sample_scene(rng, scfg) for _ in range(n)]
    frames = torch.stack([uint8_to_signed(s.frames) for s in scenes])  # (n, F, 3, S, S)
    tokens = torch.from_numpy(np.stack([
        scene_tokens(s.displacements, s.log_zoom, s.kind_index, s.wrap, cfg.size, cfg.token_dim) for s in scenes
    ]))
    return frames, tokens, scenes


class Trainer:
    """Holds the model, EMA copy and optimiser; `train_for` runs steps and checkpoints."""

    def __init__(self, cfg: ToyTrainConfig, workdir: str | Path):
        self.cfg = cfg
        self.dir = Path(workdir)
        self.pipe = build_toy_pipeline(seed=cfg.seed, size=cfg.size, frames=cfg.frames, token_dim=cfg.token_dim,
                                       factor=cfg.factor, block_out_channels=cfg.block_out_channels,
                                       num_attention_heads=cfg.num_attention_heads,
                                       circular_padding=cfg.circular_padding)
        self.unet = self.pipe.unet
        self.unet.train()
        self.ema = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.routing = MotionRouting.install(self.unet)
        self.model = SVDModel(self.pipe, "training", self.routing, torch.device("cpu"), torch.float32)
        self.step = 0
        self.history: list[dict] = []  # {"step", "loss", "seconds"} per step, evals interleaved
        self.ids = self._time_ids(cfg.batch_size)
        # a fixed held-out batch (held-out photos, its own seed) for the loss gap
        self.eval_frames, self.eval_tokens, _ = scene_batch(cfg, np.random.default_rng([cfg.seed, 10**9]), 32, True)
        if (self.dir / "state.json").is_file():
            self.load()

    # ---------------------------------------------------------------- one step
    def _time_ids(self, batch: int) -> torch.Tensor:
        # The stock micro-conditioning: the toy model is trained with SVD's defaults.
        return time_ids(self.model, SVD_FPS, SVD_MOTION_BUCKET_ID, SVD_NOISE_AUG_STRENGTH, batch)

    def to_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, S, S) in [-1, 1] -> (B, F, 12, S/2, S/2) with the model's own VAE (pixel unshuffle)."""
        b, f = frames.shape[:2]
        return self.pipe.vae.encode(frames.flatten(0, 1)).latent_dist.mode().unflatten(0, (b, f))

    def _draws(self, g: torch.Generator, b: int) -> torch.Tensor:
        c = self.cfg
        focus = torch.rand(b, generator=g) < c.focus_share
        z = torch.randn(b, generator=g)
        return torch.where(focus, c.focus_mean + c.focus_std * z, c.base_mean + c.base_std * z).exp()

    def loss_on(self, frames, tokens, sigma, noise, cond_noise, ids) -> torch.Tensor:
        x0 = self.to_latents(frames)
        cond = self.pipe.vae.encode(frames[:, 0] + cond_noise).latent_dist.mode()
        with self.routing.route(self.cfg.frames, 1):
            d = edm_denoise(self.model, x0 + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, cond, tokens, ids)
        return weighted_loss(d, x0, sigma)

    def batch_for(self, step: int):
        """The scenes of a step: (frames, tokens), a pure function of (seed, step)."""
        frames, tokens, _ = scene_batch(self.cfg, np.random.default_rng([self.cfg.seed, step]), self.cfg.batch_size,
                                        step=step)
        return frames, tokens

    def train_step(self, batch=None) -> float:
        """One optimisation step on `batch` (default: `batch_for(self.step)`); its loss."""
        c = self.cfg
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + self.step)
        frames, tokens = batch if batch is not None else self.batch_for(self.step)
        keep = (torch.rand(c.batch_size, generator=g) >= c.null_dropout).float().view(-1, 1, 1)
        tokens = tokens * keep  # dropped clips get SVD's zero embedding
        sigma = self._draws(g, c.batch_size)
        noise = torch.randn(self.to_latents(frames).shape, generator=g)
        cond_sigma = (c.cond_p_mean + c.cond_p_std * torch.randn(c.batch_size, generator=g)).exp()
        cond_noise = cond_sigma.view(-1, 1, 1, 1) * torch.randn(frames[:, 0].shape, generator=g)
        for group in self.opt.param_groups:
            group["lr"] = c.lr * min(1.0, (self.step + 1) / max(1, c.warmup_steps))
        loss = self.loss_on(frames, tokens, sigma, noise, cond_noise, self.ids)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), c.grad_clip)
        self.opt.step()
        decay = min(c.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, v in self.unet.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.ema[k].copy_(v)
        self.step += 1
        return loss.item()

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Inside the block the UNet holds the EMA weights (eval mode); the live ones come back after."""
        live = {k: v.clone() for k, v in self.unet.state_dict().items()}
        self.unet.load_state_dict(self.ema)
        self.unet.eval()
        try:
            yield
        finally:
            self.unet.load_state_dict(live)
            self.unet.train()

    @torch.no_grad()
    def loss_gap(self, sigmas=(0.5, 2.0, 5.0, 10.0), frames: torch.Tensor | None = None,
                 tokens: torch.Tensor | None = None) -> dict[str, float]:
        """Loss of the EMA model with true vs null motion tokens per sigma, on `frames` / `tokens`
        (default: the fixed held-out batch)."""
        frames = self.eval_frames if frames is None else frames
        tokens = self.eval_tokens if tokens is None else tokens
        with self.ema_weights():
            return self._loss_gap(sigmas, frames, tokens)

    def _loss_gap(self, sigmas, frames: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
        g = torch.Generator().manual_seed(123)
        n = len(frames)
        ids = self._time_ids(n)
        out = {}
        for s in sigmas:
            sigma = torch.full((n,), s)
            noise = torch.randn(self.to_latents(frames).shape, generator=g)
            zero_cond = torch.zeros_like(frames[:, 0])
            true = self.loss_on(frames, tokens, sigma, noise, zero_cond, ids).item()
            null = self.loss_on(frames, torch.zeros_like(tokens), sigma, noise, zero_cond, ids).item()
            out[f"true@{s:g}"], out[f"null@{s:g}"] = true, null
        return out

    # ---------------------------------------------------------------- run, save, load
    def train_for(self, seconds: float, max_steps: int | None = None,
                  progress: Callable[[int, float, dict | None], None] | None = None) -> None:
        """Train until `seconds` pass or `max_steps` total steps; checkpoint at the end and every N steps."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and (max_steps is None or self.step < max_steps):
            t0 = time.perf_counter()
            loss = self.train_step()
            self.history.append({"step": self.step, "loss": loss, "seconds": time.perf_counter() - t0})
            ev = None
            if self.step % self.cfg.eval_every == 0:
                ev = self.loss_gap()
                self.history.append({"step": self.step, "eval": ev})
            if self.step % self.cfg.checkpoint_every == 0:
                self.save()
            if progress is not None:
                progress(self.step, loss, ev)
        self.save()

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "live.safetensors", lambda p: save_file(_contiguous(self.unet.state_dict()), str(p)))
        atomic_write(self.dir / "ema.safetensors", lambda p: save_file(_contiguous(self.ema), str(p)))
        moments = {}
        for i, p in enumerate(self.unet.parameters()):
            st = self.opt.state.get(p)
            if st:
                moments[f"{i}.exp_avg"], moments[f"{i}.exp_avg_sq"] = st["exp_avg"], st["exp_avg_sq"]
                moments[f"{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
        atomic_write(self.dir / "optim.safetensors", lambda p: save_file(_contiguous(moments), str(p)))
        state = {"step": self.step, "config": asdict(self.cfg), "history": self.history}
        write_text(self.dir / "state.json", json.dumps(state))

    def load(self) -> None:
        state = json.loads((self.dir / "state.json").read_text())
        if state["config"] != json.loads(json.dumps(asdict(self.cfg))):  # tuples come back from JSON as lists
            raise ValueError(f"{self.dir}: checkpoint was made with another config; use another folder")
        self.unet.load_state_dict(load_file(str(self.dir / "live.safetensors")))
        self.ema = load_file(str(self.dir / "ema.safetensors"))
        moments = load_file(str(self.dir / "optim.safetensors"))
        for i, p in enumerate(self.unet.parameters()):
            if f"{i}.exp_avg" in moments:
                self.opt.state[p] = {"step": moments[f"{i}.step"].reshape(()).float(),
                                     "exp_avg": moments[f"{i}.exp_avg"], "exp_avg_sq": moments[f"{i}.exp_avg_sq"]}
        self.step, self.history = state["step"], state["history"]

    def export(self, folder: str | Path) -> Path:
        """Save the EMA weights as a complete StableVideoDiffusionPipeline folder, with toy_world.json saying
        what the model was trained on (mtcore.toy.evaluate reads it)."""
        from mtcore.toy.evaluate import WORLD_FILE
        from mtcore.toy.scenes import FAMILIES

        with self.ema_weights():
            self.pipe.save_pretrained(folder, safe_serialization=True)
        world = {"families": [f for f, w in zip(FAMILIES, self.cfg.family_weights) if w > 0], "tokens": "scene",
                 "size": self.cfg.size, "frames": self.cfg.frames, "step": self.step}
        write_text(Path(folder) / WORLD_FILE, json.dumps(world, indent=2))
        return Path(folder)


def _contiguous(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in d.items()}


def relative_gap(ev: dict[str, float], sigma: str) -> float:
    """1 - loss(true motion) / loss(null) at `sigma` (as "2", "10") of a `loss_gap` result: the share of
    the loss the motion input explains."""
    return 1 - ev[f"true@{sigma}"] / ev[f"null@{sigma}"]


def plot_history(history: list[dict], path: str | Path) -> Path:
    """Loss curve (smoothed training loss) and the held-out true-vs-null loss gap, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history if "loss" in h])
    loss = np.array([h["loss"] for h in history if "loss" in h])
    evals = [h for h in history if "eval" in h]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if len(loss):
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        a.plot(steps[: len(smooth)] + k // 2, smooth)
        a.set_yscale("log")
    a.set(title="training loss (moving average)", xlabel="step")
    for s in ("2", "5", "10"):
        xs = [e["step"] for e in evals]
        gap = [relative_gap(e["eval"], s) for e in evals]
        b.plot(xs, gap, label=f"sigma {s}")
    b.set(title="held-out loss gap: 1 - loss(true motion) / loss(null)", xlabel="step")
    b.axhline(0, color="grey", lw=0.5)
    b.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def seconds_per_step(history: list[dict]) -> float:
    recent = [h["seconds"] for h in history if "seconds" in h][-50:]
    return float(np.median(recent)) if recent else math.nan
