"""Metrics on synthetic videos with known answers, and motion fidelity against the published formula."""

from __future__ import annotations

import numpy as np
import pytest

from mtcore.metrics import compute_metrics
from mtcore.metrics.appearance import PSNR_CAP, clip_similarity, psnr, ssim
from mtcore.metrics.motion import fidelity_from_tracks


def square_video(frames=8, size=32, step=(2.0, 0.0), start=(8.0, 12.0), colour=(230, 30, 30), half=4, seed=0,
                 background=None) -> np.ndarray:
    """(F, S, S, 3) uint8: a square moving by `step` px per frame over noise (or a flat `background`)."""
    rng = np.random.default_rng(seed)
    if background is None:
        base = (rng.random((size, size, 3)) * 60 + 120).astype(np.uint8)
    else:
        base = np.full((size, size, 3), background, np.uint8)
    out = np.repeat(base[None], frames, axis=0)
    for t in range(frames):
        x, y = int(round(start[0] + step[0] * t)), int(round(start[1] + step[1] * t))
        out[t, max(0, y - half):y + half, max(0, x - half):x + half] = colour
    return out


REFERENCE = square_video()


@pytest.mark.parametrize("name, output", [
    ("other position and colour", square_video(start=(6, 20), colour=(20, 200, 40), half=5, seed=3)),
    ("small, flat light background", square_video(start=(10, 5), colour=(20, 20, 240), half=2, background=200)),
    ("twice the size", square_video(size=64, step=(4, 0), start=(10, 30), half=10, seed=5)),
])
def test_the_same_motion_elsewhere_scores_high(name, output):
    assert compute_metrics(REFERENCE, output)["motion_fidelity"] >= 0.9, name


def test_opposite_orthogonal_and_still_motion_score_low():
    opposite = compute_metrics(REFERENCE, square_video(step=(-2, 0), start=(24, 12)))["motion_fidelity"]
    orthogonal = compute_metrics(REFERENCE, square_video(step=(0, 2), start=(12, 4)))["motion_fidelity"]
    still = compute_metrics(REFERENCE, square_video(step=(0, 0)))
    assert opposite <= 0.0 and orthogonal <= 0.5
    assert np.isfinite(still["motion_fidelity"]) and still["motion_fidelity"] <= 0.1
    assert still["moving_tracks_output"] == 0 and still["moving_tracks_reference"] > 0


def test_both_still_is_one_and_nothing_is_nan():
    a, b = square_video(step=(0, 0)), square_video(step=(0, 0), start=(20, 20), seed=4)
    row = compute_metrics(a, b, target=b[0])
    assert row["motion_fidelity"] == 1.0
    assert all(not (isinstance(v, float) and np.isnan(v)) for v in row.values())


def test_identical_videos_cap_psnr_and_give_ssim_one():
    row = compute_metrics(REFERENCE, REFERENCE, target=REFERENCE[0])
    assert row["psnr_first"] == PSNR_CAP and row["ssim_first"] == pytest.approx(1.0)
    assert row["motion_fidelity"] >= 0.9
    noisy = np.clip(REFERENCE[0].astype(int) + np.random.default_rng(0).integers(-20, 21, REFERENCE[0].shape), 0, 255)
    assert 20 < psnr(REFERENCE[0], noisy.astype(np.uint8)) < 40 and ssim(REFERENCE[0], noisy.astype(np.uint8)) < 0.99


def test_a_frozen_output_has_no_frame_change():
    frozen = np.repeat(REFERENCE[:1], len(REFERENCE), axis=0)
    row = compute_metrics(REFERENCE, frozen)
    assert row["frame_change"] < 1e-9 and row["warp_error"] < 1e-3
    moving = compute_metrics(REFERENCE, REFERENCE)
    assert moving["frame_change"] > 0.005


