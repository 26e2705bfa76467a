"""Reading reference videos and target images, writing H.264 mp4: the only disk IO of media.

Frame policy for a reference video (documented in docs/method.md):
- decode with ffmpeg (any format ffmpeg reads, an animated GIF too), as RGB, streaming: only the
  frames kept are held, each already resized, so a huge frame size costs one frame of memory;
- pick F frame indices: "uniform" = round(linspace(0, n - 1, F)) over the whole clip
  (a clip shorter than F repeats frames), "consecutive" = the first F frames (needs n >= F);
- resize each kept frame so it covers H x W (aspect kept, bicubic, antialiased), then
  centre-crop to H x W.
- a motion reference needs at least 2 distinct frames: a one-frame or still video is refused.
Images: turned upright by their EXIF orientation (as a person sees them); RGB, RGBA/LA/P
(composited over white), grayscale, 16-bit and CMYK are converted to RGB; an animated image gives
its first frame; all get the same cover-resize + centre-crop. Images smaller than MIN_IMAGE_SIDE
or larger than MAX_IMAGE_PIXELS (a decompression bomb) are refused from their header, before
decoding. Anything unreadable is an InputError naming the file and saying why in words.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own pixel limit (MAX_IMAGE_PIXELS) is checked from the header; Pillow's would warn or refuse with its own.
Image.MAX_IMAGE_PIXELS = None

from mtcore.errors import InputError
from mtcore.io.fileio import atomic_write, require_file
from mtcore.io.frames import uint8_to_signed, unit_to_uint8


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


_VIDEO_RE = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(?<!\w)(\d{1,5})x(\d{1,5})(?!\w)")
_FPS_RE = re.compile(r"([\d.]+) (?:fps|tbr)")


def _ffmpeg_says(path: Path) -> str:
    """What `ffmpeg -i` prints about a file (its streams, or why it cannot open it)."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                            text=True, errors="replace", timeout=120)
    return result.stderr


def _probe(path: Path) -> tuple[int, int, float]:
    """(width, height, fps) of the first video stream, or an InputError that says in words what is wrong."""
    if path.stat().st_size == 0:
        raise InputError(path, "unreadable video: empty file (0 bytes)")
    said = _ffmpeg_says(path)
    match = _VIDEO_RE.search(said)
    if match is None:
        if "Audio:" in said:
            raise InputError(path, "unreadable video: no video stream (audio only)")
        if "Invalid data found" in said or "moov atom not found" in said:
            raise InputError(path, "unreadable video: not a video ffmpeg can read (invalid data)")
        if "Input #0" in said:
            raise InputError(path, "unreadable video: no video stream (a zero-length or empty container)")
        last = [line for line in said.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise InputError(path, f"unreadable video ({last[0][:160]})")
    if "missing mandatory atoms" in said or "Could not find codec parameters" in said:
        raise InputError(path, "unreadable video: truncated or damaged (its header is incomplete)")
    fps = _FPS_RE.search(said[match.start():])
    return int(match[1]), int(match[2]), float(fps[1]) if fps else 0.0


def _frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame as (H, W, 3) uint8, one at a time, decoded by ffmpeg."""
    import imageio_ffmpeg

    os.environ.setdefault("IMAGEIO_FFMPEG_EXE", ffmpeg_exe())
    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        w, h = next(gen)["size"]
        for buffer in gen:
            yield np.frombuffer(buffer, np.uint8).reshape(h, w, 3)
    except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as exc:
        text = str(exc).strip()
        raise InputError(path, "unreadable video: truncated or damaged (ffmpeg stopped decoding it)"
                         if text else f"unreadable video ({type(exc).__name__})") from None


def _count_frames(path: Path) -> int:
    """Frames of the first video stream, counted by decoding it in ffmpeg (nothing is kept); a decoding
    error (a truncated or damaged file) is an InputError."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-stats", "-i", str(path),
                             "-map", "0:v:0", "-f", "null", "-"], capture_output=True, text=True, errors="replace",
                            timeout=3600)
    lines = [line.strip() for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("frame=")]
    if errors or result.returncode != 0:
        reason = errors[0] if errors else f"exit status {result.returncode}"
        raise InputError(path, f"unreadable video: truncated or damaged (ffmpeg: {reason[:160]})")
    counts = [int(m[1]) for m in map(re.compile(r"frame=\s*(\d+)").match, lines) if m]
    return counts[-1] if counts else 0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size and fps of a video; InputError if missing, unreadable, damaged or without frames."""
    p = require_file(path)
    w, h, fps = _probe(p)
    count = _count_frames(p)
    if count == 0:
        raise InputError(p, "unreadable video: its video stream has no frames")
    return VideoInfo(count, w, h, fps)


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video at its own size: (F, H, W, 3) uint8 (for looking at outputs)."""
    p = require_file(path)
    _probe(p)
    frames = list(_frames(p))
    if not frames:
        raise InputError(p, "unreadable video: its video stream has no frames")
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
    """A reference video as (F, 3, H, W) float32 in [-1, 1], per the module's frame policy.

    Streams the decoded frames and keeps only those picked, each resized at once, so memory stays
    at about one full-size frame whatever the video's size.
    """
    p = require_file(path)
    info = probe_video(p)
    if info.num_frames < 2:
        raise InputError(p, f"has {info.num_frames} frame; a motion reference needs at least 2 distinct frames")
    idx = frame_indices(info.num_frames, num_frames, sampling, str(p))
    wanted = set(idx)
    kept: dict[int, np.ndarray] = {}
    for i, frame in enumerate(_frames(p)):
        if i in wanted:
            kept[i] = np.asarray(cover_crop(Image.fromarray(frame), height, width))
        if len(kept) == len(wanted):
            break
    if len(kept) < len(wanted):
        raise InputError(p, "unreadable video: truncated or damaged (fewer frames decoded than counted)")
    picked = np.stack([kept[i] for i in idx])
    if all(np.array_equal(picked[0], f) for f in picked[1:]):
        raise InputError(p, "every frame is the same; a motion reference needs at least 2 distinct frames")
    return uint8_to_signed(picked)


MIN_IMAGE_SIDE = 8
"""Target images smaller than this on a side are refused (nothing to move)."""
MAX_IMAGE_PIXELS = int(os.environ.get("MT_MAX_IMAGE_PIXELS", 100_000_000))
"""Target images with more pixels are refused from their header, before decoding (a decompression
bomb); set MT_MAX_IMAGE_PIXELS to change it."""


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL image: transparency composited over white; 16-bit scaled to 8; CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit) grayscale: scale, do not clip
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | os.PathLike, height: int | None = None, width: int | None = None) -> Image.Image:
    """A target image as RGB, upright (EXIF), fitted to height x width when given; InputError if unusable."""
    p = require_file(path)
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (0 bytes)")
    try:
        with Image.open(p) as im:
            w, h = im.size  # from the header: nothing decoded yet
            if w * h > MAX_IMAGE_PIXELS:
                raise InputError(p, f"{w}x{h} px ({w * h / 1e6:.0f} MP) is over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                                    "limit (MT_MAX_IMAGE_PIXELS): refused as a possible decompression bomb")
            if min(w, h) < MIN_IMAGE_SIDE:
                raise InputError(p, f"{w}x{h} px is too small (at least {MIN_IMAGE_SIDE} px a side)")
            im.seek(0)  # an animated image: its first frame
            im.load()
            img = to_rgb(ImageOps.exif_transpose(im))
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(p, f"unreadable image (not an image Pillow can read: {type(exc).__name__})") from None
    except (OSError, ValueError, SyntaxError) as exc:
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
