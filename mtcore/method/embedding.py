"""The motion embedding: (F + 1) x N tokens of width D, its initialisation and its file.

Files are safetensors (no pickle) holding one tensor "motion_embedding" of shape (F + 1, N, D)
in float32 and string metadata: format, model identity, F, N, D, the inversion config (JSON),
the reference video's sha256 and the code version. Loading checks model and shape.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from mtcore import CODE_VERSION
from mtcore.errors import EmbeddingMismatch, InputError
from mtcore.io.fileio import atomic_write, require_file
from mtcore.method.family import SVD, groups_for

FORMAT = "motion-transfer/motion-embedding"
FORMAT_VERSION = "1"
TENSOR_NAME = "motion_embedding"


@dataclass
class MotionEmbedding:
    """Tokens (F + 1, N, D): groups 0..F-1 feed frame f's spatial cross-attention, group F the temporal one."""

    tokens: torch.Tensor
    """(F + 1, N, D) float32; F frames, N tokens per frame, D the UNet's cross-attention width."""
    model_id: str = ""
    """Identity of the model it was inverted on; loading for another model is refused."""
    reference_sha256: str = ""
    """sha256 of the reference video's bytes (provenance)."""
    inversion_config: dict = field(default_factory=dict)
    """The InversionConfig it was made with, as a plain dict."""
    code_version: str = CODE_VERSION
    """mtcore.CODE_VERSION of the code that made it."""
    family: str = SVD
    """The model family it was made on (mtcore.method.family); applying it to another is refused."""
    video_frames: int | None = None
    """F, the video frames, where the groups are not F + 1 (Wan: a group per latent frame); None = G - 1."""

    @property
    def num_frames(self) -> int:
        """F: frames of the videos it makes."""
        return self.video_frames if self.video_frames is not None else self.tokens.shape[0] - 1

    @property
    def groups(self) -> int:
        """G: token groups (SVD: F + 1; Wan: F' + 1 for F' latent frames)."""
        return self.tokens.shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.tokens.shape[1]

    @property
    def token_dim(self) -> int:
        return self.tokens.shape[2]

    def as_hidden_states(self, batch: int, device, dtype) -> torch.Tensor:
        """(batch, (F + 1) * N, D): the UNet's `encoder_hidden_states` for a routed call."""
        flat = self.tokens.reshape(1, -1, self.token_dim).to(device=device, dtype=dtype)
        return flat.expand(batch, -1, -1)

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "num_frames": str(self.num_frames),
            "tokens_per_frame": str(self.tokens_per_frame),
            "token_dim": str(self.token_dim),
            "inversion_config": json.dumps(self.inversion_config, sort_keys=True),
            "reference_sha256": self.reference_sha256,
            "code_version": self.code_version,
            # SVD files predate families: they carry none, so their bytes are unchanged
            **({"family": self.family} if self.family != SVD else {}),
        }


def initial_tokens(
    frame_embeds: torch.Tensor, tokens_per_frame: int, mode: str, noise: float, generator: torch.Generator
) -> torch.Tensor:
    """Initial (F + 1, N, D) tokens from the CLIP image embeddings (F, D) of the reference frames.

    "reference_frames": group f = embedding of frame f repeated N times, group F = frame 0
    (the unofficial re-implementation's choice); "first_frame": every group = frame 0;
    "zeros": all zero. Then Gaussian noise at `noise` x the embeddings' std is added.
    """
    f, d = frame_embeds.shape
    if mode == "reference_frames":
        groups = torch.cat([frame_embeds, frame_embeds[:1]], dim=0)  # (F+1, D)
    elif mode == "first_frame":
        groups = frame_embeds[:1].expand(f + 1, d)
    elif mode == "zeros":
        groups = torch.zeros(f + 1, d, dtype=frame_embeds.dtype, device=frame_embeds.device)
    else:
        raise ValueError(f"unknown init mode {mode!r}")
    tokens = groups[:, None, :].expand(f + 1, tokens_per_frame, d).clone()
    if noise > 0:
        jitter = torch.randn(tokens.shape, generator=generator, dtype=torch.float32)
        tokens += noise * frame_embeds.float().std() * jitter.to(tokens.device, tokens.dtype)
    return tokens


def save_embedding(emb: MotionEmbedding, path: str | os.PathLike) -> Path:
    """Write the embedding file atomically (written aside, then renamed)."""
    tensors = {TENSOR_NAME: emb.tokens.detach().float().cpu().contiguous()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=emb.metadata()))


def load_embedding(
    path: str | os.PathLike,
    model_id: str | None = None,
    num_frames: int | None = None,
    token_dim: int | None = None,
    family: str | None = None,
) -> MotionEmbedding:
    """Read an embedding file; refuse one made for another model family, model, frame count or token width."""
    p = require_file(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(p, f"not a safetensors file ({str(exc).splitlines()[0][:120]})") from None
    if meta.get("format") != FORMAT or TENSOR_NAME not in tensors:
        raise InputError(p, "not a motion embedding file (missing format metadata or tensor)")
    tokens = tensors[TENSOR_NAME]
    if tokens.dtype != torch.float32:
        raise InputError(p, f"corrupt embedding: tensor is {str(tokens.dtype).removeprefix('torch.')}, "
                            "motion embeddings are float32")
    if not torch.isfinite(tokens).all():
        raise InputError(p, "corrupt embedding: it holds NaN or infinite values")
    emb = MotionEmbedding(
        tokens=tokens,
        model_id=meta.get("model_id", ""),
        reference_sha256=meta.get("reference_sha256", ""),
        inversion_config=json.loads(meta.get("inversion_config") or "{}"),
        code_version=meta.get("code_version", ""),
        family=meta.get("family", SVD),
    )
    if emb.family != SVD and str(meta.get("num_frames", "")).isdigit():
        emb.video_frames = int(meta["num_frames"])
    if tokens.ndim != 3 or str(emb.num_frames) != meta.get("num_frames") or \
            tokens.shape[0] != groups_for(emb.family, emb.num_frames):
        raise InputError(p, f"corrupt embedding: tensor shape {tuple(tokens.shape)} disagrees with its metadata")
    if family is not None and emb.family != family:
        raise EmbeddingMismatch(p, f"made for a {emb.family} model ({emb.model_id or '?'}); the loaded model is "
                                   f"{family} ({model_id or '?'}): an embedding works only on the model it was made on")
    if model_id is not None and emb.model_id != model_id:
        raise EmbeddingMismatch(p, f"made for model {emb.model_id or '?'}, not for the loaded model {model_id}")
    if token_dim is not None and emb.token_dim != token_dim:
        raise EmbeddingMismatch(p, f"token width D={emb.token_dim}, the model's cross-attention needs D={token_dim}")
    if num_frames is not None and emb.num_frames != num_frames:
        raise EmbeddingMismatch(p, f"made for F={emb.num_frames} frames, {num_frames} requested")
    return emb
