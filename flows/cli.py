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
# No phoning home: Prefect's server telemetry and Ray's usage stats reach outside hosts.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

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


def _load_manifest_or_fail(manifest: Path):
    """Structural problems refuse the manifest: print every one, exit 2."""
    from mtcore.manifest import ManifestError, load_manifest

    try:
        return load_manifest(manifest)
    except ManifestError as exc:
        for line in exc.problems:
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


@app.command()
def validate(manifest: Path = typer.Argument(..., help="Manifest YAML file.")) -> None:
    """Check a manifest without running it: structure (refuses the run) and media (fails only their rows).

    Exit status: 0 all good, 1 some media missing or unreadable, 2 the manifest itself is invalid.
    """

    def body():
        from mtcore.manifest import check_media

        m = _load_manifest_or_fail(manifest)
        typer.echo(f"{manifest}: {len(m.references)} reference videos, {len(m.targets)} target images, "
                   f"{len(m.pairs)} pairs x {len(m.seeds)} seeds = {len(m.pairs) * len(m.seeds)} transfers; "
                   f"model: {m.model or 'built-in default'}")
        problems = check_media(m)
        for item, problem in problems.items():
            typer.secho(f"item {item}: {problem}", fg=typer.colors.YELLOW, err=True)
        if problems:
            typer.echo(f"{len(problems)} item problem(s): the rows that need them will fail; the rest will run.")
            raise typer.Exit(1)
        typer.echo("ok: structure and media are valid")

    guarded(body)


@app.command()
def run(
    manifest: Path = typer.Argument(..., help="Manifest YAML file."),
    out: Path = typer.Option(Path("mt-out"), help="Output root: store/ (artifacts) and catalog/ (Parquet)."),
    ray_address: Optional[str] = typer.Option(None, help="Join a Ray cluster started with `ray start` (default: local Ray)."),
    gpus_per_worker: float = typer.Option(0.0, help="num_gpus each model worker requests (0 = CPU workers)."),
    workers: Optional[int] = typer.Option(None, help="Model workers (default: one per GPU, or 1 on CPU)."),
    batch_size: int = typer.Option(4, help="Targets sharing an embedding sampled in one UNet call."),
    device: Optional[str] = typer.Option(None, help="torch device in workers (default: cuda if visible, else cpu)."),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: fp16 on cuda, fp32 on cpu)."),
) -> None:
    """Run a manifest as one Prefect flow: invert missing embeddings, transfer missing pairs, write catalogs.

    Only what the store lacks is computed; a re-run of the same manifest computes nothing new.
    Exit status 1 when any row failed (see the summary and catalog error columns).
    """

    def body():
        _load_manifest_or_fail(manifest)  # refuse a broken manifest before starting Prefect or Ray
        from flows.bulk import bulk_run

        result = bulk_run(str(manifest), out=str(out), ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                          workers=workers, batch_size=batch_size, device=device, dtype=dtype)
        print_summary(result)
        if result["failed"]:
            raise typer.Exit(1)

    guarded(body)


def print_summary(r: dict) -> None:
    typer.echo("")
    typer.echo(f"run {r['run_id']} finished in {r['wall_seconds']:.1f} s")
    typer.echo(f"  inversions: {r['inversions_computed']} computed, {r['inversions_cached']} cached")
    typer.echo(f"  transfers:  {r['transfers_computed']} computed, {r['transfers_cached']} cached")
    colour = typer.colors.RED if r["failed"] else None
    typer.secho(f"  failed:     {r['failed']}", fg=colour)
    for err in r["errors"][:5]:
        typer.secho(f"    - {err}", fg=colour)
    for w in r["workers"]:
        typer.echo(f"  worker {w['worker']}: {w['items']} items, model loaded {w['model_loads']}x on {w['device']}")
    typer.echo(f"  catalogs:   {r['catalogs']}  (e.g. duckdb: SELECT * FROM read_parquet('{r['catalogs']}/transfers/*.parquet'))")


