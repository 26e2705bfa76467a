"""Regenerate the demo inputs of demo.yaml from the toy world (16 px, 8 frames, the built-in toy
model's own domain): three reference videos with clearly different motions (a sprite sliding
right, one falling down, one orbiting) and three target images (other sprites, backgrounds and
positions). Deterministic.

Run: .venv/bin/python manifests/make_demo_media.py   (writes manifests/demo/*)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from mtcore.toy.render import render
from mtcore.toy.sampling import sample_appearance
from mtcore.toy.world import Motion, WorldConfig
from mtcore.io.videoio import write_mp4

HERE = Path(__file__).parent / "demo"
CFG = WorldConfig(size=16, frames=8)
MOTIONS = {
    "slide_right": Motion("translate", angle=0.0, speed=1.5),
    "fall_down": Motion("translate", angle=math.pi / 2, speed=1.5),
    "orbit": Motion("orbit", radius=3.0, angular_speed=2 * math.pi / 8, phase=0.0, direction=1),
}
TARGETS = {"cat": (4.0, 11.0), "robot": (11.0, 5.0), "star": (8.0, 8.0)}


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    for name, motion in MOTIONS.items():
        clip = render(sample_appearance(rng, CFG), motion, (5.0, 5.0), CFG)
        write_mp4(clip.frames, HERE / f"{name}.mp4", fps=4)
    still = Motion("translate", speed=0.0)
    for name, start in TARGETS.items():
        clip = render(sample_appearance(rng, CFG), still, start, CFG)
        Image.fromarray(clip.frames[0]).save(HERE / f"{name}.png")


if __name__ == "__main__":
    main()
