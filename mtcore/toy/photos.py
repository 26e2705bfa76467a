"""Real photographs that ship inside installed wheels (no download at run time), for the toy world.

scikit-image's `skimage/data` and matplotlib's sample data carry a few photographs with open
licences (from each loader's docstring). They are split once, by photo, into the ones training
sees and the ones held out for evaluation and the demo, so held-out figures are on unseen photos.

| photo | source | licence | split |
|---|---|---|---|
| astronaut | skimage | public domain (NASA) | train |
| hubble_deep_field | skimage | public domain (NASA) | train |
| retina | skimage | CC0 | train |
| immunohistochemistry | skimage (ihc.png) | no known copyright restrictions | train |
| coins | skimage | no known copyright restrictions | train |
| cell | skimage | CC0 | train |
| brick, grass, gravel | skimage | CC0 (cc0textures) | train |
| grace_hopper | matplotlib sample data | public domain (US Navy) | train |
| chelsea | skimage | CC0 (Stefan van der Walt) | held out |
| coffee | skimage | CC0 (Rachel Michetti) | held out |
| rocket | skimage | public domain (SpaceX) | held out |
| camera | skimage | CC0 (Lav Varshney) | held out |
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

_FILES = {
    "astronaut": ("skimage", "astronaut.png"),
    "hubble_deep_field": ("skimage", "hubble_deep_field.jpg"),
    "retina": ("skimage", "retina.jpg"),
    "immunohistochemistry": ("skimage", "ihc.png"),
    "coins": ("skimage", "coins.png"),
    "cell": ("skimage", "cell.png"),
    "brick": ("skimage", "brick.png"),
    "grass": ("skimage", "grass.png"),
    "gravel": ("skimage", "gravel.png"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
    "chelsea": ("skimage", "chelsea.png"),
    "coffee": ("skimage", "coffee.png"),
    "rocket": ("skimage", "rocket.jpg"),
    "camera": ("skimage", "camera.png"),
}
HELD_OUT = ("chelsea", "coffee", "rocket", "camera")
TRAIN = tuple(name for name in _FILES if name not in HELD_OUT)


def photo_path(name: str) -> Path:
    """Where a photo's file lies inside its wheel."""
    package, filename = _FILES[name]
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent / filename
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / filename


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB (grayscale photos are repeated over the channels)."""
    with Image.open(photo_path(name)) as im:
        return np.asarray(im.convert("RGB"))


def random_crop(rng: np.random.Generator, photos: tuple[str, ...], side: int, jitter: bool = True) -> np.ndarray:
    """(side, side, 3) float64 RGB in [0, 255]: a random square crop of a random photo, resized to `side`.

    The crop covers 12-60% of the photo's short side (so the same photo gives many views), may be
    flipped, and with `jitter` its brightness, contrast and saturation are varied, so backgrounds of
    every brightness occur.
    """
    photo = load_photo(str(rng.choice(photos)))
    h, w = photo.shape[:2]
    crop = int(max(side, round(min(h, w) * rng.uniform(0.12, 0.6))))
    crop = min(crop, h, w)
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    patch = photo[y : y + crop, x : x + crop]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(patch), (side, side), interpolation=cv2.INTER_AREA).astype(np.float64)
    if jitter:
        out = _jitter(rng, out)
    return out


def _jitter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Brightness, contrast and saturation changes; a grayscale photo may be tinted."""
    mean = img.mean(axis=(0, 1), keepdims=True)
    gray = img.mean(axis=2, keepdims=True)
    saturation = rng.uniform(0.3, 1.4)
    img = gray + saturation * (img - gray)
    if np.ptp(img - gray) < 1.0 and rng.random() < 0.5:  # grayscale photo: tint it
        tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.2, 0.6), 1.0))
        img = img * tint
    contrast = rng.uniform(0.5, 1.3)
    target_mean = rng.uniform(40, 215)
    img = (img - mean.mean()) * contrast + target_mean
    return np.clip(img, 0, 255)
