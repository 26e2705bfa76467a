"""Toy world: sampling is seeded, renderer and tracker agree on every motion kind, wrap-around holds."""

from __future__ import annotations

import numpy as np
import pytest

from mtcore.errors import InputError
from mtcore.toy.render import render
from mtcore.toy.sampling import sample_appearance, sample_clip, sample_motion, sample_start
from mtcore.toy.tokens import motion_tokens
from mtcore.toy.tracking import track_sprite, trajectory_metrics
from mtcore.toy.world import MOTION_KINDS, Appearance, Motion, WorldConfig

CFG = WorldConfig()
S = CFG.size


def torus_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| with the difference taken modulo S into [-S/2, S/2)."""
    return np.abs((a - b + S / 2) % S - S / 2)


def red_disc(radius: float = 2.5) -> Appearance:
    return Appearance(shape="disc", radius=radius, colours=((230, 20, 20),))


def test_sample_clip_is_deterministic_and_composed_in_order():
    a, b = sample_clip(np.random.default_rng(3), CFG), sample_clip(np.random.default_rng(3), CFG)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert (a.appearance, a.motion, a.start) == (b.appearance, b.motion, b.start)
    assert not np.array_equal(a.frames, sample_clip(np.random.default_rng(4), CFG).frames)

    # sample_clip = appearance, then motion, then start, from one generator
    rng = np.random.default_rng(3)
    appearance, motion, start = sample_appearance(rng, CFG), sample_motion(rng, CFG), sample_start(rng, CFG)
    assert (appearance, motion, start) == (a.appearance, a.motion, a.start)
    np.testing.assert_array_equal(render(appearance, motion, start, CFG).frames, a.frames)


@pytest.mark.parametrize("cfg", [CFG, WorldConfig(size=24, frames=5)])
def test_shapes_and_dtypes(cfg):
    clip = sample_clip(np.random.default_rng(0), cfg)
    F, size = cfg.frames, cfg.size
    assert clip.frames.shape == (F, size, size, 3) and clip.frames.dtype == np.uint8
    assert clip.positions.shape == (F, 2) and clip.positions.dtype == np.float64
    assert clip.displacements.shape == (F - 1, 2)
    np.testing.assert_allclose(clip.displacements, np.diff(clip.positions, axis=0))
    np.testing.assert_allclose(clip.positions[0], clip.start)
    assert all(0 <= v < size for v in clip.start)


@pytest.mark.parametrize("kind", MOTION_KINDS)
def test_tracked_positions_match_ground_truth(kind):
    # Validates renderer, tracker and wrap-around together, over random shapes/textures/backgrounds.
    for seed in range(6):
        clip = sample_clip(np.random.default_rng(seed), CFG, kind)
        assert clip.motion.kind == kind
        tracked = track_sprite(clip.frames, clip.appearance.colours)
        assert not np.isnan(tracked).any()
        assert torus_error(tracked, clip.positions).max() < 0.5, (seed, clip.appearance, clip.motion)
        # unwrapped: tracked steps equal true steps, not steps modulo S
        np.testing.assert_allclose(np.diff(tracked, axis=0), clip.displacements, atol=0.5)


def test_sprite_straddling_the_edge_is_tracked_and_unwrapped():
    motion = Motion("translate", angle=0.0, speed=1.0)
    clip = render(red_disc(), motion, (15.5, 0.2), CFG)
    red = (clip.frames[0, :, :, 0] > 150) & (clip.frames[0, :, :, 1] < 100)
    assert red[:, 0].any() and red[:, -1].any(), "the disc should cover both the left and right columns"
    assert red[0, :].any() and red[-1, :].any(), "and both the top and bottom rows"
    tracked = track_sprite(clip.frames, clip.appearance.colours)
    assert torus_error(tracked[0], np.array([15.5, 0.2])).max() < 0.2
    np.testing.assert_allclose(tracked[:, 0] - tracked[0, 0], np.arange(CFG.frames), atol=0.2)
    assert tracked[-1, 0] > S  # kept going right across the edge instead of jumping back to 0


def test_track_sprite_returns_nan_without_the_sprite():
    clip = render(red_disc(), Motion("translate", speed=1.0), (4.0, 4.0), CFG)
    frames = clip.frames.copy()
    frames[2] = frames[2, 0, 0]  # frame 2: flat background only
    tracked = track_sprite(frames, clip.appearance.colours)
    assert np.isnan(tracked[2]).all() and not np.isnan(np.delete(tracked, 2, axis=0)).any()
    metrics = trajectory_metrics(tracked, clip.displacements)
    assert metrics["steps"] == CFG.frames - 3  # the two steps touching frame 2 are dropped
    assert metrics["cosine"] == pytest.approx(1.0, abs=1e-3)


def test_trajectory_metrics_truth_and_reversal():
    clip = sample_clip(np.random.default_rng(1), CFG, "zigzag")
    d = clip.displacements
    same = trajectory_metrics(clip.positions, d)
    assert same["cosine"] == pytest.approx(1.0) and same["speed_ratio"] == pytest.approx(1.0)
    reversed_positions = clip.positions[0] - np.concatenate([np.zeros((1, 2)), np.cumsum(d, axis=0)])
    assert trajectory_metrics(reversed_positions, d)["cosine"] == pytest.approx(-1.0)
    doubled = clip.positions[0] + 2 * (clip.positions - clip.positions[0])
    assert trajectory_metrics(doubled, d)["speed_ratio"] == pytest.approx(2.0)
    # positions given modulo S are unwrapped when the size is passed
    assert trajectory_metrics(clip.positions % S, d, size=S)["cosine"] == pytest.approx(1.0)


def test_pan_moves_the_whole_scene():
    appearance = sample_appearance(np.random.default_rng(5), WorldConfig(backgrounds=("noise",)))
    # integer speed: each frame is the previous one rolled by one pixel (background and sprite)
    clip = render(appearance, Motion("pan", angle=0.0, speed=1.0), (5.0, 9.0), CFG)
    rolled = np.roll(clip.frames[0], 1, axis=1).astype(int)
    assert np.abs(clip.frames[1].astype(int) - rolled).max() <= 1
    assert np.abs(clip.frames[1].astype(int) - clip.frames[0].astype(int)).max() > 10
    np.testing.assert_allclose(clip.motion.scene_offset(CFG.frames)[:, 0], np.arange(CFG.frames))

    # any other motion keeps the background still: pixels far from the sprite do not change
    still = render(appearance, Motion("translate", angle=0.0, speed=1.0), (5.0, 9.0), CFG)
    yy, xx = np.mgrid[0:S, 0:S] + 0.5
    far = np.ones((S, S), bool)
    for p in still.positions[:2]:
        far &= np.hypot(torus_error(xx, p[0]), torus_error(yy, p[1])) > appearance.radius * 1.4 + 1
    np.testing.assert_array_equal(still.frames[0][far], still.frames[1][far])
    assert not still.motion.scene_offset(CFG.frames).any()


def test_starts_are_uniform_and_independent_of_the_motion():
    rng = np.random.default_rng(0)
    starts, steps = [], []
    for _ in range(2000):
        motion = sample_motion(rng, CFG)
        start = sample_start(rng, CFG)
        starts.append(start)
        steps.append(motion.displacements(start, CFG.frames).sum(axis=0))
    starts, steps = np.array(starts), np.array(steps)  # (N, 2) each
    assert np.abs(starts.mean(axis=0) - S / 2).max() < 0.4  # std of the mean ~0.1
    assert starts.min() >= 0 and starts.max() < S
    # a model that only sees frame 0 cannot predict the direction: no correlation, no mean direction
    unit = steps / np.maximum(np.linalg.norm(steps, axis=1, keepdims=True), 1e-9)
    for i in range(2):
        for j in range(2):
            assert abs(np.corrcoef(starts[:, i], unit[:, j])[0, 1]) < 0.1
    assert np.linalg.norm(unit.mean(axis=0)) < 0.1


def test_motion_family_semantics():
    k = CFG.zigzag_half_period
    zig = Motion("zigzag", angle=0.0, speed=1.0, amplitude=1.5, half_period=k).displacements((0, 0), 9)
    np.testing.assert_allclose(zig[:, 0], 1.0)
    np.testing.assert_allclose(zig[:, 1], 0.75 * np.array([1, 1, -1, -1, 1, 1, -1, -1]))

    bounce = Motion("bounce", angle=np.pi / 2, speed=1.5, reverse_at=3.0).positions((2, 2), 8)
    np.testing.assert_allclose(bounce[:, 1], 2 + 1.5 * np.array([0, 1, 2, 3, 2, 1, 0, -1]))

    orbit = Motion("orbit", radius=3.0, angular_speed=np.pi / 7, phase=0.4, direction=-1)
    p = orbit.positions((8, 8), 8)
    centre = np.array([8, 8]) - 3.0 * np.array([np.cos(0.4), np.sin(0.4)])
    np.testing.assert_allclose(np.linalg.norm(p - centre, axis=1), 3.0)
    np.testing.assert_allclose(p[-1], p[0] - 2 * (p[0] - centre), atol=1e-9)  # half a turn


def test_motion_tokens():
    d = np.array([[1.0, 0.0], [1.0, 0.5], [-2.0, 0.0]])  # F = 4
    tokens = motion_tokens(d, kind_index=2, dim=32)
    assert tokens.shape == (5, 32) and tokens.dtype == np.float32
    assert not tokens[0].any()  # frame 0: no previous frame, zero displacement
    assert not tokens[:, 21:].any()  # zero padding after the features
    np.testing.assert_allclose(tokens[3, 11:13], [0.0, 0.5 / 16])  # cumulative offset (1+1-2, 0+0.5+0) / S
    assert not tokens[-1, 11:].any()  # the temporal token carries no offset
    assert tokens[-1, 5] == 1 and tokens[-1, 6:11].tolist() == [0, 0, 1, 0, 0]
    assert len({row.tobytes() for row in tokens[1:4]}) == 3  # each step encodes differently
    np.testing.assert_allclose(tokens[1, :2], [0.5, 0.0])

    np.testing.assert_array_equal(tokens, motion_tokens(d, 2))
    assert not np.array_equal(tokens, motion_tokens(d * 0.5, 2))
    assert not np.array_equal(tokens, motion_tokens(d, 3))
    with pytest.raises(InputError, match="dim"):
        motion_tokens(d, 0, dim=8)


def test_config_refuses_unknown_values():
    with pytest.raises(InputError, match="WorldConfig.motions"):
        WorldConfig(motions=("translate", "spin"))
    with pytest.raises(InputError, match="WorldConfig.frames"):
        WorldConfig(frames=2)
    with pytest.raises(InputError, match="kind"):
        sample_motion(np.random.default_rng(0), CFG, "spin")
