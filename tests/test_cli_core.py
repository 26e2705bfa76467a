"""`mt init-model`, `mt invert`, `mt transfer` end to end, as a user runs them (the installed script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtcore.io.videoio import probe_video

MT = shutil.which("mt", path=str(Path(sys.executable).parent)) or "mt"


def mt(*args, cwd=None):
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([MT, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "model"
    r = mt("init-model", d, "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert (d / "model_index.json").is_file() and (d / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    return d


def test_help_explains_every_command():
    r = mt("--help")
    assert r.returncode == 0
    for cmd in ("init-model", "invert", "transfer"):
        assert cmd in r.stdout
        sub = mt(cmd, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout


def test_invert_then_transfer(cli_model, reference_video, tmp_path):
    emb = tmp_path / "wave.safetensors"
    r = mt("invert", "--model", cli_model, "--reference", reference_video, "--out", emb, "--steps", 3, "--tokens-per-frame", 2)
    assert r.returncode == 0, r.stderr
    assert emb.is_file() and "denoising loss" in r.stdout
    for i, mode in enumerate(["RGB", "RGBA", "L"]):
        Image.fromarray(np.full((50, 70, 3), 40 * i, np.uint8)).convert(mode).save(tmp_path / f"t{i}.png")
    out = tmp_path / "videos"
    r = mt("transfer", "--model", cli_model, "--embedding", emb, "--target", tmp_path / "t0.png",
           "--target", tmp_path / "t1.png", "--target", tmp_path / "t2.png", "--out", out, "--steps", 2)
    assert r.returncode == 0, r.stderr
    for i in range(3):
        info = probe_video(out / f"t{i}.mp4")
        assert (info.num_frames, info.width, info.height) == (8, 64, 64)
    single = tmp_path / "one.mp4"
    r = mt("transfer", "--model", cli_model, "-e", emb, "-t", tmp_path / "t0.png", "-o", single, "--steps", 2)
    assert r.returncode == 0, r.stderr and probe_video(single).num_frames == 8


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert lines[-1].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert str(w) in lines[-1], (w, lines[-1])


def test_bad_inputs_fail_with_one_clear_line(cli_model, reference_video, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    missing = tmp_path / "missing.mp4"
    _one_line_error(mt("invert", "--model", cli_model, "-r", missing, "-o", tmp_path / "e.safetensors"), missing, "file not found")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk")
    other, emb = tmp_path / "other", tmp_path / "e.safetensors"

    def embedding_for_another_model():
        assert mt("init-model", other, "--seed", 4).returncode == 0
        return mt("invert", "--model", other, "-r", reference_video, "-o", emb, "--steps", 1, "--tokens-per-frame", 1)

    with ThreadPoolExecutor(2) as pool:  # independent commands, two at a time (two cores)
        made = pool.submit(embedding_for_another_model)
        bad_video = pool.submit(mt, "invert", "--model", cli_model, "-r", junk, "-o", tmp_path / "j.safetensors", "--steps", 1)
        no_model = pool.submit(mt, "invert", "--model", tmp_path / "nomodel", "-r", reference_video, "-o", tmp_path / "n.safetensors")
        _one_line_error(bad_video.result(), junk, "unreadable video")
        _one_line_error(no_model.result(), "nomodel")
        assert made.result().returncode == 0

        # an embedding made for another model is refused, naming the file and both models
        Image.new("RGB", (64, 64)).save(tmp_path / "t.png")
        mismatch = pool.submit(mt, "transfer", "--model", cli_model, "-e", emb, "-t", tmp_path / "t.png", "-o", tmp_path / "x.mp4")
        bad_image = pool.submit(mt, "transfer", "--model", other, "-e", emb, "-t", junk, "-o", tmp_path / "x.mp4")
        _one_line_error(mismatch.result(), emb, "made for model")
        _one_line_error(bad_image.result(), junk, "unreadable image")
    assert not (tmp_path / "x.mp4").exists()
    _one_line_error(mt("init-model", other), other, "not empty")


def test_prefect_temporary_server_gets_time_to_start_and_a_user_value_wins():
    """Prefect's own 20 s wait was exceeded on a busy CI machine; `mt` sets 180 s under Prefect's real
    setting name (a wrong name would be silently ignored), and leaves a user's value alone."""
    code = ("import flows.cli; from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; "
            "print(s.value())")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(env, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="45"))
    assert (ours.stdout.strip(), theirs.stdout.strip()) == ("180", "45"), ours.stderr + theirs.stderr
