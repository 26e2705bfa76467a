"""Sampling the toy world: appearances, motions and starts drawn from a seeded generator."""

from __future__ import annotations

import colorsys

import numpy as np

from mtcore.errors import InputError
from mtcore.toy.render import render
from mtcore.toy.world import MOTION_KINDS, Appearance, Clip, Motion, WorldConfig



def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _segment_distance(a0, a1, b0, b1, samples: int = 17) -> float:
    """Smallest distance between two RGB segments (a point when both ends coincide), by sampling."""
    w = np.linspace(0.0, 1.0, samples)[:, None]
    pa = np.asarray(a0, float) + w * (np.asarray(a1, float) - np.asarray(a0, float))  # (n, 3)
    pb = np.asarray(b0, float) + w * (np.asarray(b1, float) - np.asarray(b0, float))
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min())


def _sample_background(rng: np.random.Generator, cfg: WorldConfig, hue: float) -> dict:
    # Desaturated, mid-dark, two shades of one hue: leaves room for a saturated, bright sprite.
    s, v = rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.45)
    dv = rng.uniform(0.1, 0.25)
    colours = (_hsv(hue, s, v), _hsv(hue + rng.uniform(-0.05, 0.05), s, v + dv))
    kind = str(rng.choice(cfg.backgrounds))
    waves: tuple = ()
    if kind == "gradient":
        kx, ky = [(1, 0), (0, 1), (1, 1), (1, -1)][rng.integers(4)]
        waves = ((kx, ky, 1.0, float(rng.uniform(0, 2 * np.pi))),)
    elif kind == "noise":
        ks = [(kx, ky) for kx in range(-2, 3) for ky in range(0, 3) if (ky > 0 or kx > 0)]
        picks = rng.choice(len(ks), size=4, replace=False)
        waves = tuple((ks[i][0], ks[i][1], float(rng.uniform(0.3, 1.0)), float(rng.uniform(0, 2 * np.pi)))
                      for i in picks)
    cells = int(rng.choice([2, 4]))
    return dict(background=kind, background_colours=colours, background_waves=waves, background_cells=cells)


def sample_appearance(rng: np.random.Generator, cfg: WorldConfig) -> Appearance:
    """A random sprite and background whose colours are at least `cfg.min_contrast` apart."""
    while True:  # rejection: redraw the rare pairs whose colours come too close
        bg_hue = rng.uniform(0, 1)
        sprite_hue = bg_hue + rng.uniform(1 / 3, 2 / 3)  # at least 120 degrees of hue away
        main = _hsv(sprite_hue, rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0))
        texture = str(rng.choice(cfg.textures))
        # The second texture colour is a pale tint of the main one: same hue, brighter than any background.
        colours = (main,) if texture == "solid" else (main, _hsv(sprite_hue, rng.uniform(0.25, 0.4), 1.0))
        bg = _sample_background(rng, cfg, bg_hue)
        appearance = Appearance(
            shape=str(rng.choice(cfg.shapes)),
            radius=float(rng.uniform(*cfg.radius_range)),
            colours=colours,
            texture=texture,
            texture_width=float(rng.uniform(1.0, 2.0)),
            texture_angle=float(rng.choice([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4])),
            **bg,
        )
        sprite_seg = (colours[0], colours[-1])
        if _segment_distance(*sprite_seg, *appearance.background_colours) >= cfg.min_contrast:
            return appearance


def sample_motion(rng: np.random.Generator, cfg: WorldConfig, kind: str | None = None) -> Motion:
    """A random motion of `kind` (None: uniform over `cfg.motions`), with the ranges of `cfg`."""
    kind = str(rng.choice(cfg.motions)) if kind is None else kind
    if kind not in MOTION_KINDS:
        raise InputError("kind", f"must be one of {MOTION_KINDS}, got {kind!r}")
    angle = float(rng.uniform(0, 2 * np.pi))
    speed = float(rng.uniform(*cfg.speed_range))
    direction = int(rng.choice([-1, 1]))
    steps = cfg.frames - 1
    if kind == "orbit":
        turns = rng.uniform(*cfg.orbit_turns_range)
        return Motion(kind, radius=float(rng.uniform(*cfg.orbit_radius_range)),
                      angular_speed=float(2 * np.pi * turns / steps), phase=angle, direction=direction)
    if kind == "zigzag":
        return Motion(kind, angle=angle, speed=speed, direction=direction,
                      amplitude=cfg.zigzag_amplitude, half_period=cfg.zigzag_half_period)
    if kind == "bounce":
        axis_angle = float(rng.integers(4) * np.pi / 2)
        return Motion(kind, angle=axis_angle, speed=speed, reverse_at=float(rng.uniform(1.0, steps - 1.0)))
    return Motion(kind, angle=angle, speed=speed)  # translate, pan


def sample_start(rng: np.random.Generator, cfg: WorldConfig) -> tuple[float, float]:
    """Sprite centre at frame 0, uniform over the frame (independent of the motion)."""
    x, y = rng.uniform(0, cfg.size, size=2)
    return float(x), float(y)


def sample_clip(rng: np.random.Generator, cfg: WorldConfig, kind: str | None = None) -> Clip:
    """Appearance, motion and start drawn from `rng`, then rendered."""
    appearance = sample_appearance(rng, cfg)
    motion = sample_motion(rng, cfg, kind)
    return render(appearance, motion, sample_start(rng, cfg), cfg)