@app.command()
def serve(
    manifest: Path = typer.Argument(..., help="Manifest YAML file."),
    cron: Optional[str] = typer.Option(None, help='Cron schedule, e.g. "0 3 * * *".'),
    interval: Optional[float] = typer.Option(None, help="Or: seconds between runs."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: the manifest's name)."),
    out: Path = typer.Option(Path("mt-out"), help="Output root shared by every scheduled run."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for the runs (default: local Ray)."),
    gpus_per_worker: float = typer.Option(0.0, help="num_gpus each model worker requests."),
    workers: Optional[int] = typer.Option(None, help="Model workers per run."),
) -> None:
    """Serve the manifest's flow as a scheduled Prefect deployment (needs a Prefect server).

    Start a server with `prefect server start`, set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api),
    then keep `mt serve` running; each scheduled or `prefect deployment run` run only does what is new.
    """

    def body():
        from mtcore.errors import InputError

        m = _load_manifest_or_fail(manifest)
        if (cron is None) == (interval is None):
            raise InputError("mt serve", "give exactly one of --cron or --interval")
        if not os.environ.get("PREFECT_API_URL"):
            raise InputError("PREFECT_API_URL", "not set: scheduled runs need a Prefect server "
                             "(`prefect server start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api)")
        from flows.bulk import FLOW_NAME, bulk_run

        deployment = name or m.name
        params = {"manifest": str(m.path), "out": str(out.resolve()), "ray_address": ray_address,
                  "gpus_per_worker": gpus_per_worker, "workers": workers}
        typer.echo(f"serving deployment '{FLOW_NAME}/{deployment}' ({'cron ' + cron if cron else f'every {interval:g} s'}); "
                   f"trigger now with: prefect deployment run '{FLOW_NAME}/{deployment}'")
        bulk_run.serve(name=deployment, cron=cron, interval=interval, parameters=params)

    guarded(body)


@app.command()
def sheet(
    out: Path = typer.Option(Path("mt-out"), help="Output root of `mt run` (its catalogs and store)."),
    png: Path = typer.Option(Path("contact-sheet.png"), help="PNG to write."),
    manifest: Optional[Path] = typer.Option(None, help="Show each reference's own frames first (its manifest)."),
    scale: int = typer.Option(0, help="Enlarge frames by this factor (0 = up to ~64 px high)."),
    limit: int = typer.Option(40, help="At most this many videos."),
) -> None:
    """Write a contact sheet PNG of a run's videos: one row of frames per video, grouped by reference."""

    def body():
        from mtcore.catalog import read_table
        from mtcore.errors import InputError
        from mtcore.videoio import read_frames, read_video, save_contact_sheet

        tr = read_table(out, "transfers")
        tr = tr[tr.status == "ok"].drop_duplicates("transfer_key").sort_values(["reference_id", "target_id", "seed"])
        if tr.empty:
            raise InputError(out, "no finished transfers in the catalog")
        refs = {}
        if manifest is not None:
            m = _load_manifest_or_fail(manifest)
            refs = {r.id: r.path for r in m.references}
        rows, labels = [], []
        for ref_id, group in tr.groupby("reference_id", sort=True):
            videos = [read_frames(out / p) for p in group.video_path[:limit]]
            if ref_id in refs:
                f, h, w = videos[0].shape[:3]
                ref = ((read_video(refs[ref_id], f, h, w) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
                rows.append(ref)
                labels.append(f"{ref_id} (reference)")
            rows += videos
            labels += [f"{ref_id} -> {t} (seed {s})" for t, s in zip(group.target_id, group.seed)]
        k = scale or max(1, 64 // rows[0].shape[1])
        save_contact_sheet(rows[:limit], png, scale=k)
        typer.echo(f"wrote {png}: rows top to bottom:")
        for label in labels[:limit]:
            typer.echo(f"  {label}")

    guarded(body)


toy_app = typer.Typer(help="The toy world and its trained toy model (the CPU default that really transfers motion).",
                      no_args_is_help=True)
app.add_typer(toy_app, name="toy")


@toy_app.command("train")
def toy_train(
    minutes: float = typer.Option(60.0, help="Training time for this run (resumes from the last checkpoint)."),
    seed: int = typer.Option(0, help="Seed of the initial weights and of every step's data and noise."),
    workdir: Path = typer.Option(Path("toy-train"), help="Checkpoints, loss curve and exported model."),
    max_steps: Optional[int] = typer.Option(None, help="Stop at this total step count."),
    export_to: Optional[Path] = typer.Option(None, help="Pipeline folder to write (default WORKDIR/model)."),
) -> None:
    """Train the toy image-to-video model on the toy world, as a Prefect flow; Ctrl-C and re-run to resume."""

    def body():
        import flows.toy as toy
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("toy train"), BarColumn(), TextColumn("step {task.fields[step]} loss {task.fields[loss]}"),
                       TimeElapsedColumn(), console=Console(stderr=True))
        job = bar.add_task("train", total=60 * minutes, step=0, loss="-")
        toy.PROGRESS = lambda step, loss, ev, left: bar.update(job, completed=60 * minutes - left, step=step, loss=f"{loss:.4f}")
        with bar:
            result = toy.toy_train(str(workdir), minutes=minutes, max_steps=max_steps, seed=seed,
                                   export_to=str(export_to) if export_to else None)
        typer.echo(f"trained to step {result['step']} (+{result['steps_this_run']} this run, "
                   f"{result['seconds_per_step']:.2f} s/step); model: {result['model']}; loss curve: {result['loss_curve']}")

    guarded(body)


@toy_app.command("eval")
def toy_eval(
    pairs: int = typer.Option(40, help="Held-out (reference, target) pairs; motion kinds in turn."),
    seed: int = typer.Option(0, help="Seed of the pairs and of sampling."),
    model: Optional[str] = typer.Option(None, help="Toy pipeline folder (default: the built-in model)."),
    steps: int = typer.Option(300, help="Inversion steps (default settings otherwise)."),
    sample_steps: int = typer.Option(25, help="Sampling steps."),
    out: Path = typer.Option(Path("toy-eval"), help="Folder for the Parquet results and contact sheets."),
) -> None:
    """Motion-textual inversion vs baselines (stock, random) and the ceiling (true motion) on held-out pairs."""

    def body():
        import pandas as pd

        from mtcore.config import InversionConfig, TransferConfig
        from mtcore.models import load_model
        from mtcore.toy.evaluate import METHODS, evaluate, summarise
        from mtcore.videoio import save_contact_sheet

        m = load_model(model, device="cpu", dtype="fp32")
        bar, advance = progress_bar("toy eval (pairs)", pairs)
        with bar:
            df, videos = evaluate(m, pairs, seed, InversionConfig(steps=steps), TransferConfig(steps=sample_steps),
                                  progress=lambda k, n, kind: advance(k, n))
        out.mkdir(parents=True, exist_ok=True)
        df.assign(model_id=m.identity, seed=seed).to_parquet(out / "pairs.parquet")
        table = summarise(df)
        table.to_parquet(out / "summary.parquet")
        with pd.option_context("display.width", 160, "display.max_rows", 200, "display.precision", 3):
            typer.echo(table.to_string(index=False))
        for method in METHODS:
            save_contact_sheet(videos[method][:10], out / f"sheet_{method}.png")
        typer.echo(f"wrote {out / 'pairs.parquet'}, {out / 'summary.parquet'} and contact sheets {out}/sheet_*.png")

    guarded(body)


def main() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
