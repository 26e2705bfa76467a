"""Appearance: how well the output keeps the target image (PSNR, SSIM, CLIP similarity).

PSNR and SSIM compare the first output frame with the target image fitted to the output's size
(cover-resize and centre-crop, as sampling fits it); identical images give PSNR_CAP and SSIM 1.
CLIP-1st / CLIP-avg (the seed paper's appearance metrics) are cosine similarities between the
model's own image embeddings of the target and of the first / every output frame; when the encoder
gives zero embeddings (the toy model's projection is zero) there is nothing to compare: the values
are None and `clip_note` says why, never NaN or a made-up number.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PSNR_CAP = 100.0
"""dB reported for identical images (PSNR is infinite there)."""

Encoder = Callable[[list[Image.Image]], np.ndarray]
"""Images -> (B, D) embeddings."""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images, capped at PSNR_CAP."""
    if np.array_equal(a, b):
        return PSNR_CAP
    return float(min(PSNR_CAP, peak_signal_noise_ratio(a, b, data_range=255)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 images (7-px window, or the largest odd window a tiny image allows)."""
    side = min(a.shape[0], a.shape[1])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return float(np.array_equal(a, b))
    return float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=window))


def clip_similarity(encoder: Encoder | None, target: np.ndarray, output: np.ndarray) -> tuple[float | None, float | None, str | None]:
    """(CLIP-1st, CLIP-avg, note): cosine of the target's embedding with the first / every output frame."""
    if encoder is None:
        return None, None, "no image encoder given"
    images = [Image.fromarray(target)] + [Image.fromarray(f) for f in output]
    emb = np.asarray(encoder(images), dtype=np.float64)  # (1 + F, D)
    norms = np.linalg.norm(emb, axis=1)
    if np.any(norms < 1e-8):
        return None, None, "the model's image encoder gives zero embeddings: no meaningful similarity"
    cos = emb[1:] @ emb[0] / (norms[1:] * norms[0])
    return float(cos[0]), float(cos.mean()), None


def model_encoder(model) -> Encoder | None:
    """The model's own CLIP image encoder (mtcore.method.family.MotionModel.image_embeddings) as an Encoder;
    None for a model without one (Wan 2.2 I2V), whose CLIP metrics are then left empty with that note."""
    if getattr(model.pipe, "image_encoder", None) is None:
        return None
    return lambda images: model.image_embeddings(images).float().cpu().numpy()
