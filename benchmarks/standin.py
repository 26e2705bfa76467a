"""A stand-in model for measuring the pipeline, not the model (benchmarks and tests only; no flag of `mt`).

The real model folder is loaded by the real `ModelWorker` (the built-in toy SVD, so identities, keys,
the embedding's shape and the config resolution are the real ones), and every work item goes through the
real `tasks.work` functions: reading the reference and target through the storage layer, saving the
embedding (safetensors), writing the video through the storage layer, the catalog rows, and, with
metrics on, the real metrics on the mp4 as written. Only the three calls that cost model or encoder
time are replaced, in every process that serves items:

  * `invert_fitting` returns a zero embedding of the right shape (no optimisation);
  * `transfer` returns no frames (no sampling);
  * `write_mp4` writes the bytes of one real 16-px H.264 mp4, encoded once per process by the real
    `write_mp4`, to the storage layer's temporary file (no ffmpeg process per video; the real encoder
    writes beside it and renames).

`install()` patches this process; `ray_runtime_env()` is what a driver passes to `ray.init` so that every
Ray worker of the job runs `install()` at start-up (Ray's `worker_process_setup_hook`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_MP4: bytes | None = None


def video_bytes() -> bytes:
    """One real mp4 (8 frames of 16x16, H.264), encoded once per process by the real encoder."""
    global _MP4
    if _MP4 is None:
        import tempfile

        import numpy as np

        from mtcore.io.videoio import write_mp4 as real_write_mp4

        frames = np.zeros((8, 16, 16, 3), np.uint8)
        frames[:, 4:12, :, 0] = np.arange(8, dtype=np.uint8)[:, None, None] * 30
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "standin.mp4"
            real_write_mp4(frames, path)
            _MP4 = path.read_bytes()
    return _MP4


def invert_fitting(model, references, config, reference_sha256s=None, free_bytes=None, captions=None):
    import torch

    from mtcore.method.config import config_to_dict
    from mtcore.method.embedding import MotionEmbedding

    full = model.resolve(config)
    shas = list(reference_sha256s or [""] * len(references))
    return [(MotionEmbedding(tokens=torch.zeros(model.embedding_groups(full.num_frames), config.tokens_per_frame, model.token_dim),
                             model_id=model.model_id, reference_sha256=sha, inversion_config=config_to_dict(config)),
             None) for sha in shas]


def transfer(model, images, embedding, config, seeds=None, **_):
    return [None] * len(images)


def write_mp4(frames, path, fps: int = 7, crf: int = 18) -> Path:
    data = video_bytes()
    log = os.environ.get("MT_STANDIN_LOG")
    if log:  # which videos were made, one line each (O_APPEND: lines of several processes never mix)
        name = Path(path).name
        key = name.lstrip(".").split(".")[0] if ".tmp-" in name else name
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (key + "\n").encode())
        finally:
            os.close(fd)
    Path(path).write_bytes(data)  # `path` is already the storage layer's temporary file (tasks.work)
    return Path(path)


def install() -> None:
    """Replace the model's and the encoder's work in this process (tasks.work's own names)."""
    import tasks.work as work

    video_bytes()
    work.invert_fitting, work.transfer, work.write_mp4 = invert_fitting, transfer, write_mp4
    os.environ["MT_STANDIN"] = "1"


def ray_runtime_env(log: str | None = None) -> dict:
    """`ray.init(runtime_env=...)`: every worker of the job imports this module and runs install().
    `log`: a file where each video made appends its key (MT_STANDIN_LOG)."""
    path = os.pathsep.join([str(REPO / "benchmarks"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {"PYTHONPATH": path, **({"MT_STANDIN_LOG": log} if log else {})}
    return {"worker_process_setup_hook": "standin.install", "env_vars": env}


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
