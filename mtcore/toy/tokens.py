"""Motion tokens: the toy model's cross-attention input, a fixed feature map of a clip's true motion."""

from __future__ import annotations

import numpy as np

from mtcore.errors import InputError
from mtcore.toy.world import MOTION_KINDS

# Layout of one motion token (see `motion_tokens`): 5 displacement features, a role flag, a kind one-hot.
STEP_FEATURES = 5
ROLE_COLUMN = STEP_FEATURES
KIND_COLUMN = STEP_FEATURES + 1
OFFSET_COLUMN = KIND_COLUMN + 5  # after the one-hot of the five motion kinds
OFFSET_FEATURES = 10


def _step_features(d: np.ndarray) -> np.ndarray:
    """(..., 2) displacements -> (..., 5): [dx/2, dy/2, |d|/2, cos(theta) tanh|d|, sin(theta) tanh|d|].

    The direction terms fade to 0 with the speed, so no motion encodes as all zeros.
    """
    speed = np.linalg.norm(d, axis=-1, keepdims=True)
    unit = np.divide(d, speed, out=np.zeros_like(d), where=speed > 0)
    return np.concatenate([d / 2, speed / 2, unit * np.tanh(speed)], axis=-1)


def motion_tokens(displacements: np.ndarray, kind_index: int, dim: int = 32, size: int = 16) -> np.ndarray:
    """(F + 1, dim) float32 motion description: a fixed feature map, no learned parts.

    Row 0 encodes a zero displacement (frame 0 has no previous frame), row f (1..F-1) encodes
    d_{f-1}, the step from frame f-1 to f; row F is the temporal token: the mean velocity, a role flag
    and a one-hot of the motion kind. Columns: 0-4 `_step_features`, 5 = 1 on the temporal row,
    6..6+K-1 kind one-hot (K = len(MOTION_KINDS), temporal row only), then OFFSET_FEATURES columns
    of the cumulative offset o_f = p_f - p_0 on frame rows (`_offset_features`: o/S and, for k = 1, 2,
    sin(2 pi k o / S) and cos(2 pi k o / S) - 1, per axis; wrap-aware and zero at o = 0), so the
    token of frame f says where the sprite is relative to frame 0 without integrating steps; then
    zeros up to dim. A clip with no motion encodes as all zeros, SVD's unconditional embedding.
    """
    d = np.asarray(displacements, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != 2:
        raise InputError("displacements", f"must have shape (F-1, 2), got {d.shape}")
    if not 0 <= kind_index < len(MOTION_KINDS):
        raise InputError("kind_index", f"must be in [0, {len(MOTION_KINDS)}), got {kind_index}")
    if dim < OFFSET_COLUMN + OFFSET_FEATURES:
        raise InputError("dim", f"must be >= {OFFSET_COLUMN + OFFSET_FEATURES}, got {dim}")
    steps = np.concatenate([np.zeros((1, 2)), d])  # (F, 2): row 0 = no previous frame
    tokens = np.zeros((len(steps) + 1, dim))
    tokens[:-1, :STEP_FEATURES] = _step_features(steps)
    mean_velocity = d.mean(axis=0) if len(d) else np.zeros(2)
    tokens[-1, :STEP_FEATURES] = _step_features(mean_velocity)
    tokens[-1, ROLE_COLUMN] = 1.0
    tokens[-1, KIND_COLUMN + kind_index] = 1.0
    offsets = np.cumsum(steps, axis=0)  # (F, 2): p_f - p_0
    tokens[:-1, OFFSET_COLUMN : OFFSET_COLUMN + OFFSET_FEATURES] = _offset_features(offsets, size)
    return tokens.astype(np.float32)


def _offset_features(offsets: np.ndarray, size: int) -> np.ndarray:
    """(F, 2) cumulative offsets -> (F, OFFSET_FEATURES): o/S, then sin and cos - 1 of 2 pi k o / S, k = 1, 2."""
    phase = 2 * np.pi * offsets / size
    parts = [offsets / size] + [f(k * phase) for k in (1, 2) for f in (np.sin, lambda a: np.cos(a) - 1)]
    return np.concatenate(parts, axis=1)


# Layout of a scene token (`scene_tokens`, the built-in 32-px model's motion input).
SCENE_KINDS = ("translate", "orbit", "zigzag", "bounce", "pan", "zoom")  # = mtcore.toy.scenes.KINDS
SCENE_KIND_COLUMN = STEP_FEATURES + 1
SCENE_OFFSET_COLUMN = SCENE_KIND_COLUMN + len(SCENE_KINDS)
ZOOM_COLUMN = SCENE_OFFSET_COLUMN + OFFSET_FEATURES  # per-frame log zoom step, then cumulative log zoom
WRAP_COLUMN = ZOOM_COLUMN + 2
SCENE_FEATURES = WRAP_COLUMN + 1


def scene_tokens(displacements: np.ndarray, log_zoom: np.ndarray, kind_index: int, wraps: bool, size: int,
                 dim: int = 32) -> np.ndarray:
    """(F + 1, dim) float32 motion description of a scene (mtcore.toy.scenes): a fixed feature map.

    As `motion_tokens`, with displacements measured in 16-px units (d * 16 / S, so a 32-px scene's
    features match the original world's scale) and three more things: the kind one-hot covers the
    six scene kinds (SCENE_KINDS), frame rows carry 10 x the log zoom step into the frame and 5 x the
    cumulative log zoom, and the temporal row carries the mean log zoom step (x 10) and a wrap flag.
    Columns: 0-4 step features, 5 role, 6-11 kind, 12-21 cumulative offset, 22-23 zoom, 24 wrap,
    zeros up to dim. The frame rows of a still clip (no motion, no zoom) are all zeros.
    """
    d = np.asarray(displacements, dtype=np.float64) * 16.0 / size
    z = np.asarray(log_zoom, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != 2 or z.shape != (len(d),):
        raise InputError("displacements", f"must have shape (F-1, 2) with log_zoom (F-1,), got {d.shape}, {z.shape}")
    if not 0 <= kind_index < len(SCENE_KINDS):
        raise InputError("kind_index", f"must be in [0, {len(SCENE_KINDS)}), got {kind_index}")
    if dim < SCENE_FEATURES:
        raise InputError("dim", f"must be >= {SCENE_FEATURES}, got {dim}")
    steps = np.concatenate([np.zeros((1, 2)), d])  # (F, 2): row 0 = no previous frame
    zooms = np.concatenate([[0.0], z])  # (F,)
    tokens = np.zeros((len(steps) + 1, dim))
    tokens[:-1, :STEP_FEATURES] = _step_features(steps)
    tokens[:-1, SCENE_OFFSET_COLUMN : SCENE_OFFSET_COLUMN + OFFSET_FEATURES] = _offset_features(np.cumsum(steps, 0), 16)
    tokens[:-1, ZOOM_COLUMN] = 10 * zooms
    tokens[:-1, ZOOM_COLUMN + 1] = 5 * np.cumsum(zooms)
    tokens[-1, :STEP_FEATURES] = _step_features(d.mean(axis=0) if len(d) else np.zeros(2))
    tokens[-1, ROLE_COLUMN] = 1.0
    tokens[-1, SCENE_KIND_COLUMN + kind_index] = 1.0
    tokens[-1, ZOOM_COLUMN] = 10 * z.mean() if len(z) else 0.0
    tokens[-1, WRAP_COLUMN] = float(wraps)
    return tokens.astype(np.float32)
