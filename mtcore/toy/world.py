"""Toy world: S x S clips of one sprite on a tiling background, moving on a torus.

Everything wraps around (positions are taken modulo S, backgrounds tile), so a sprite can start
anywhere and the first frame says nothing about the motion. Positions are in pixels, x then y,
pixel i covering [i, i + 1) (its centre is i + 0.5), and are *unwrapped*: p_t is the sprite
centre at frame t, d_t = p_{t+1} - p_t the step from frame t to t + 1.

Motion family (`Motion.kind`, and the fields each kind reads):
  translate  constant velocity: `angle` uniform [0, 2 pi), `speed` uniform in `speed_range` px/frame.
             p_t = p_0 + t * speed * (cos angle, sin angle).
  orbit      circle through p_0 around c = p_0 - radius * (cos phase, sin phase): `radius` in
             `orbit_radius_range` px, `angular_speed` such that the clip covers `orbit_turns_range`
             turns, `direction` +1 / -1 (sense of rotation), `phase` uniform [0, 2 pi).
             p_t = c + radius * (cos a_t, sin a_t), a_t = phase + direction * angular_speed * t.
  zigzag     translate (`angle`, `speed`) plus a perpendicular triangle wave: each step also moves
             `amplitude / half_period` px along the normal (-sin angle, cos angle), the sign starting
             at `direction` and flipping every `half_period` steps; `amplitude` is peak to peak.
  bounce     reversal along one axis: `angle` in {0, pi/2, pi, 3 pi/2}, `speed` as translate, and
             the velocity flips at time `reverse_at` uniform in [1, F - 2] (there are no walls, the
             sprite goes one way and comes back). p_t = p_0 + v * (T - |t - T|).
  pan        camera pan: the whole scene (background and sprite) moves at `angle`, `speed` as
             translate; the sprite is still in the scene, so p_t = p_0 + scene_offset_t.

Rendering supersamples each pixel (`WorldConfig.supersample`^2 points, then a box average), so
sprites and panned backgrounds move smoothly at sub-pixel speeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtcore.errors import InputError


MOTION_KINDS = ("translate", "orbit", "zigzag", "bounce", "pan")
SHAPES = ("square", "disc", "diamond", "cross", "triangle")
TEXTURES = ("solid", "stripes", "checker")
BACKGROUNDS = ("flat", "gradient", "noise", "checker")




@dataclass(frozen=True)
class WorldConfig:
    """What the toy world samples: clip geometry and the ranges of every random draw."""

    size: int = 16
    """S: clips are S x S pixels; positions wrap modulo S."""
    frames: int = 8
    """F: frames per clip (at least 3, so a bounce can reverse inside the clip)."""
    motions: tuple[str, ...] = MOTION_KINDS
    """Motion kinds `sample_motion` draws from (uniformly) when no kind is given."""
    speed_range: tuple[float, float] = (0.75, 2.0)
    """Speed in px/frame of translate, zigzag (its base), bounce and pan, drawn uniformly."""
    orbit_radius_range: tuple[float, float] = (2.0, 4.0)
    """Orbit radius in px, drawn uniformly."""
    orbit_turns_range: tuple[float, float] = (0.5, 1.0)
    """Turns an orbit covers over the whole clip (F - 1 steps), drawn uniformly."""
    zigzag_amplitude: float = 1.5
    """Peak-to-peak perpendicular excursion of a zigzag, px."""
    zigzag_half_period: int = 2
    """k: a zigzag's perpendicular direction flips every k steps."""
    shapes: tuple[str, ...] = SHAPES
    """Sprite shapes drawn from."""
    textures: tuple[str, ...] = TEXTURES
    """Sprite textures drawn from: solid, or two-colour stripes / checker inside the sprite."""
    backgrounds: tuple[str, ...] = BACKGROUNDS
    """Background kinds drawn from; all of them tile seamlessly."""
    radius_range: tuple[float, float] = (2.0, 4.0)
    """Sprite radius in px (half-width of the square, circumradius-ish for the others)."""
    min_contrast: float = 120.0
    """Smallest RGB distance (0..441) between any sprite colour and any background colour; appearances
    closer than this are redrawn, so a tracker can find the sprite by colour."""
    supersample: int = 4
    """Sub-samples per pixel side used for anti-aliasing."""

    def __post_init__(self):
        checks = (
            ("size", self.size >= 4, "must be >= 4"),
            ("frames", self.frames >= 3, "must be >= 3"),
            ("supersample", self.supersample >= 1, "must be >= 1"),
            ("zigzag_half_period", self.zigzag_half_period >= 1, "must be >= 1"),
            ("speed_range", 0 <= self.speed_range[0] <= self.speed_range[1], "must be 0 <= low <= high"),
            ("radius_range", 0 < self.radius_range[0] <= self.radius_range[1], "must be 0 < low <= high"),
        )
        for key, ok, problem in checks:
            if not ok:
                raise InputError(f"WorldConfig.{key}", f"{problem}, got {getattr(self, key)!r}")
        for key, allowed in (("motions", MOTION_KINDS), ("shapes", SHAPES), ("textures", TEXTURES),
                             ("backgrounds", BACKGROUNDS)):
            values = getattr(self, key)
            unknown = [v for v in values if v not in allowed]
            if not values or unknown:
                raise InputError(f"WorldConfig.{key}", f"must be a non-empty subset of {allowed}, got {values!r}")


