"""Tracking a toy sprite by colour through generated frames, and trajectory agreement metrics."""

from __future__ import annotations

import numpy as np

from mtcore.errors import InputError
from mtcore.toy.world import wrap_step



def _colour_distance(pixels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(...,) RGB distance of each pixel to the segment from the first to the last sprite colour (a point
    for one colour): a two-colour texture's anti-aliased inner edges are mixes of the two."""
    c0, c1 = colours[0], colours[-1]
    span = c1 - c0
    length2 = float(span @ span)
    w = np.clip(((pixels - c0) @ span) / length2, 0, 1)[..., None] if length2 > 0 else 0.0
    return np.linalg.norm(pixels - (c0 + w * span), axis=-1)


def track_sprite(frames: np.ndarray, colour, threshold: float = 100.0, min_weight: float = 0.15) -> np.ndarray:
    """(F, 2) unwrapped sprite centre (x, y) per frame, found by colour; NaN where nothing matches.

    `colour` is one RGB colour (3,) or a sprite's two texture colours (2, 3). A frame with no pixel
    within `threshold` RGB distance of the sprite colour is NaN. Otherwise each pixel weighs
    1 - distance / (the frame's median distance), an estimate of how much of it the sprite covers
    (the median pixel is background while the sprite covers under half the frame); weights below
    `min_weight` are dropped as background. The centroid is a circular mean (x as the angle
    2 pi x / S), right for a sprite straddling the edge; across frames each step is taken in
    (-S/2, S/2] to unwrap.
    """
    frames = np.asarray(frames, dtype=np.float64)  # (F, H, W, 3)
    colours = np.asarray(colour, dtype=np.float64).reshape(-1, 3)
    F, H, W, _ = frames.shape
    distance = _colour_distance(frames, colours)  # (F, H, W)
    # A linear coverage estimate keeps partly covered edge pixels in proportion, so the centroid
    # moves smoothly at sub-pixel steps (a hard threshold would snap it to the pixel grid).
    background = np.maximum(np.median(distance.reshape(F, -1), axis=1), 1e-6)[:, None, None]
    weight = np.clip(1.0 - distance / background, 0.0, 1.0)
    weight[weight < min_weight] = 0.0

    def circular_mean(axis_weight: np.ndarray, n: int) -> np.ndarray:
        # axis_weight: (F, n) weight summed over the other axis; pixel i sits at i + 0.5
        angle = 2 * np.pi * (np.arange(n) + 0.5) / n
        c, s = axis_weight @ np.cos(angle), axis_weight @ np.sin(angle)
        return (np.arctan2(s, c) % (2 * np.pi)) * n / (2 * np.pi)

    raw = np.stack([circular_mean(weight.sum(axis=1), W), circular_mean(weight.sum(axis=2), H)], axis=1)
    found = (distance < threshold).any(axis=(1, 2)) & (weight.sum(axis=(1, 2)) > 0)
    raw[~found] = np.nan
    return _unwrap(raw, np.array([W, H], dtype=np.float64))


def _unwrap(raw: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(F, 2) positions modulo size -> unwrapped, each step in (-size/2, size/2]; NaN frames stay NaN."""
    out = np.full_like(raw, np.nan)
    last = None
    for t, p in enumerate(raw):
        if np.isnan(p).any():
            continue
        out[t] = p if last is None else last + wrap_step(p - last, size)
        last = out[t]
    return out


def trajectory_metrics(pred_positions: np.ndarray, true_displacements: np.ndarray, size: int | None = None) -> dict:
    """Compare a tracked trajectory with the true one.

    cosine: between the flattened per-step displacement sequences (pred from `pred_positions`, which
    should be unwrapped; pass `size` to wrap pred steps into (-S/2, S/2] if they are not);
    speed_ratio: mean |pred d| / mean |true d|; steps: steps used (those with a NaN are dropped).
    NaN when no step is usable or a norm is zero.
    """
    pred = np.diff(np.asarray(pred_positions, dtype=np.float64), axis=0)  # (F-1, 2)
    true = np.asarray(true_displacements, dtype=np.float64)
    if pred.shape != true.shape:
        raise InputError("pred_positions", f"give {true.shape[0] + 1} positions for {true.shape} displacements, "
                                           f"got {pred.shape[0] + 1}")
    if size is not None:
        pred = wrap_step(pred, size)
    ok = ~(np.isnan(pred).any(axis=1) | np.isnan(true).any(axis=1))
    pred, true = pred[ok], true[ok]
    norms = np.linalg.norm(pred) * np.linalg.norm(true)
    true_speed = np.linalg.norm(true, axis=1).mean() if len(true) else 0.0
    return {
        "cosine": float(np.sum(pred * true) / norms) if norms > 0 else float("nan"),
        "speed_ratio": float(np.linalg.norm(pred, axis=1).mean() / true_speed) if true_speed > 0 else float("nan"),
        "steps": int(ok.sum()),
    }
