"""Shared fixtures: one tiny random SVD written with save_pretrained and loaded with from_pretrained."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from mtcore.method.svd import init_tiny_model

    return init_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from mtcore.method.models import load_model

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
    from mtcore.io.videoio import write_mp4

    return write_mp4(moving_square_frames(), tmp_path_factory.mktemp("media") / "ref.mp4")


@pytest.fixture
def target_images():
    from PIL import Image

    rng = np.random.default_rng(1)
    return [Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)) for _ in range(4)]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One ephemeral Prefect API for the whole session, its database in a temp PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api(prefect_harness) -> str:
    """The session server's API URL, for `mt` subprocesses (`cli_env`)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def cli_env(home, api: str | None = None, **extra: str) -> dict:
    """Environment of an `mt` subprocess. With `api` (the `prefect_api` fixture) its flows use the session's
    server, as a user's with PREFECT_API_URL set do; without, each command starts Prefect's temporary
    server with its database in `home`, as a user's first run does. That start-up took 15 s on an idle
    2-core machine here and more on a busy one, so only the tests about that path take it (the messy run
    in test_bad_inputs, the killed-worker run in test_faults); test_serve gives its own server."""
    env = dict(os.environ, PREFECT_HOME=str(home), COLUMNS="150")
    env.update(extra)
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return env


def write_manifest(folder, references: dict, targets: dict, **extra) -> Path:
    """A manifest YAML in `folder` naming the given {id: path} media; `extra` adds top-level keys."""
    import yaml

    doc = {
        "references": [{"id": k, "path": str(v)} for k, v in references.items()],
        "targets": [{"id": k, "path": str(v)} for k, v in targets.items()],
        "pairs": "cross",
        "seeds": [0],
        "inversion": {"steps": 3, "tokens_per_frame": 2},
        "transfer": {"steps": 2},
        "allow_outside": True,
        **extra,
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Two reference videos and two target images on disk."""
    from PIL import Image

    from mtcore.io.videoio import write_mp4

    d = tmp_path_factory.mktemp("pipeline-media")
    write_mp4(moving_square_frames(12, seed=0), d / "right.mp4")
    write_mp4(moving_square_frames(12, step=-4, seed=1), d / "left.mp4")
    rng = np.random.default_rng(5)
    for name in ("cat", "dog"):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(d / f"{name}.png")
    return d


S3_SECRET = "mt-test-secret-0123456789abcdef"
"""The test S3 server's secret key: long enough that `redact` would hide it, so tests can look for leaks."""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 server for the session: moto's standalone server on loopback (it enforces conditional puts,
    `If-None-Match: *` and `If-Match`, with 412). Its endpoint and credentials go into the environment the
    standard AWS way, so in-process code, Ray workers and `mt` subprocesses all reach it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "mt-test-key", "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_server, request) -> str:
    """A new empty bucket on the session's S3 server; its name."""
    import re
    import uuid

    from mtcore.io.storage import filesystem

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    fs, _ = filesystem(f"s3://{name}")
    fs.mkdir(name)
    return name


def upload_folder(local, url: str) -> None:
    """Copy every file under a local folder to a URL prefix."""
    from pathlib import Path

    from mtcore.io.storage import Storage

    store = Storage(url)
    for path in Path(local).rglob("*"):
        if path.is_file():
            store.put_file(path.relative_to(local).as_posix(), path)
