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


def track_template(frames: np.ndarray, patch: np.ndarray, mask: np.ndarray, wraps: bool) -> np.ndarray:
    """(F, 2) unwrapped centre (x, y) of a sprite in every frame, by masked template matching.

    `patch` (k, k, 3) and `mask` (k, k) are the sprite's look at frame 0 (its colours or photo
    texture: works for sprites a colour tracker cannot find). Each frame is searched whole (wrapped
    around the edges when `wraps`), the best masked squared difference refined to sub-pixel by a
    parabola through its neighbours. Positions are those of the patch centre pixel, so per-step
    displacements are exact while the absolute offset is within a pixel.
    """
    import cv2

    frames = np.asarray(frames, dtype=np.float32)
    k = patch.shape[0]
    template = np.ascontiguousarray(patch, dtype=np.float32)
    weights = np.repeat(mask.astype(np.float32)[..., None], 3, axis=2)
    out = np.zeros((len(frames), 2))
    for t, frame in enumerate(frames):
        pad = k // 2
        border = cv2.BORDER_WRAP if wraps else cv2.BORDER_REPLICATE
        image = cv2.copyMakeBorder(frame, pad, pad, pad, pad, border)
        cost = cv2.matchTemplate(image, template, cv2.TM_SQDIFF, mask=weights)  # (S, S): centre at each pixel
        y, x = np.unravel_index(int(np.argmin(cost)), cost.shape)
        out[t] = (x + 0.5 + _parabola(cost, y, x, axis=1, wraps=wraps), y + 0.5 + _parabola(cost, y, x, axis=0, wraps=wraps))
    if not wraps:
        return out
    size = np.array(frames.shape[2:0:-1], dtype=np.float64)  # (W, H)
    return _unwrap(out, size)


def _parabola(cost: np.ndarray, y: int, x: int, axis: int, wraps: bool) -> float:
    """Sub-pixel offset of the minimum along one axis from the costs at -1, 0, +1 (0 at an edge)."""
    n = cost.shape[axis]
    i = x if axis == 1 else y
    if not wraps and (i == 0 or i == n - 1):
        return 0.0
    at = (lambda j: cost[y, j % n]) if axis == 1 else (lambda j: cost[j % n, x])
    a, b, c = float(at(i - 1)), float(at(i)), float(at(i + 1))
    denom = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5)) if denom > 1e-9 else 0.0


def camera_motion(frames: np.ndarray, upscale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Whole-view motion between consecutive frames: ((F-1, 2) shifts in px, (F-1,) log zoom steps).

    Shifts by phase correlation of whole frames (OpenCV, Hann window); zoom as the scale of the best
    similarity fit to dense Farneback flow (divergence of the flow about its centroid).
    """
    import cv2

    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames]
    h, w = gray[0].shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    shifts, zooms = [], []
    big = [cv2.resize(g, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC) for g in gray]
    ys, xs = np.mgrid[0:h * upscale, 0:w * upscale].astype(np.float64)
    xs, ys = xs - xs.mean(), ys - ys.mean()
    for a, b, big_a, big_b in zip(gray, gray[1:], big, big[1:]):
        (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
        shifts.append((dx, dy))
        flow = cv2.calcOpticalFlowFarneback(np.clip(big_a, 0, 255).astype(np.uint8), np.clip(big_b, 0, 255).astype(np.uint8),
                                            None, 0.5, 3, 15, 3, 5, 1.2, 0).astype(np.float64)
        fx, fy = flow[..., 0] - flow[..., 0].mean(), flow[..., 1] - flow[..., 1].mean()
        scale = (xs * fx + ys * fy).sum() / (xs**2 + ys**2).sum()
        zooms.append(np.log1p(scale))
    return np.array(shifts), np.array(zooms)