def test_clip_similarity_is_null_with_a_reason_for_a_zero_encoder():
    zero = lambda images: np.zeros((len(images), 8))  # noqa: E731  (the toy model's encoder)
    first, avg, note = clip_similarity(zero, REFERENCE[0], REFERENCE)
    assert first is None and avg is None and "zero embeddings" in note
    rng = np.random.default_rng(0)
    random = lambda images: rng.normal(size=(len(images), 8))  # noqa: E731
    first, avg, note = clip_similarity(random, REFERENCE[0], REFERENCE)
    assert -1 <= first <= 1 and -1 <= avg <= 1 and note is None


def published_one_sided(generated: np.ndarray, original: np.ndarray) -> float:
    """NumPy transcription of DMT's motion_fidelity_score.py: get_similarity_matrix, then get_score."""
    d1 = generated[:, 1:] - generated[:, :-1]
    d1 = d1 / np.linalg.norm(d1, axis=-1, keepdims=True)
    d2 = original[:, 1:] - original[:, :-1]
    d2 = d2 / np.linalg.norm(d2, axis=-1, keepdims=True)
    similarity = np.einsum("ntc,mtc->nmt", d1, d2).mean(axis=-1)
    similarity = similarity - np.eye(similarity.shape[0])
    return float(similarity.max(axis=1).mean())


def test_motion_fidelity_equals_the_published_formula_where_both_are_defined():
    """Hand-made tracklets: every step moves (no 0/0) and each row's best match is off the diagonal
    (where DMT's identity subtraction changes nothing); there our one-sided parts equal DMT's score."""
    rng = np.random.default_rng(7)
    n, frames = 6, 9
    steps = rng.normal(size=(n, frames - 1, 2)) * 0.05 + np.array([0.04, 0.0])  # all moving, mostly right
    starts = rng.uniform(0.2, 0.8, size=(n, 1, 2))
    generated = np.concatenate([starts, starts + np.cumsum(steps, axis=1)], axis=1)
    # the original: the same tracklets rotated by one index (so best matches sit off the diagonal), jittered
    original = np.roll(generated, 1, axis=0) + rng.normal(size=generated.shape) * 0.01
    unit = lambda t: np.diff(t, axis=1) / np.linalg.norm(np.diff(t, axis=1), axis=-1, keepdims=True)  # noqa: E731
    plain = np.einsum("ntc,mtc->nm", unit(generated), unit(original))
    assert not np.any(plain.argmax(axis=1) == np.arange(n)) and not np.any(plain.argmax(axis=0) == np.arange(n))
    expected_forward = published_one_sided(generated, original)
    expected_backward = published_one_sided(original, generated)
    exact = fidelity_from_tracks(generated, original, eps=0.0)  # the epsilon is the only difference
    assert exact.output_to_reference == pytest.approx(expected_forward, abs=1e-9)
    assert exact.reference_to_output == pytest.approx(expected_backward, abs=1e-9)
    assert exact.score == pytest.approx((expected_forward + expected_backward) / 2, abs=1e-9)
    assert expected_forward < 0.99  # not a trivial case: no tracklet has an exact twin
    default = fidelity_from_tracks(generated, original)  # eps 1e-3 shortens each unit step a little
    assert default.score == pytest.approx(exact.score, abs=0.05) and default.score < exact.score


def test_mt_metrics_prints_one_json_object(tmp_path):
    import json
    import subprocess

    from PIL import Image

    from mtcore.io.videoio import write_mp4
    from tests.test_cli_core import MT

    write_mp4(REFERENCE, tmp_path / "ref.mp4")
    moved = square_video(start=(6, 20), colour=(20, 200, 40), half=5, seed=3)
    write_mp4(moved, tmp_path / "out.mp4")
    Image.fromarray(moved[0]).save(tmp_path / "target.png")
    r = subprocess.run([MT, "metrics", "--reference", tmp_path / "ref.mp4", "--output", tmp_path / "out.mp4",
                        "--target", tmp_path / "target.png"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["motion_fidelity"] >= 0.8 and row["psnr_first"] > 20 and row["clip_first"] is None  # H.264 is lossy
    assert row["clip_note"] == "no image encoder given" and row["metrics_version"]
    missing = subprocess.run([MT, "metrics", "-r", tmp_path / "nope.mp4", "-o", tmp_path / "out.mp4"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nope.mp4: file not found" in missing.stderr
