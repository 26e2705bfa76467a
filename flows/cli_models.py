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
    wan_version: str = typer.Option("2.1", help="wan-i2v only: 2.1 (CLIP image tokens, one transformer) or 2.2 "
                                                "(two transformers switched by noise level, no CLIP)."),
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

        init_tiny_wan(folder, seed=seed, size=size or 32, frames=frames or 9, version=wan_version)
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
    family: str = typer.Option("svd", help="Model family: svd or wan-i2v."),
    size: Optional[str] = typer.Option(None, help="Model size. svd: 1.5B (img2vid, default) or tiny; wan-i2v: 14B "
                                                  "(Wan2.1-I2V-14B, default), 1.3B, 5B (Wan2.2-TI2V-5B) or tiny."),
    frames: Optional[int] = typer.Option(None, help="Frames F (default: svd 14; wan-i2v the size's, 81 for 14B)."),
    height: Optional[int] = typer.Option(None, help="Height in pixels (default: svd 576; wan-i2v 480 for 14B)."),
    width: Optional[int] = typer.Option(None, help="Width in pixels (default: svd 1024; wan-i2v 832 for 14B)."),
    batch: int = typer.Option(1, help="References inverted together (one denoiser call per step)."),
    steps: int = typer.Option(InversionConfig.steps, help="Inversion steps (default: the inversion config's)."),
    sample_steps: int = typer.Option(25, help="Sampling steps per video."),
    guidance_passes: Optional[int] = typer.Option(None, help="Denoiser passes per sampling step: 1 without guidance, "
                                                              "2 with (default: svd 1, wan-i2v 2: its stock guidance)."),
    checkpointing: bool = typer.Option(True, help="Gradient checkpointing during inversion."),
    dtype: str = typer.Option("bf16", help="bf16 or fp16 (2 bytes) or fp32 (4)."),
    tokens: int = typer.Option(5, help="Tokens per group N of the motion embedding."),
    measure: bool = typer.Option(False, "--measure", help="Also run real inversion steps and one sampling step at "
                                                          "this size, random weights, on this machine's device, and "
                                                          "print measured beside planned."),
    device: Optional[str] = typer.Option(None, help="Device for --measure (default: cuda if present, else cpu)."),
) -> None:
    """Estimate peak memory and time per inversion step and per video of a model family's denoiser (SVD's
    UNet, 1.52 B parameters; Wan's transformer, 16.4 B for Wan2.1-I2V-14B) on A100 80GB, H100 80GB and L4
    24GB, from exact FLOP and activation counts on the meta device (see mtcore.method.gpuplan)."""
    from mtcore.errors import InputError, did_you_mean
    from mtcore.method.gpumeasure import SVD_SIZES, build_denoiser
    from mtcore.method.gpuplan import GPUS, WAN_SIZES, count_step, plan

    sizes = {"bf16": 2, "fp16": 2, "fp32": 4}
    if dtype not in sizes:
        raise InputError("--dtype", f"must be one of {', '.join(sizes)}, got {dtype!r}")
    known = {"svd": SVD_SIZES, "wan-i2v": tuple(WAN_SIZES)}
    if family not in known:
        raise InputError("--family", f"unknown family {family!r}; one of svd, wan-i2v" + did_you_mean(family, known))
    size = size or known[family][0]
    if size not in known[family]:
        raise InputError("--size", f"unknown {family} size {size!r}; one of {', '.join(known[family])}")
    if family == "wan-i2v":
        spec = WAN_SIZES[size]
        frames, height, width = frames or spec.frames, height or spec.height, width or spec.width
        if (frames - 1) % spec.temporal:
            raise InputError("--frames", f"Wan videos have 4k + 1 frames (5, 9, ..., 81), got {frames}")
        if height % spec.spatial or width % spec.spatial:
            raise InputError("--height/--width", f"must be multiples of {spec.spatial} for Wan {size}")
        passes = guidance_passes or 2
    else:
        frames, height, width = frames or 14, height or 576, width or 1024
        if height % 64 or width % 64:
            raise InputError("--height/--width", "must be multiples of 64 (the UNet downsamples the latent 3 times)")
        passes = guidance_passes or 1
    model = build_denoiser(family, size)
    params = sum(p.numel() for p in model.parameters())
    rows = plan(frames, height, width, batch, steps, sample_steps, passes, checkpointing, tokens, sizes[dtype], model)
    name = {"svd": "SVD UNet", "wan-i2v": f"Wan {size} transformer"}[family]
    typer.echo(f"{name} ({params / 1e9:.2f} B parameters), {frames} frames at {width}x{height}, {dtype}, batch {batch}, "
               f"{'with' if checkpointing else 'without'} gradient checkpointing, N = {tokens}, {passes} pass(es) "
               f"per sampling step")
    typer.echo(f"{'GPU':<11} {'step s':>7} {'peak GiB':>9} {'fits':>5} {f'{steps} steps min/ref':>18} "
               f"{'video s':>8} {'refs/GPU':>8}   assumed utilisation")
    for row in rows:
        typer.echo(f"{row.gpu:<11} {row.step_s:>7.2f} {row.peak_gib:>9.1f} {('yes' if row.fits else 'NO'):>5} "
                   f"{row.inversion_minutes:>18.1f} {row.video_s:>8.1f} {row.max_batch:>8}   {GPUS[row.gpu][2]:.0%} "
                   f"of {GPUS[row.gpu][1]:.0f} TFLOP/s")
    if measure:
        _measure(family, size, frames, height, width, batch, tokens, checkpointing, passes, dtype, device,
                 count_step(model, frames, height, width, batch, True, checkpointing, sizes[dtype], tokens))


def _measure(family, size, frames, height, width, batch, tokens, checkpointing, passes, dtype, device, cost) -> None:
    import torch

    from mtcore.method.gpumeasure import build_denoiser, measure
    from mtcore.method.models import parse_dtype, pick_device, quiet_libraries

    quiet_libraries()
    dev = pick_device(device)
    real = build_denoiser(family, size, dev, parse_dtype(dtype, dev))
    got = measure(real, frames, height, width, batch, tokens, checkpointing, guidance_passes=passes)
    planned_gib = (cost.weight_bytes + cost.activation_bytes + cost.transient_bytes) / 2**30
    peak = f"{got.peak_gib:.2f} GiB" if got.peak_gib is not None else "n/a on a CPU"
    typer.echo(f"measured on {got.device}"
               + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
               + f": inversion step {got.step_s:.3f} s ({cost.flops / got.step_s / 1e12:.3g} TFLOP/s of the "
               f"{cost.flops / 1e12:.3g} TFLOP counted), peak {peak} (planned {planned_gib:.2f} GiB without the "
               f"CUDA context), sampling step {got.sample_step_s:.3f} s")