@dataclass(frozen=True)
class Appearance:
    """Everything needed to re-render one sprite and its background (colours are RGB 0..255)."""

    shape: str
    """One of SHAPES."""
    radius: float
    """Sprite radius in px."""
    colours: tuple[tuple[int, int, int], ...]
    """Sprite colours: one for a solid sprite, two for stripes / checker (the first is the main one)."""
    texture: str = "solid"
    """One of TEXTURES."""
    texture_width: float = 1.5
    """Width in px of one stripe or checker cell."""
    texture_angle: float = 0.0
    """Direction (rad) across the stripes."""
    background: str = "flat"
    """One of BACKGROUNDS."""
    background_colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((96, 96, 96), (128, 128, 128))
    """The background mixes these two colours by a field in [0, 1] (flat = the first)."""
    background_waves: tuple[tuple[int, int, float, float], ...] = ()
    """(kx, ky, amplitude, phase) cosines with integer wave numbers (cycles per S), so they tile;
    used by gradient (one wave) and noise (several)."""
    background_cells: int = 2
    """Checker background: cells per side (even, so the checker tiles)."""


@dataclass(frozen=True)
class Motion:
    """One motion of the family in the module docstring; each kind reads only its own fields."""

    kind: str
    """One of MOTION_KINDS."""
    angle: float = 0.0
    """Direction of travel, rad (translate, zigzag, bounce, pan); 0 = +x, pi/2 = +y (down)."""
    speed: float = 0.0
    """px/frame (translate, zigzag, bounce, pan)."""
    radius: float = 0.0
    """Orbit radius, px."""
    angular_speed: float = 0.0
    """Orbit angular speed, rad/frame (unsigned; `direction` gives the sense)."""
    phase: float = 0.0
    """Orbit: angle of p_0 as seen from the orbit centre, rad."""
    direction: int = 1
    """+1 / -1: sense of an orbit, first perpendicular side of a zigzag."""
    amplitude: float = 0.0
    """Zigzag peak-to-peak perpendicular excursion, px."""
    half_period: int = 2
    """Zigzag: the perpendicular direction flips every this many steps."""
    reverse_at: float = 0.0
    """Bounce: time (in frames) at which the velocity flips."""

    def __post_init__(self):
        if self.kind not in MOTION_KINDS:
            raise InputError("Motion.kind", f"must be one of {MOTION_KINDS}, got {self.kind!r}")

    def positions(self, start_xy, frames: int) -> np.ndarray:
        """(F, 2) unwrapped sprite centre (x, y) at frames 0..F-1, starting at `start_xy`."""
        t = np.arange(frames, dtype=np.float64)[:, None]  # (F, 1)
        p0 = np.asarray(start_xy, dtype=np.float64).reshape(1, 2)
        heading = np.array([[np.cos(self.angle), np.sin(self.angle)]])  # (1, 2)
        if self.kind in ("translate", "pan"):
            return p0 + t * self.speed * heading
        if self.kind == "orbit":
            centre = p0 - self.radius * np.array([[np.cos(self.phase), np.sin(self.phase)]])
            a = self.phase + self.direction * self.angular_speed * t  # (F, 1)
            return centre + self.radius * np.concatenate([np.cos(a), np.sin(a)], axis=1)
        if self.kind == "zigzag":
            normal = np.array([[-heading[0, 1], heading[0, 0]]])
            steps = np.arange(frames - 1)
            signs = np.where((steps // self.half_period) % 2 == 0, 1.0, -1.0) * self.direction  # (F-1,)
            side = np.concatenate([[0.0], np.cumsum(signs)])[:, None] * self.amplitude / self.half_period
            return p0 + t * self.speed * heading + side * normal
        # bounce: out to time reverse_at, then back the same way
        travelled = self.reverse_at - np.abs(t - self.reverse_at)
        return p0 + travelled * self.speed * heading

    def displacements(self, start_xy, frames: int) -> np.ndarray:
        """(F-1, 2) per-step displacements d_t = p_{t+1} - p_t."""
        return np.diff(self.positions(start_xy, frames), axis=0)

    def scene_offset(self, frames: int) -> np.ndarray:
        """(F, 2) shift of the whole scene (camera pan) at each frame; zeros except for pan."""
        if self.kind != "pan":
            return np.zeros((frames, 2))
        t = np.arange(frames, dtype=np.float64)[:, None]
        return t * self.speed * np.array([[np.cos(self.angle), np.sin(self.angle)]])


@dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip with its ground truth (eq=False: it holds arrays)."""

    frames: np.ndarray
    """(F, S, S, 3) uint8 RGB."""
    positions: np.ndarray
    """(F, 2) float unwrapped sprite centre, x then y, px."""
    displacements: np.ndarray
    """(F-1, 2) float per-step displacements, positions[t + 1] - positions[t]."""
    appearance: Appearance
    """How the sprite and background look."""
    motion: Motion
    """How the sprite (or the camera, for pan) moves."""
    start: tuple[float, float]
    """Sprite centre at frame 0, in [0, S)^2."""

    @property
    def kind_index(self) -> int:
        """Index of the motion kind in MOTION_KINDS (for `motion_tokens`)."""
        return MOTION_KINDS.index(self.motion.kind)


# ---------------------------------------------------------------- the torus


def wrap(v: np.ndarray, size: float) -> np.ndarray:
    """Representative of v modulo size in [-size/2, size/2)."""
    return (v + size / 2) % size - size / 2


def wrap_step(v: np.ndarray, size) -> np.ndarray:
    """Representative of a step v modulo size in (-size/2, size/2]."""
    return -wrap(-v, size)
