"""The broader toy world (mtcore.toy.scenes): every family and motion kind renders deterministically,
carries ground truth its trackers recover from the frames, and `like=` moves new content the same way."""

from __future__ import annotations

import numpy as np
import pytest

from mtcore.errors import InputError
from mtcore.toy import photos
from mtcore.toy.evaluate import KINDS, true_motion
from mtcore.toy.scenes import FAMILIES, CameraMotion, SceneConfig, camera_scene, sample_scene
from mtcore.toy.tracking import camera_motion

CFG = SceneConfig(size=32, frames=8, photos=photos.HELD_OUT)
FAMILY_KINDS = [(f, k) for f in FAMILIES for k in KINDS[f]]


def test_photos_ship_in_wheels_and_the_split_is_by_photo():
    assert not set(photos.TRAIN) & set(photos.HELD_OUT)
    for name in photos.TRAIN + photos.HELD_OUT:
        assert photos.photo_path(name).is_file(), name
    img = photos.load_photo("camera")  # a grayscale photo comes back as RGB
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


@pytest.mark.parametrize("family,kind", FAMILY_KINDS)
def test_every_family_and_kind_renders_deterministically(family, kind):
    a = sample_scene(np.random.default_rng([3, 1]), CFG, family, kind)
    b = sample_scene(np.random.default_rng([3, 1]), CFG, family, kind)
    assert a.frames.shape == (8, 32, 32, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert (a.family, a.kind) == (family, kind)
    assert a.displacements.shape == (7, 2) and a.log_zoom.shape == (7,)
    assert np.abs(np.diff(a.frames.astype(int), axis=0)).mean() > 0.5  # it moves


@pytest.mark.parametrize("family,kind", FAMILY_KINDS)
def test_like_moves_new_content_the_same_way_and_trackers_follow_it(family, kind):
    rng = np.random.default_rng([5, FAMILY_KINDS.index((family, kind))])
    reference = sample_scene(rng, CFG, family, kind)
    target = sample_scene(rng, CFG, like=reference)
    assert (target.family, target.kind) == (family, kind)
    np.testing.assert_allclose(target.displacements, reference.displacements, atol=1e-9)
    np.testing.assert_allclose(target.log_zoom, reference.log_zoom, atol=1e-9)
    assert not np.array_equal(target.frames[0], reference.frames[0])  # new content
    # the trackers recover the ground truth from the reference's own frames (the evaluation redraws
    # the rare target they cannot follow; a reference is never redrawn, so most must pass outright)
    assert true_motion(reference, reference.frames)["cosine"] > 0.8


def test_a_fixed_camera_pan_is_recovered_by_phase_correlation():
    motion = CameraMotion("pan", velocity=(-3.0, 1.0))
    scene = camera_scene(np.random.default_rng(1), CFG, motion=motion)
    np.testing.assert_allclose(scene.displacements, np.tile([-3.0, 1.0], (7, 1)))
    shifts, _ = camera_motion(scene.frames)
    np.testing.assert_allclose(shifts.mean(axis=0), [-3.0, 1.0], atol=0.5)
    # a still view of the same photo gives no shift: the measured pan is the scene's, not the tracker's
    still = camera_scene(np.random.default_rng(1), CFG, motion=CameraMotion("pan", velocity=(0.0, 0.0)))
    assert np.abs(camera_motion(still.frames)[0]).max() < 0.5


@pytest.mark.parametrize("step", [0.08, -0.08])
def test_zoom_sign_is_recovered(step):
    scene = camera_scene(np.random.default_rng(2), CFG, motion=CameraMotion("zoom", step=step))
    assert true_motion(scene, scene.frames)["cosine"] > 0.9  # same sign as the true log zoom
    assert np.sign(camera_motion(scene.frames)[1].mean()) == np.sign(step)


def test_unknown_family_or_kind_is_refused():
    with pytest.raises(InputError, match="family"):
        sample_scene(np.random.default_rng(0), CFG, "cartoon")
    with pytest.raises(InputError, match="camera scenes move by one of"):
        sample_scene(np.random.default_rng(0), CFG, "camera", "orbit")
