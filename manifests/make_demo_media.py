"""Regenerate the demo inputs of demo.yaml: three reference videos with clearly different motions
(a square sliding right, a disc falling down, a diamond orbiting) and three target images.

Run: .venv/bin/python manifests/make_demo_media.py   (writes manifests/demo/*; deterministic)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mtcore.videoio import write_mp4

SIZE, FRAMES = 64, 16
HERE = Path(__file__).parent / "demo"


def background(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=3)
    noise = rng.integers(-20, 20, size=(SIZE // 8, SIZE // 8, 3))
    tile = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(tile).resize((SIZE, SIZE), Image.Resampling.NEAREST)


def clip(shape: str, colour: tuple[int, int, int], path_fn, seed: int) -> np.ndarray:
    frames = []
    for t in range(FRAMES):
        img = background(seed).copy()
        d = ImageDraw.Draw(img)
        x, y = path_fn(t / (FRAMES - 1))
        r = 7
        if shape == "square":
            d.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        elif shape == "disc":
            d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:
            d.polygon([(x, y - r - 2), (x + r + 2, y), (x, y + r + 2), (x - r - 2, y)], fill=colour)
        frames.append(np.asarray(img))
    return np.stack(frames)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    write_mp4(clip("square", (230, 40, 40), lambda s: (10 + 44 * s, 32), 1), HERE / "slide_right.mp4")
    write_mp4(clip("disc", (40, 90, 230), lambda s: (32, 10 + 44 * s), 2), HERE / "fall_down.mp4")
    orbit = lambda s: (32 + 18 * math.cos(2 * math.pi * s), 32 + 18 * math.sin(2 * math.pi * s))
    write_mp4(clip("diamond", (240, 220, 40), orbit, 3), HERE / "orbit.mp4")
    for name, shape, colour, seed in [("cat", "disc", (250, 150, 30), 11), ("robot", "square", (30, 200, 120), 12),
                                      ("star", "diamond", (200, 60, 220), 13)]:
        Image.fromarray(clip(shape, colour, lambda s: (24, 40), seed)[0]).save(HERE / f"{name}.png")


if __name__ == "__main__":
    main()
