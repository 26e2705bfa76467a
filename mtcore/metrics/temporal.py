"""Temporal consistency: warping error under optical flow, and how much the video changes at all.

The warping error is the mean absolute difference (in [0, 1]) between frame t and frame t + 1
warped back to t along the dense optical flow from t to t + 1 (OpenCV Farneback, on frames
upscaled to the tracking size), averaged over consecutive pairs; pixels the flow takes outside the
frame are left out. A smooth video has a low warping error, but so has a frozen one: the mean
frame-to-frame change (mean |frame t+1 - frame t| in [0, 1]) tells them apart (a frozen video has ~0).
"""

from __future__ import annotations

import cv2
import numpy as np

from mtcore.metrics.motion import TRACK_SIDE


def frame_change(frames: np.ndarray) -> float:
    """Mean |frame t+1 - frame t| over pixels, channels and pairs, in [0, 1]."""
    f = frames.astype(np.float64) / 255.0
    return float(np.abs(np.diff(f, axis=0)).mean()) if len(f) > 1 else 0.0


def warp_error(frames: np.ndarray) -> float:
    """Mean absolute error, in [0, 1], between each frame and the next warped back along Farneback flow."""
    n, h, w = frames.shape[:3]
    if n < 2:
        return 0.0
    up = max(1.0, TRACK_SIDE / min(h, w))
    size = (int(round(w * up)), int(round(h * up)))
    big = [cv2.resize(np.ascontiguousarray(f), size, interpolation=cv2.INTER_CUBIC) for f in frames]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in big]
    gx, gy = np.meshgrid(np.arange(size[0], dtype=np.float32), np.arange(size[1], dtype=np.float32))
    errors = []
    for t in range(n - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        map_x, map_y = gx + flow[..., 0], gy + flow[..., 1]
        warped = cv2.remap(big[t + 1], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        valid = (map_x >= 0) & (map_x <= size[0] - 1) & (map_y >= 0) & (map_y <= size[1] - 1)
        if valid.any():
            diff = np.abs(big[t].astype(np.float64) - warped.astype(np.float64)) / 255.0
            errors.append(float(diff[valid].mean()))
    return float(np.mean(errors)) if errors else 0.0
