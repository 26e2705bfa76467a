"""Video and image IO: real ffmpeg mp4s, the frame policy, image modes, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mtcore.errors import InputError
from mtcore.io.videoio import frame_indices, probe_video, read_image, read_video, write_mp4
from tests.conftest import moving_square_frames


def test_written_mp4_decodes_to_expected_frames_and_size(tmp_path):
    frames = moving_square_frames(num_frames=12, size=64)
    p = write_mp4(frames, tmp_path / "v.mp4", fps=7)
    info = probe_video(p)
    assert (info.num_frames, info.width, info.height) == (12, 64, 64)
    assert info.fps == pytest.approx(7.0)
    assert p.read_bytes()[4:8] == b"ftyp"  # an mp4 container
    assert not list(tmp_path.glob(".*"))


def test_write_float_video_from_sampler_layout(tmp_path):
    import torch

    video = torch.rand(5, 3, 32, 48)  # (F, 3, H, W) in [0, 1]
    info = probe_video(write_mp4(video, tmp_path / "f.mp4"))
    assert (info.num_frames, info.width, info.height) == (5, 48, 32)


def test_read_video_policy(tmp_path):
    p = write_mp4(moving_square_frames(num_frames=16, size=64), tmp_path / "v.mp4")
    v = read_video(p, 8, 32, 48)
    assert v.shape == (8, 3, 32, 48) and v.min() >= -1 and v.max() <= 1
    assert frame_indices(16, 8, "uniform") == [0, 2, 4, 6, 9, 11, 13, 15]
    assert frame_indices(16, 4, "consecutive") == [0, 1, 2, 3]
    assert frame_indices(3, 5, "uniform") == [0, 0, 1, 2, 2]
    with pytest.raises(InputError, match="3 frames, 5 needed"):
        frame_indices(3, 5, "consecutive", "clip.mp4")
    # the square moves right: its column of maximum redness grows over the sampled frames
    red = (v[:, 0] - v[:, 1]).mean(1)  # (F, W)
    cols = red.argmax(1)
    assert cols[-1] > cols[0]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P"])
def test_images_of_any_mode_become_rgb(tmp_path, mode):
    img = Image.fromarray(np.full((40, 60, 3), (10, 200, 30), np.uint8)).convert(mode)
    img.save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png", 32, 32)
    assert out.mode == "RGB" and out.size == (32, 32)


def test_transparent_pixels_composite_over_white(tmp_path):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "t.png")
    assert read_image(tmp_path / "t.png").getpixel((3, 3)) == (255, 255, 255)


def test_unreadable_inputs_name_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError) as e:
        probe_video(junk)
    assert str(junk) in str(e.value) and "unreadable video" in str(e.value)
    with pytest.raises(InputError, match="unreadable image"):
        read_image(junk)
    with pytest.raises(InputError, match="file not found"):
        read_video(tmp_path / "nope.mp4", 8, 64, 64)
