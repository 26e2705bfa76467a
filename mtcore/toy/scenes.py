"""The broader world the built-in model learns: three content families, each with known motion.

- `toy`: the original toy world (world / sampling / render), drawn at the model's size: drawn
  sprites on tiling backgrounds, wrap-around motion, five kinds (translate, orbit, zigzag, bounce, pan).
- `photo_sprite`: one sprite, drawn or cut from a real photo, radius over a wide range, over a
  background of any brightness and texture (a real photo crop, a flat colour, a toy pattern);
  it moves (translate, orbit, zigzag, bounce) either wrapping around the edges or staying inside.
- `camera`: no sprite; the view is a window on a larger real photo that pans in any direction or
  zooms in or out. The window starts anywhere on the photo, so the first frame does not give the
  motion away.
Every scene carries its ground truth: per-step content displacement (the sprite's, or the whole
view's for a pan) and per-step log zoom (content scale change; 0 unless zoom).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mtcore.errors import InputError
from mtcore.toy import photos
from mtcore.toy.render import _background_field, _sprite_masks, render
from mtcore.toy.sampling import _hsv, sample_appearance, sample_motion, sample_start
from mtcore.toy.world import TEXTURES, Appearance, Motion, WorldConfig, wrap

FAMILIES = ("toy", "photo_sprite", "camera")
KINDS = ("translate", "orbit", "zigzag", "bounce", "pan", "zoom")
"""Motion kinds over all families (the order of the motion tokens' kind one-hot)."""
SPRITE_KINDS = ("translate", "orbit", "zigzag", "bounce")
CAMERA_KINDS = ("pan", "zoom")


@dataclass(frozen=True)
class SceneConfig:
    """What scenes are drawn: geometry, family mix, photos, and the ranges of the random draws."""

    size: int = 32
    """S: frames are S x S pixels."""
    frames: int = 8
    """F: frames per clip."""
    family_weights: tuple[float, float, float] = (0.3, 0.4, 0.3)
    """Probabilities of toy, photo_sprite and camera scenes."""
    photos: tuple[str, ...] = photos.TRAIN
    """Photos scenes are cut from (training: photos.TRAIN; evaluation: photos.HELD_OUT)."""
    speed_range: tuple[float, float] = (1.5, 4.0)
    """px/frame of sprite translations and camera pans (at S = 32)."""
    sprite_radius_range: tuple[float, float] = (2.0, 10.0)
    """Photo-family sprite radius, px."""
    zoom_range: tuple[float, float] = (0.04, 0.1)
    """|log scale| per frame of a zoom (0.1: the content grows 2x over 7 steps)."""
    supersample: int = 2
    """Sub-samples per pixel side (anti-aliasing, so sub-pixel motion shows; 2 at 32 px costs a
    quarter of 4 and still moves sprites smoothly)."""

    def __post_init__(self):
        if len(self.family_weights) != 3 or min(self.family_weights) < 0 or sum(self.family_weights) <= 0:
            raise InputError("SceneConfig.family_weights", f"must be 3 non-negative weights, got {self.family_weights}")
        if self.size < 8 or self.frames < 3:
            raise InputError("SceneConfig", f"size must be >= 8 and frames >= 3, got {self.size}, {self.frames}")

    def toy_world(self) -> WorldConfig:
        """The original world's ranges, scaled from its 16 px to this size."""
        k = self.size / 16
        return WorldConfig(size=self.size, frames=self.frames, speed_range=(0.75 * k, 2.0 * k),
                           orbit_radius_range=(2.0 * k, 4.0 * k), zigzag_amplitude=1.5 * k,
                           radius_range=(2.0 * k, 4.0 * k), supersample=self.supersample)


@dataclass(frozen=True)
class Sprite:
    """How to find a sprite in generated frames: its look at frame 0 and where it was."""

    patch: np.ndarray
    """(k, k, 3) float RGB around the sprite centre at frame 0 (k = 2 * ceil(radius) + 1)."""
    mask: np.ndarray
    """(k, k) bool: which patch pixels are the sprite."""
    start: tuple[float, float]
    """Sprite centre at frame 0, px."""
    colours: tuple[tuple[int, int, int], ...] = ()
    """A drawn sprite's colours (the colour tracker uses them); empty for photo sprites."""


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered clip of one family with its ground truth (eq=False: it holds arrays)."""

    frames: np.ndarray
    """(F, S, S, 3) uint8 RGB."""
    family: str
    """One of FAMILIES."""
    kind: str
    """One of KINDS."""
    wrap: bool
    """Whether content leaving one edge comes back at the other."""
    displacements: np.ndarray
    """(F-1, 2) content displacement per step, px: the sprite's, or the whole view's for a pan; 0 for zoom."""
    log_zoom: np.ndarray
    """(F-1,) log scale change of the content per step (> 0 zooming in); 0 unless zoom."""
    sprite: Sprite | None = None
    """The sprite, for sprite families."""
    motion: object = None
    """What moves it (a toy Motion, or a CameraMotion): `sample_scene(..., like=scene)` moves new content alike."""

    @property
    def kind_index(self) -> int:
        return KINDS.index(self.kind)


@dataclass(frozen=True)
class CameraMotion:
    """A camera scene's motion: a pan of the content by `velocity` px/frame, or a zoom by `step` per frame."""

    kind: str
    """"pan" or "zoom"."""
    velocity: tuple[float, float] = (0.0, 0.0)
    """Content displacement per frame (pan), output px."""
    step: float = 0.0
    """Log scale change of the content per frame (zoom; > 0 in)."""


def sample_scene(rng: np.random.Generator, cfg: SceneConfig, family: str | None = None,
                 kind: str | None = None, like: Scene | None = None) -> Scene:
    """A random scene of `family` (None: by cfg.family_weights) and `kind` (None: uniform in the family).

    With `like`, new content (appearance, background, start, photo) moving exactly as `like` does:
    the target of an evaluation pair, whose ground truth is the reference's motion.
    """
    if like is not None:
        family, kind = like.family, like.kind
    if family is None:
        weights = np.asarray(cfg.family_weights, float)
        family = str(rng.choice(FAMILIES, p=weights / weights.sum()))
    if family == "toy":
        return toy_scene(rng, cfg, kind, like)
    if family == "photo_sprite":
        return photo_sprite_scene(rng, cfg, kind, like)
    if family == "camera":
        return camera_scene(rng, cfg, kind, like)
    raise InputError("family", f"must be one of {FAMILIES}, got {family!r}")


def _kind(rng: np.random.Generator, kind: str | None, allowed: tuple[str, ...], family: str) -> str:
    """`kind`, or a uniform draw from `allowed`; InputError for a kind the family has not."""
    kind = str(rng.choice(allowed)) if kind is None else kind
    if kind not in allowed:
        raise InputError("kind", f"{family} scenes move by one of {allowed}, got {kind!r}")
    return kind


# ---------------------------------------------------------------- toy


def toy_scene(rng: np.random.Generator, cfg: SceneConfig, kind: str | None = None, like: Scene | None = None) -> Scene:
    """The original world at cfg.size."""
    world = cfg.toy_world()
    appearance = sample_appearance(rng, world)
    motion = like.motion if like is not None else sample_motion(rng, world, kind)
    return toy_scene_from_clip(render(appearance, motion, sample_start(rng, world), world))


def toy_scene_from_clip(clip) -> Scene:
    """A toy-world Clip as a Scene (the sprite described by its colours and frame-0 look)."""
    f = len(clip.frames)
    look = _sprite_at(clip.frames[0].astype(np.float64), clip.start, clip.appearance.radius, _toy_mask(clip.appearance))
    sprite = Sprite(*look, start=clip.start, colours=clip.appearance.colours)
    return Scene(clip.frames, "toy", clip.motion.kind, True, clip.displacements, np.zeros(f - 1), sprite, clip.motion)


def _toy_mask(appearance: Appearance):
    return lambda dx, dy: _sprite_masks(appearance, dx, dy)[0]


# ---------------------------------------------------------------- photo sprites


def photo_sprite_scene(rng: np.random.Generator, cfg: SceneConfig, kind: str | None = None,
                       like: Scene | None = None) -> Scene:
    """A drawn or photo sprite over a background of any brightness and texture; wrapping or not."""
    S, F, ss = cfg.size, cfg.frames, cfg.supersample
    kind = _kind(rng, kind, SPRITE_KINDS, "photo_sprite")
    background = _background(rng, cfg)  # (S, S, 3) float
    radius = float(np.exp(rng.uniform(*np.log(cfg.sprite_radius_range))))  # log-uniform: small ones are common
    if like is not None:  # the same motion: a sprite small enough for it to stay inside when it does not wrap
        wraps, motion = like.wrap, like.motion
        start = sample_start(rng, cfg.toy_world()) if wraps else _fitting_start(rng, motion, radius, S, F)
        while start is None:
            radius *= 0.8
            start = _fitting_start(rng, motion, radius, S, F)
    else:
        wraps = bool(rng.random() < 0.5)
        motion, start = _motion_and_start(rng, cfg, kind, radius, wraps)
    positions = motion.positions(start, F)  # (F, 2), unwrapped

    shape = str(rng.choice(("disc", "square", "diamond", "triangle", "cross")))
    appearance = Appearance(shape=shape, radius=radius, colours=((0, 0, 0),))
    inside_fn = _toy_mask(appearance)
    if rng.random() < 0.5:  # drawn: solid / stripes / checker in colours far from the background's mean
        colours, texture = _contrasting_colours(rng, background.mean(axis=(0, 1)))
        drawn = Appearance(shape=shape, radius=radius, colours=colours, texture=texture,
                           texture_width=float(rng.uniform(1.0, 3.0)),
                           texture_angle=float(rng.choice([0.0, np.pi / 4, np.pi / 2])))
        colour_at = _drawn_colour(drawn)
    else:  # cut from a photo
        colours = ()
        side = int(np.ceil(2 * radius + 2))
        patch = photos.random_crop(rng, cfg.photos, side * ss)  # (side*ss, side*ss, 3)
        colour_at = _patch_colour(patch, side, ss)

    sub = (np.arange(S * ss) + 0.5) / ss
    gx, gy = np.meshgrid(sub, sub)
    base = np.repeat(np.repeat(background, ss, axis=0), ss, axis=1)
    frames = []
    for p in positions:
        dx, dy = gx - p[0], gy - p[1]
        if wraps:
            dx, dy = wrap(dx, S), wrap(dy, S)
        inside = inside_fn(dx, dy)
        image = base.copy()
        image[inside] = colour_at(dx[inside], dy[inside])
        frames.append(image.reshape(S, ss, S, ss, 3).mean(axis=(1, 3)))
    frames = np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)
    look = _sprite_at(frames[0].astype(np.float64), (float(positions[0, 0]), float(positions[0, 1])), radius, inside_fn)
    sprite = Sprite(*look, start=(float(positions[0, 0]), float(positions[0, 1])), colours=colours)
    return Scene(frames, "photo_sprite", kind, wraps, np.diff(positions, axis=0), np.zeros(F - 1), sprite, motion)


