"""Conversions between the frame layouts the project uses, in one place.

- "uint8": (F, H, W, 3) uint8 numpy arrays, as decoded from and encoded to files;
- "signed": (F, 3, H, W) float tensors in [-1, 1], what the VAE and inversion take;
- "unit": (F, 3, H, W) float tensors in [0, 1], what sampling returns.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def uint8_to_signed(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def signed_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    arr = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def unit_to_uint8(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """(F, 3, H, W) float in [0, 1] -> (F, H, W, 3) uint8; uint8 arrays pass through."""
    if isinstance(video, np.ndarray) and video.dtype == np.uint8:
        return video
    v = torch.as_tensor(video).detach().float().clamp(0, 1)
    return (v.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()


def signed_to_pil(frames: torch.Tensor) -> list[Image.Image]:
    """(F, 3, H, W) in [-1, 1] -> list of RGB PIL images."""
    return [Image.fromarray(a) for a in signed_to_uint8(frames)]


__all__ = ["uint8_to_signed", "signed_to_uint8", "unit_to_uint8", "signed_to_pil"]
