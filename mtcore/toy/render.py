"""Rendering toy-world clips: a tiling background shifted by the camera, a sprite at wrapped positions.

Each pixel is supersampled (`WorldConfig.supersample`^2 points, then a box average), so sprites
and panned backgrounds move smoothly at sub-pixel speeds.
"""

from __future__ import annotations

import numpy as np

from mtcore.toy.world import Appearance, Clip, Motion, WorldConfig, wrap


def _background_field(appearance: Appearance, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Mixing weight in [0, 1] of the second background colour at scene points (x, y); periodic in size."""
    if appearance.background == "flat":
        return np.zeros_like(x)
    if appearance.background == "checker":
        n = appearance.background_cells
        return ((np.floor(x * n / size) + np.floor(y * n / size)) % 2).astype(np.float64)
    total = np.zeros_like(x)
    for kx, ky, amp, phase in appearance.background_waves:
        total += amp * np.cos(2 * np.pi * (kx * x + ky * y) / size + phase)
    norm = sum(abs(w[2]) for w in appearance.background_waves) or 1.0
    return 0.5 + 0.5 * total / norm


def _sprite_masks(appearance: Appearance, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inside, second_colour) booleans at offsets (dx, dy) from the sprite centre."""
    r = appearance.radius
    ax, ay = np.abs(dx), np.abs(dy)
    if appearance.shape == "square":
        inside = np.maximum(ax, ay) <= r
    elif appearance.shape == "disc":
        inside = dx**2 + dy**2 <= r**2
    elif appearance.shape == "diamond":
        inside = ax + ay <= 1.25 * r  # a little larger, so its area is close to the disc's
    elif appearance.shape == "cross":
        arm = r / 3
        inside = ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    else:  # triangle pointing up (y grows downwards), centroid at the centre
        R = 1.3 * r
        inside = np.ones_like(dx, dtype=bool)
        for vertex_angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            # the edge facing away from each vertex direction, at distance R/2 from the centre
            inside &= -(dx * np.cos(vertex_angle) - dy * np.sin(vertex_angle)) <= R / 2
    w = appearance.texture_width
    u = dx * np.cos(appearance.texture_angle) + dy * np.sin(appearance.texture_angle)
    v = -dx * np.sin(appearance.texture_angle) + dy * np.cos(appearance.texture_angle)
    # Cells are centred on the sprite centre (the + 0.5), so textures are symmetric about it.
    if appearance.texture == "stripes":
        second = np.floor(u / w + 0.5) % 2 == 1
    elif appearance.texture == "checker":
        second = (np.floor(u / w + 0.5) + np.floor(v / w + 0.5)) % 2 == 1
    else:
        second = np.zeros_like(inside)
    return inside, second & inside


def render(appearance: Appearance, motion: Motion, start_xy, cfg: WorldConfig) -> Clip:
    """Draw the clip: background shifted by the scene offset, sprite at its wrapped positions."""
    S, F, ss = cfg.size, cfg.frames, cfg.supersample
    positions = motion.positions(start_xy, F)  # (F, 2)
    offsets = motion.scene_offset(F)  # (F, 2)
    sub = (np.arange(S * ss) + 0.5) / ss  # sub-sample coordinates, px
    gx, gy = np.meshgrid(sub, sub)  # (S*ss, S*ss), indexed [y, x]
    gx, gy = gx[None], gy[None]  # (1, S*ss, S*ss)

    # Background at scene coordinates: a pan moves the scene by +offset, so sample at x - offset.
    mix = _background_field(appearance, gx - offsets[:, 0, None, None], gy - offsets[:, 1, None, None], S)
    bg0, bg1 = (np.asarray(c, np.float64) for c in appearance.background_colours)
    image = bg0 + mix[..., None] * (bg1 - bg0)  # (F, S*ss, S*ss, 3)

    # Sprite: offsets to the centre taken on the torus, so it wraps across the edges.
    dx = wrap(gx - positions[:, 0, None, None], S)
    dy = wrap(gy - positions[:, 1, None, None], S)
    inside, second = _sprite_masks(appearance, dx, dy)
    image[inside] = appearance.colours[0]
    image[second] = appearance.colours[-1]

    # Box-average each pixel's ss x ss sub-samples: anti-aliasing, so sub-pixel motion shows.
    image = image.reshape(F, S, ss, S, ss, 3).mean(axis=(2, 4))
    frames = np.clip(np.round(image), 0, 255).astype(np.uint8)
    start = (float(positions[0, 0]), float(positions[0, 1]))
    return Clip(frames, positions, np.diff(positions, axis=0), appearance, motion, start)
