"""Shared fixtures: one tiny random SVD written with save_pretrained and loaded with from_pretrained."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from mtcore.models import init_tiny_model

    return init_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from mtcore.models import load_model

    return load_model(tiny_model_dir, device="cpu", dtype="fp32")


def moving_square_frames(num_frames: int = 16, size: int = 64, step: int = 4, seed: int = 0) -> np.ndarray:
    """(F, H, W, 3) uint8: a red square moving right on a textured background."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((size, size, 3)) * 60 + 120).astype(np.uint8)
    out = np.repeat(bg[None], num_frames, axis=0)
    for i in range(num_frames):
        x = (i * step) % (size - 12)
        out[i, 24:36, x : x + 12] = (230, 30, 30)
    return out


@pytest.fixture(scope="session")
def reference_video(tmp_path_factory):
    from mtcore.videoio import write_mp4

    return write_mp4(moving_square_frames(), tmp_path_factory.mktemp("media") / "ref.mp4")


@pytest.fixture
def target_images():
    from PIL import Image

    rng = np.random.default_rng(1)
    return [Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)) for _ in range(4)]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
