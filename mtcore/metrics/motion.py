"""Motion fidelity (Diffusion Motion Transfer, Yatim et al. 2024), made robust for a batch system.

Track points through the reference and the output; each tracklet becomes per-step unit
displacements; the similarity of two tracklets is the mean over time of their cosine; a
direction's score is the mean over its tracklets of the best match in the other video.

Differences from DMT's `motion_fidelity_score.py` (which scores output -> reference only, divides
by zero on a still point, and subtracts the identity from the similarity matrix):
- symmetrised: the mean of output -> reference and reference -> output;
- an epsilon in the normalisation (d / (|d| + EPS)), so a still step counts 0, never NaN;
- only tracklets that move count: median step length >= MOVING_THRESHOLD of the frame size, so a
  static background neither inflates nor dilutes the score;
- defined when a video is still: both still -> 1, one still -> 0; never NaN;
- no identity subtraction: with tracklets from two different videos the same index means nothing;
- coordinates are normalised (x / W, y / H), so videos of different sizes compare directly.

The tracker is a named choice (`TRACKERS`): "opencv_lk", OpenCV's pyramidal Lucas-Kanade on a
grid plus the first frame's Shi-Tomasi corners, with a forward-backward check (CPU, in the wheel); a GPU tracker (e.g. CoTracker, as DMT) can
be added under another name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

MOVING_THRESHOLD = 0.005
"""A tracklet moves if its median step is at least 0.5% of the frame size per frame (normalised units)."""
EPS = 1e-3
"""Added to step lengths before normalising (normalised units; ~5% of the slowest moving step)."""
TRACK_SIDE = 64
"""Frames are upscaled (bicubic) so their short side is at least this many px before tracking: LK's
21-px window then spans a few source pixels. (Measured on the demo's 16-px outputs: upscaling to 64
separates matched from mismatched references best, 0.71 vs 0.11; to 256 the smooth upscaled frames
leave too little texture and matched pairs fall to 0.48.)"""
GRID = 16
"""Points per side of the tracking grid."""
CORNERS = 100
"""At most this many Shi-Tomasi corners of the first frame are tracked besides the grid."""


def track_lk(frames: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(N, F, 2) tracklets, normalised (x / W, y / H), of grid points followed through every frame.

    OpenCV pyramidal Lucas-Kanade (21 px window, 3 levels) on frames upscaled to TRACK_SIDE; a point
    is dropped when LK loses it, when its minimum eigenvalue says its window has no texture, when
    tracking it back lands more than half a source pixel from where it came from, or when it leaves
    the frame.
    """
    f, h, w = frames.shape[:3]
    up = max(1.0, TRACK_SIDE / min(h, w))
    size = (int(round(w * up)), int(round(h * up)))
    # LK runs on the colour frames (it takes all channels): an object that differs from its background
    # only in hue (equal gray levels) is still tracked. Corners are found on the gray first frame.
    big = [cv2.resize(np.ascontiguousarray(x), size, interpolation=cv2.INTER_CUBIC) for x in frames]
    xs = (np.arange(grid) + 0.5) * size[0] / grid
    ys = (np.arange(grid) + 0.5) * size[1] / grid
    points = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2).astype(np.float32)
    # plus Shi-Tomasi corners of the first frame: a flat-coloured object is trackable at its corners,
    # which grid points rarely hit
    corners = cv2.goodFeaturesToTrack(cv2.cvtColor(big[0], cv2.COLOR_RGB2GRAY), maxCorners=CORNERS,
                                      qualityLevel=0.01, minDistance=5)
    if corners is not None:
        points = np.concatenate([points, corners.astype(np.float32)])
    alive = np.ones(len(points), bool)
    path = [points[:, 0].copy()]
    params = dict(winSize=(21, 21), maxLevel=3, minEigThreshold=1e-3,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    for prev, cur in zip(big, big[1:]):
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(prev, cur, points, None, **params)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(cur, prev, nxt, None, **params)
        fb = np.linalg.norm((back - points)[:, 0], axis=1) < 0.5 * up  # half a pixel of the original frame
        inside = (nxt[:, 0, 0] >= 0) & (nxt[:, 0, 0] < size[0]) & (nxt[:, 0, 1] >= 0) & (nxt[:, 0, 1] < size[1])
        alive &= ok[:, 0].astype(bool) & ok_back[:, 0].astype(bool) & fb & inside
        points = nxt
        path.append(points[:, 0].copy())
    tracks = np.stack(path, axis=1)[alive].astype(np.float64)  # (N, F, 2) in upscaled px
    return tracks / np.array(size, dtype=np.float64)


TRACKERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"opencv_lk": track_lk}
"""Tracker name -> function (F, H, W, 3) uint8 frames -> (N, F, 2) normalised tracklets."""


