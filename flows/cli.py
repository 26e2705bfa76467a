"""The `mt` command line: model setup, single inversions and transfers, and bulk runs.

Heavy imports (torch, diffusers, prefect, ray) happen inside commands so `mt --help` is fast.
Errors a user can fix (InputError) end the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

# Library chatter is not ours to show; must be set before transformers is imported.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

app = typer.Typer(
    help="motion-transfer: make videos that move like a reference video (motion-textual inversion on SVD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODEL_HELP = "SVD pipeline: a local diffusers folder or a hub id. Default: the project's built-in CPU model."


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def guarded(fn):
    """Run a command body, turning user-input errors into one line and exit status 2."""
    from mtcore.errors import InputError

    try:
        return fn()
    except InputError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def progress_bar(description: str, total: int):
    """A rich progress bar on stderr; returns (context manager, advance(step, total, loss=None))."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task(description, total=total, info="")

    def advance(step: int, total_: int, loss: float | None = None) -> None:
        bar.update(task, completed=step, info=f"loss {loss:.4f}" if loss is not None else "")

    return bar, advance


@app.command("init-model")
def init_model(
    folder: Path = typer.Argument(..., help="Folder to write the pipeline to (save_pretrained layout)."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    size: int = typer.Option(64, help="Native frame size in pixels (multiple of 8)."),
    frames: int = typer.Option(8, help="Native frame count F (the UNet's config.num_frames)."),
) -> None:
    """Write a tiny randomly initialised Stable Video Diffusion pipeline (for tests and CPU trials)."""

    def body():
        from mtcore.errors import InputError
        from mtcore.models import init_tiny_model

        if size % 8 or size < 8:
            raise InputError("--size", f"must be a positive multiple of 8, got {size}")
        if folder.exists() and any(folder.iterdir()):
            raise InputError(folder, "folder exists and is not empty")
        init_tiny_model(folder, seed=seed, sample_size=size // 8, num_frames=frames)
        typer.echo(f"wrote tiny SVD pipeline to {folder}")

    guarded(body)


@app.command()
def invert(
    reference: Path = typer.Option(..., "--reference", "-r", help="Reference video (any file ffmpeg reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Motion embedding file to write (.safetensors)."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    steps: int = typer.Option(300, help="Optimisation steps."),
    tokens_per_frame: int = typer.Option(5, help="N: tokens per group; the embedding has (F + 1) x N tokens."),
    frames: Optional[int] = typer.Option(None, help="F: frames taken from the reference (default: the model's)."),
    lr: float = typer.Option(1e-2, help="AdamW learning rate."),
    seed: int = typer.Option(0, help="Seed of every random draw of the inversion."),
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda if present, else cpu)."),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: fp16 on cuda, fp32 on cpu)."),
) -> None:
    """Optimise a motion embedding on ONE reference video (motion-textual inversion)."""

    def body():
        from mtcore.config import InversionConfig
        from mtcore.inversion import invert as run_inversion
        from mtcore.embedding import save_embedding
        from mtcore.keys import sha256_file
        from mtcore.models import load_model
        from mtcore.videoio import read_video

        cfg = InversionConfig(steps=steps, tokens_per_frame=tokens_per_frame, num_frames=frames, lr=lr, seed=seed)
        m = load_model(model, revision=revision, device=device, dtype=dtype)
        h, w = m.default_size
        f = frames or m.default_num_frames
        video = read_video(reference, f, h, w, cfg.frame_sampling)
        bar, advance = progress_bar("inversion", steps)
        with bar:
            emb, stats = run_inversion(m, video, cfg, sha256_file(reference), progress=advance)
        save_embedding(emb, out)
        typer.echo(
            f"wrote {out}: {emb.num_frames + 1}x{emb.tokens_per_frame} tokens of width {emb.token_dim}; "
            f"denoising loss {stats.loss_before:.4f} -> {stats.loss_after:.4f} in {stats.seconds:.1f} s"
        )

    guarded(body)


@app.command()
def transfer(
    embedding: Path = typer.Option(..., "--embedding", "-e", help="Motion embedding from `mt invert`."),
    target: list[Path] = typer.Option(..., "--target", "-t", help="Target image (repeat for several)."),
    out: Path = typer.Option(..., "--out", "-o", help="OUT.mp4 for one target, else a folder (one TARGET.mp4 each)."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    revision: Optional[str] = typer.Option(None, help="Hub revision of --model."),
    steps: int = typer.Option(25, help="Euler sampling steps."),
    seed: int = typer.Option(0, help="Seed of each target's noise (target i uses seed + i)."),
    guidance: float = typer.Option(1.0, help="Max classifier-free guidance (1 = off; stock SVD uses 3)."),
    fps: int = typer.Option(7, help="Frames per second (micro-conditioning and the mp4)."),
    batch_size: int = typer.Option(4, help="Targets sampled together in one UNet call."),
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda if present, else cpu)."),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16."),
) -> None:
    """Make videos of target images that move like the embedding's reference video."""

    def body():
        from mtcore.config import TransferConfig
        from mtcore.embedding import load_embedding
        from mtcore.errors import InputError
        from mtcore.models import load_model
        from mtcore.sampling import transfer as run_transfer
        from mtcore.videoio import read_image, write_mp4

        single = out.suffix.lower() == ".mp4"
        if single and len(target) > 1:
            raise InputError(out, f"one .mp4 path given for {len(target)} targets; give a folder instead")
        stems = [t.stem for t in target]
        if not single and len(set(stems)) != len(stems):
            raise InputError("--target", "two targets share a file name; outputs would collide")
        m = load_model(model, revision=revision, device=device, dtype=dtype)
        emb = load_embedding(embedding, model_id=m.identity, token_dim=m.token_dim)
        h, w = m.default_size
        images = [read_image(t, h, w) for t in target]  # fail on a bad target before any sampling
        cfg = TransferConfig(steps=steps, max_guidance_scale=guidance, fps=fps)
        paths = [out] if single else [out / f"{s}.mp4" for s in stems]
        bar, advance = progress_bar("transfer", steps * len(images))
        with bar:
            for start in range(0, len(images), max(1, batch_size)):
                chunk = images[start : start + batch_size]
                seeds = [seed + start + i for i in range(len(chunk))]
                done = start * steps
                videos = run_transfer(m, chunk, emb, cfg, seeds, progress=lambda s, _t: advance(done + s * len(chunk), 0))
                for video, path in zip(videos, paths[start : start + batch_size]):
                    write_mp4(video, path, fps=fps)
        for p in paths:
            typer.echo(f"wrote {p}")

    guarded(body)


def main() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