def _background(rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
    """(S, S, 3) float: a photo crop (60%), a flat colour of any brightness (20%) or a toy pattern (20%)."""
    S = cfg.size
    u = rng.random()
    if u < 0.6:
        return photos.random_crop(rng, cfg.photos, S)
    c0 = np.array(_hsv(rng.uniform(0, 1), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0)), float)
    if u < 0.8:
        return np.broadcast_to(c0, (S, S, 3)).copy()
    c1 = np.clip(c0 + rng.uniform(-90, 90, 3), 0, 255)
    toy = sample_appearance(rng, cfg.toy_world())
    look = Appearance(shape="disc", radius=1.0, colours=((0, 0, 0),), background=toy.background,
                      background_waves=toy.background_waves, background_cells=toy.background_cells)
    xs = np.arange(S) + 0.5
    gx, gy = np.meshgrid(xs, xs)
    mix = _background_field(look, gx, gy, S)[..., None]
    return c0 + mix * (c1 - c0)


def _contrasting_colours(rng: np.random.Generator, mean: np.ndarray):
    """One or two sprite colours at least 100 RGB apart from `mean`, and a texture."""
    texture = str(rng.choice(TEXTURES))
    while True:
        main = np.array(_hsv(rng.uniform(0, 1), rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0)), float)
        if np.linalg.norm(main - mean) >= 100:
            break
    if texture == "solid":
        return (tuple(int(c) for c in main),), texture
    # the second colour: a darker shade of a bright main colour, a lighter tint of a dark one
    second = main * 0.4 if main.max() > 127 else main + (255 - main) * 0.6
    return (tuple(int(c) for c in main), tuple(int(round(c)) for c in second)), texture