@dataclass(frozen=True)
class MotionFidelity:
    """The symmetric motion fidelity and its parts."""

    score: float
    """Mean of the two directions (1 when both videos are still, 0 when exactly one is)."""
    output_to_reference: float | None
    """Mean over the output's moving tracklets of their best reference match (None if either is still)."""
    reference_to_output: float | None
    """The same from the reference's side."""
    moving_output: int
    """Moving tracklets in the output."""
    moving_reference: int
    """Moving tracklets in the reference."""


def unit_steps(tracks: np.ndarray, eps: float = EPS) -> np.ndarray:
    """(N, F, 2) tracklets -> (N, F-1, 2) steps divided by (length + eps)."""
    d = np.diff(tracks, axis=1)
    return d / (np.linalg.norm(d, axis=-1, keepdims=True) + eps)


def moving(tracks: np.ndarray, threshold: float = MOVING_THRESHOLD) -> np.ndarray:
    """(N,) bool: tracklets whose median step length is at least `threshold`.

    The median, not the mean: a point that jumps once (a tracking glitch, or background dragged
    along by a passing object) and otherwise stands still does not move.
    """
    if len(tracks) == 0:
        return np.zeros(0, bool)
    return np.median(np.linalg.norm(np.diff(tracks, axis=1), axis=-1), axis=1) >= threshold


def fidelity_from_tracks(output: np.ndarray, reference: np.ndarray, eps: float = EPS) -> MotionFidelity:
    """Symmetric motion fidelity of two sets of (N, F, 2) normalised tracklets with the same F."""
    if output.shape[1:] != reference.shape[1:] and len(output) and len(reference):
        raise ValueError(f"tracklets must share frame count: {output.shape[1]} vs {reference.shape[1]}")
    out, ref = output[moving(output)], reference[moving(reference)]
    if len(out) == 0 or len(ref) == 0:
        return MotionFidelity(1.0 if len(out) == len(ref) == 0 else 0.0, None, None, len(out), len(ref))
    similarity = np.einsum("ntc,mtc->nm", unit_steps(out, eps), unit_steps(ref, eps)) / (out.shape[1] - 1)  # (N, M)
    forward, backward = float(similarity.max(axis=1).mean()), float(similarity.max(axis=0).mean())
    return MotionFidelity((forward + backward) / 2, forward, backward, len(out), len(ref))


def motion_fidelity(output: np.ndarray, reference: np.ndarray, tracker: str = "opencv_lk") -> MotionFidelity:
    """Motion fidelity of an output video against a reference video, (F, H, W, 3) uint8 each, same F."""
    return fidelity_from_tracks(tracks(output, tracker), tracks(reference, tracker))


_TRACK_CACHE: dict[tuple, np.ndarray] = {}


def tracks(frames: np.ndarray, tracker: str = "opencv_lk") -> np.ndarray:
    """`TRACKERS[tracker](frames)`, remembered by content for the last 32 videos (a reference is
    measured against each of its outputs)."""
    key = (tracker, frames.shape, hashlib.sha1(np.ascontiguousarray(frames).data).hexdigest())
    if key not in _TRACK_CACHE:
        if len(_TRACK_CACHE) >= 32:
            _TRACK_CACHE.pop(next(iter(_TRACK_CACHE)))
        _TRACK_CACHE[key] = TRACKERS[tracker](frames)
    return _TRACK_CACHE[key]
