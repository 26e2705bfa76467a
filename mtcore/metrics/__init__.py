"""Metrics of a transfer: pure functions of frames (uint8 numpy), no prefect or ray.

- motion (`motion.py`): motion fidelity of the output against the reference (symmetric, DMT-style);
- appearance (`appearance.py`): PSNR / SSIM of the first frame against the target, CLIP-1st / CLIP-avg;
- temporal (`temporal.py`): warping error under optical flow, and the mean frame-to-frame change.
`compute_metrics` gives all of them as one flat dict whose keys are the columns of catalog/metrics.
METRICS_VERSION changes whenever a value would change; the pipeline computes what a version lacks.

May import: mtcore.errors, mtcore.io, mtcore.method (the model's CLIP image encoder).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mtcore import METRICS_VERSION
from mtcore.metrics.appearance import Encoder, clip_similarity, psnr, ssim
from mtcore.metrics.motion import TRACKERS, motion_fidelity
from mtcore.metrics.temporal import frame_change, warp_error

METRIC_NAMES = ("motion_fidelity", "motion_fidelity_output_to_reference", "motion_fidelity_reference_to_output",
                "moving_tracks_output", "moving_tracks_reference", "psnr_first", "ssim_first", "clip_first",
                "clip_avg", "clip_note", "warp_error", "frame_change", "tracker")
"""Keys of `compute_metrics` (and columns of catalog/metrics besides its keys and bookkeeping)."""


def compute_metrics(reference: np.ndarray, output: np.ndarray, target: np.ndarray | None = None,
                    encoder: Encoder | None = None, tracker: str = "opencv_lk") -> dict[str, Any]:
    """All metrics of one output video.

    reference: (F, h, w, 3) uint8, the reference's frames (same F as the output; any size);
    output: (F, H, W, 3) uint8; target: (H, W, 3) uint8 fitted to the output's size, or None (then
    the appearance metrics are None); encoder: the model's image encoder for CLIP-1st / CLIP-avg.
    """
    if tracker not in TRACKERS:
        raise ValueError(f"unknown tracker {tracker!r}; known: {', '.join(TRACKERS)}")
    if len(reference) != len(output):
        raise ValueError(f"reference has {len(reference)} frames, output {len(output)}: read the reference at F frames")
    fidelity = motion_fidelity(output, reference, tracker)
    row: dict[str, Any] = {
        "motion_fidelity": fidelity.score,
        "motion_fidelity_output_to_reference": fidelity.output_to_reference,
        "motion_fidelity_reference_to_output": fidelity.reference_to_output,
        "moving_tracks_output": fidelity.moving_output,
        "moving_tracks_reference": fidelity.moving_reference,
        "psnr_first": None, "ssim_first": None, "clip_first": None, "clip_avg": None,
        "clip_note": "no target image given",
        "warp_error": warp_error(output),
        "frame_change": frame_change(output),
        "tracker": tracker,
    }
    if target is not None:
        if target.shape != output.shape[1:]:
            raise ValueError(f"target is {target.shape}, output frames {output.shape[1:]}: fit the target first")
        row["psnr_first"], row["ssim_first"] = psnr(output[0], target), ssim(output[0], target)
        row["clip_first"], row["clip_avg"], row["clip_note"] = clip_similarity(encoder, target, output)
    return row


def timed_metrics(*args, **kwargs) -> dict[str, Any]:
    """`compute_metrics` plus "seconds" (its wall time) and "metrics_version"."""
    t0 = time.perf_counter()
    row = compute_metrics(*args, **kwargs)
    return {**row, "metrics_version": METRICS_VERSION, "seconds": time.perf_counter() - t0}


__all__ = ["METRICS_VERSION", "METRIC_NAMES", "compute_metrics", "timed_metrics"]
