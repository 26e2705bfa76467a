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

import colorsys
from dataclasses import dataclass

import numpy as np

from mtcore.errors import InputError

MOTION_KINDS = ("translate", "orbit", "zigzag", "bounce", "pan")
SHAPES = ("square", "disc", "diamond", "cross", "triangle")
TEXTURES = ("solid", "stripes", "checker")
BACKGROUNDS = ("flat", "gradient", "noise", "checker")

# Layout of one motion token (see `motion_tokens`): 5 displacement features, a role flag, a kind one-hot.
STEP_FEATURES = 5
ROLE_COLUMN = STEP_FEATURES
KIND_COLUMN = STEP_FEATURES + 1
OFFSET_COLUMN = KIND_COLUMN + 5  # after the one-hot of the five motion kinds
OFFSET_FEATURES = 10


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


# ---------------------------------------------------------------- sampling


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


# ---------------------------------------------------------------- rendering


def _wrap(v: np.ndarray, size: float) -> np.ndarray:
    """Representative of v modulo size in [-size/2, size/2)."""
    return (v + size / 2) % size - size / 2


def _wrap_step(v: np.ndarray, size) -> np.ndarray:
    """Representative of a step v modulo size in (-size/2, size/2]."""
    return -_wrap(-v, size)


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
    dx = _wrap(gx - positions[:, 0, None, None], S)
    dy = _wrap(gy - positions[:, 1, None, None], S)
    inside, second = _sprite_masks(appearance, dx, dy)
    image[inside] = appearance.colours[0]
    image[second] = appearance.colours[-1]

    # Box-average each pixel's ss x ss sub-samples: anti-aliasing, so sub-pixel motion shows.
    image = image.reshape(F, S, ss, S, ss, 3).mean(axis=(2, 4))
    frames = np.clip(np.round(image), 0, 255).astype(np.uint8)
    start = (float(positions[0, 0]), float(positions[0, 1]))
    return Clip(frames, positions, np.diff(positions, axis=0), appearance, motion, start)


# ---------------------------------------------------------------- motion tokens


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


# ---------------------------------------------------------------- tracking and metrics


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
        out[t] = p if last is None else last + _wrap_step(p - last, size)
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
        pred = _wrap_step(pred, size)
    ok = ~(np.isnan(pred).any(axis=1) | np.isnan(true).any(axis=1))
    pred, true = pred[ok], true[ok]
    norms = np.linalg.norm(pred) * np.linalg.norm(true)
    true_speed = np.linalg.norm(true, axis=1).mean() if len(true) else 0.0
    return {
        "cosine": float(np.sum(pred * true) / norms) if norms > 0 else float("nan"),
        "speed_ratio": float(np.linalg.norm(pred, axis=1).mean() / true_speed) if true_speed > 0 else float("nan"),
        "steps": int(ok.sum()),
    }


def contact_sheet(clips: list[Clip], scale: int = 4, gap: int = 1) -> np.ndarray:
    """(rows * (S*scale + gap), F * (S*scale + gap), 3) uint8: one clip a row, frames left to right."""
    F, S = clips[0].frames.shape[:2]
    cell = S * scale + gap
    sheet = np.full((len(clips) * cell, F * cell, 3), 255, dtype=np.uint8)
    for row, clip in enumerate(clips):
        for f in range(F):
            big = clip.frames[f].repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour upscale
            sheet[row * cell: row * cell + S * scale, f * cell: f * cell + S * scale] = big
    return sheet
