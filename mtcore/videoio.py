"""Reading reference videos and target images, writing H.264 mp4: the only disk IO of media.

Frame policy for a reference video (documented in the README):
- decode every frame with ffmpeg (any format ffmpeg reads), as RGB;
- pick F frame indices: "uniform" = round(linspace(0, n - 1, F)) over the whole clip
  (a clip shorter than F repeats frames), "consecutive" = the first F frames (needs n >= F);
- resize each kept frame so it covers H x W (aspect kept, bicubic, antialiased), then
  centre-crop to H x W.
Images: RGB, RGBA/LA/P (composited over white) and grayscale are converted to RGB and
get the same cover-resize + centre-crop. Anything unreadable is an InputError naming the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mtcore.errors import InputError
from mtcore.fileio import atomic_write
from mtcore.frames import uint8_to_signed, unit_to_uint8


def ffmpeg_exe() -> str:
    """The ffmpeg binary: the one on PATH, else the one shipped in the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg reports of a video file."""

    num_frames: int
    width: int
    height: int
    fps: float


def _require_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if not p.is_file():
        raise InputError(p, "not a file")
    return p


def _decode(path: Path) -> tuple[VideoInfo, list[np.ndarray]]:
    """Decode all frames as (H, W, 3) uint8; raises InputError if ffmpeg cannot read the file."""
    import imageio_ffmpeg

    os.environ.setdefault("IMAGEIO_FFMPEG_EXE", ffmpeg_exe())
    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in gen]
    except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"unreadable video ({first})") from None
    if not frames:
        raise InputError(path, "video has no frames")
    return VideoInfo(len(frames), w, h, float(meta.get("fps") or 0.0)), frames


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size and fps of a video; InputError if missing or unreadable."""
    info, _ = _decode(_require_file(path))
    return info


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video at its own size: (F, H, W, 3) uint8 (for looking at outputs)."""
    _, frames = _decode(_require_file(path))
    return np.stack(frames)


def frame_indices(n: int, count: int, sampling: Literal["uniform", "consecutive"], where: str = "") -> list[int]:
    """Indices of the `count` frames taken from a clip of `n` frames (see module docstring)."""
    if sampling == "uniform":
        return [int(round(x)) for x in np.linspace(0, n - 1, count)]
    if n < count:
        raise InputError(where, f"has {n} frames, {count} needed with consecutive sampling")
    return list(range(count))


def cover_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    """Cover-resize (aspect kept) then centre-crop to exactly width x height."""
    scale = max(width / img.width, height / img.height)
    rw, rh = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    img = img.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (rw - width) // 2, (rh - height) // 2
    return img.crop((left, top, left + width, top + height))


def read_video(
    path: str | os.PathLike,
    num_frames: int,
    height: int,
    width: int,
    sampling: Literal["uniform", "consecutive"] = "uniform",
) -> torch.Tensor:
    """A reference video as (F, 3, H, W) float32 in [-1, 1], per the module's frame policy."""
    p = _require_file(path)
    info, frames = _decode(p)
    idx = frame_indices(info.num_frames, num_frames, sampling, str(p))
    picked = [np.asarray(cover_crop(Image.fromarray(frames[i]), height, width)) for i in idx]
    return uint8_to_signed(np.stack(picked))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; transparent parts are composited over white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | os.PathLike, height: int | None = None, width: int | None = None) -> Image.Image:
    """A target image as RGB, fitted to height x width when given; InputError if unreadable."""
    p = _require_file(path)
    try:
        with Image.open(p) as im:
            im.load()
            img = to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(p, f"unreadable image ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if height is not None and width is not None:
        img = cover_crop(img, height, width)
    return img


def write_mp4(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: int = 7, crf: int = 18) -> Path:
    """Encode frames as H.264 (yuv420p) mp4, written aside and renamed into place.

    `frames`: (F, H, W, 3) uint8, or (F, 3, H, W) float in [0, 1]. H and W must be even.
    """
    import ffmpeg

    arr = unit_to_uint8(frames)
    n, h, w, _ = arr.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {w}x{h}")

    def encode(tmp: Path) -> None:
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
            .output(str(tmp), vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="medium", movflags="+faststart",
                    format="mp4")
            .overwrite_output()
        )
        try:
            stream.run(cmd=ffmpeg_exe(), input=arr.tobytes(), capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as exc:
            tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"ffmpeg failed writing {path}: {' '.join(tail)}") from None

    return atomic_write(path, encode, suffix=Path(path).suffix or ".mp4")


__all__ = [
    "VideoInfo",
    "ffmpeg_exe",
    "probe_video",
    "read_video",
    "read_frames",
    "read_image",
    "to_rgb",
    "cover_crop",
    "frame_indices",
    "write_mp4",
]
