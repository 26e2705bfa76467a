"""`mt init-model` and `mt plan-gpu`: a model family's tiny random pipeline, and what it needs of a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.console import guarded
from mtcore.method.config import InversionConfig

@guarded
def init_model(
    folder: Path = typer.Argument(..., help="Folder to write the pipeline to (save_pretrained layout)."),
    family: str = typer.Option("svd", help="Model family: svd (StableVideoDiffusionPipeline) or wan-i2v "
                                           "(WanImageToVideoPipeline)."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    size: Optional[int] = typer.Option(None, help="Native frame size in pixels (svd: multiple of 8, default 64; "
                                                  "wan-i2v: multiple of 16, default 32)."),
    frames: Optional[int] = typer.Option(None, help="Native frame count F (svd: default 8; wan-i2v: 4k + 1, "
                                                    "default 9)."),
) -> None:
    """Write a tiny randomly initialised image-to-video pipeline of a model family (tests and CPU trials)."""
    from mtcore.errors import InputError, did_you_mean
    from mtcore.method.family import FAMILIES, SVD, WAN_I2V

    if family not in FAMILIES.values():
        raise InputError("--family", f"unknown family {family!r}; one of {', '.join(FAMILIES.values())}"
                                     + did_you_mean(family, FAMILIES.values()))
    if folder.exists() and any(folder.iterdir()):
        raise InputError(folder, "folder exists and is not empty")
    from mtcore.method.models import quiet_libraries

    quiet_libraries()
    if family == WAN_I2V:
        from mtcore.method.wan import init_tiny_wan

        init_tiny_wan(folder, seed=seed, size=size or 32, frames=frames or 9)
    else:
        from mtcore.method.svd import init_tiny_model

        size = size or 64
        if size % 8 or size < 8:
            raise InputError("--size", f"must be a positive multiple of 8, got {size}")
        init_tiny_model(folder, seed=seed, sample_size=size // 8, num_frames=frames or 8)
    names = {SVD: "SVD", WAN_I2V: "Wan I2V"}
    typer.echo(f"wrote tiny {names[family]} pipeline to {folder}")


@guarded
def plan_gpu(
    frames: int = typer.Option(14, help="Frames F (SVD img2vid: 14)."),
    height: int = typer.Option(576, help="Height in pixels."),
    width: int = typer.Option(1024, help="Width in pixels."),
    batch: int = typer.Option(1, help="References inverted together (one UNet call per step)."),
    steps: int = typer.Option(InversionConfig.steps, help="Inversion steps (default: the inversion config's)."),
    sample_steps: int = typer.Option(25, help="Sampling steps per video."),
    guidance_passes: int = typer.Option(1, help="UNet passes per sampling step: 1 without guidance, 2 with."),
    checkpointing: bool = typer.Option(True, help="Gradient checkpointing during inversion."),
    dtype: str = typer.Option("bf16", help="bf16 or fp16 (2 bytes) or fp32 (4)."),
    tokens: int = typer.Option(5, help="Tokens per group N of the motion embedding."),
) -> None:
    """Estimate peak memory and time per inversion step and per video for the real SVD UNet (1.52 B
    parameters) on A100 80GB, H100 80GB and L4 24GB, from exact FLOP and activation counts (see mtcore.method.gpuplan)."""
    from mtcore.errors import InputError
    from mtcore.method.gpuplan import GPUS, plan

    sizes = {"bf16": 2, "fp16": 2, "fp32": 4}
    if dtype not in sizes:
        raise InputError("--dtype", f"must be one of {', '.join(sizes)}, got {dtype!r}")
    if height % 64 or width % 64:
        raise InputError("--height/--width", "must be multiples of 64 (the UNet downsamples the latent 3 times)")
    rows = plan(frames, height, width, batch, steps, sample_steps, guidance_passes, checkpointing, tokens, sizes[dtype])
    typer.echo(f"SVD UNet, {frames} frames at {width}x{height}, {dtype}, batch {batch}, "
               f"{'with' if checkpointing else 'without'} gradient checkpointing, N = {tokens}")
    typer.echo(f"{'GPU':<11} {'step s':>7} {'peak GiB':>9} {'fits':>5} {f'{steps} steps min/ref':>18} "
               f"{'video s':>8} {'refs/GPU':>8}   assumed utilisation")
    for row in rows:
        typer.echo(f"{row.gpu:<11} {row.step_s:>7.2f} {row.peak_gib:>9.1f} {('yes' if row.fits else 'NO'):>5} "
                   f"{row.inversion_minutes:>18.1f} {row.video_s:>8.1f} {row.max_batch:>8}   {GPUS[row.gpu][2]:.0%} "
                   f"of {GPUS[row.gpu][1]:.0f} TFLOP/s")