def _drawn_colour(appearance: Appearance):
    def colour_at(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        _, second = _sprite_masks(appearance, dx, dy)
        main, other = (np.asarray(c, float) for c in (appearance.colours[0], appearance.colours[-1]))
        return np.where(second[:, None], other, main)
    return colour_at


def _patch_colour(patch: np.ndarray, side: int, ss: int):
    centre = side / 2

    def colour_at(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        col = np.clip(((dx + centre) * ss).astype(int), 0, patch.shape[1] - 1)
        row = np.clip(((dy + centre) * ss).astype(int), 0, patch.shape[0] - 1)
        return patch[row, col]
    return colour_at


def _motion_and_start(rng: np.random.Generator, cfg: SceneConfig, kind: str, radius: float, wraps: bool):
    """A motion of `kind` and a start; a non-wrapping motion is slowed until it fits inside the frame."""
    S, F = cfg.size, cfg.frames
    world = cfg.toy_world()
    world = WorldConfig(size=S, frames=F, speed_range=cfg.speed_range, orbit_radius_range=world.orbit_radius_range,
                        zigzag_amplitude=world.zigzag_amplitude, supersample=cfg.supersample)
    motion = sample_motion(rng, world, kind)
    if wraps:
        return motion, sample_start(rng, world)
    for _ in range(20):
        start = _fitting_start(rng, motion, radius, S, F)
        if start is not None:
            return motion, start
        motion = _slower(motion)
    raise InputError("photo_sprite", f"a radius-{radius:.1f} sprite does not fit a {S}-px frame")


def _fitting_start(rng: np.random.Generator, motion: Motion, radius: float, size: int, frames: int):
    """A start from which the whole path of a radius-`radius` sprite stays inside the frame, or None."""
    margin = radius + 0.5
    path = motion.positions((0.0, 0.0), frames)  # (F, 2) relative to the start
    low, high = margin - path.min(axis=0), size - margin - path.max(axis=0)
    if np.any(low > high):
        return None
    return float(rng.uniform(low[0], high[0])), float(rng.uniform(low[1], high[1]))


def _slower(motion: Motion) -> Motion:
    from dataclasses import replace

    return replace(motion, speed=motion.speed * 0.8, radius=motion.radius * 0.8, amplitude=motion.amplitude * 0.8)


def _sprite_at(frame: np.ndarray, centre, radius: float, inside_fn) -> tuple[np.ndarray, np.ndarray]:
    """The (k, k, 3) patch of `frame` around `centre` (wrapping) and the sprite's (k, k) mask."""
    k = 2 * int(np.ceil(radius)) + 1
    S = frame.shape[0]
    offsets = np.arange(k) - k // 2
    cols = (np.floor(centre[0]).astype(int) + offsets) % S
    rows = (np.floor(centre[1]).astype(int) + offsets) % S
    patch = frame[np.ix_(rows, cols)]
    gx, gy = np.meshgrid(np.floor(centre[0]) + offsets + 0.5 - centre[0], np.floor(centre[1]) + offsets + 0.5 - centre[1])
    return patch, inside_fn(gx, gy)


# ---------------------------------------------------------------- camera


def camera_scene(rng: np.random.Generator, cfg: SceneConfig, kind: str | None = None,
                 like: Scene | None = None, motion: CameraMotion | None = None) -> Scene:
    """A window on a larger photo that pans (any direction) or zooms (in or out); `motion` (or `like`'s
    motion) fixes the pan velocity or zoom step instead of drawing it."""
    S, F, ss = cfg.size, cfg.frames, cfg.supersample
    if like is not None:
        motion = like.motion
    kind = _kind(rng, motion.kind if motion is not None else kind, CAMERA_KINDS, "camera")
    canvas_side = int(S * rng.uniform(1.8, 2.6))  # the larger image, in output px
    canvas = photos.random_crop(rng, cfg.photos, canvas_side * 2)  # stored at 2x: 1 output px = 2 canvas px
    t = np.arange(F, dtype=np.float64)
    if kind == "pan":
        if motion is not None:
            velocity = np.array(motion.velocity)
        else:
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(*cfg.speed_range)
            velocity = speed * np.array([np.cos(angle), np.sin(angle)])  # content motion, output px/frame
        view = np.full(F, float(S) * rng.uniform(0.8, 1.2))  # window side in output px (view scale ~1)
        scale = S / view  # output px per canvas-output px
        centres = -np.outer(t, velocity) / scale[:, None]  # the camera moves against the content
        log_zoom = np.zeros(F - 1)
        displacements = np.tile(velocity, (F - 1, 1))
    else:
        step = motion.step if motion is not None else rng.uniform(*cfg.zoom_range) * rng.choice([-1.0, 1.0])
        view = S * rng.uniform(0.9, 1.3) * np.exp(-step * t) if step > 0 else S * rng.uniform(0.7, 0.9) * np.exp(-step * t)
        centres = np.zeros((F, 2))
        log_zoom = np.full(F - 1, step)
        displacements = np.zeros((F - 1, 2))
    # place the path anywhere on the canvas where every window fits
    half = view[:, None] / 2
    low, high = (half - centres).max(axis=0), (canvas_side - half - centres).min(axis=0)
    if np.any(low > high):  # too big a move for this canvas: try again with another draw
        return camera_scene(rng, cfg, kind, like, motion)
    origin = rng.uniform(low, high)
    frames = []
    for c, v in zip(centres + origin, view):
        # output pixel (x, y) at ss resolution -> canvas px at 2x: x_c = 2 * (c + (x/ss - S/2) * v / S)
        a = 2 * v / (S * ss)
        m = np.array([[a, 0, 2 * c[0] - a * S * ss / 2 + a / 2 - 0.5],
                      [0, a, 2 * c[1] - a * S * ss / 2 + a / 2 - 0.5]])
        big = cv2.warpAffine(canvas, m, (S * ss, S * ss), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        frames.append(big.reshape(S, ss, S, ss, 3).mean(axis=(1, 3)))
    frames = np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)
    motion = CameraMotion(kind, tuple(float(v) for v in displacements[0]), float(log_zoom[0]))
    return Scene(frames, "camera", kind, False, displacements, log_zoom, motion=motion)
