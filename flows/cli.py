"""The `mt` command line: model setup, single inversions and transfers, bulk runs, contact sheets.

It only parses arguments, calls mtcore / the flows, and prints. Heavy imports (torch, diffusers,
prefect, ray) happen inside commands so `mt --help` is fast. Errors a user can fix (InputError)
end the command with one line per problem on stderr and exit status 2 (`console.guarded`).
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
# Without PREFECT_API_URL every flow command starts a temporary Prefect server, which builds its database
# on first use. Prefect waits 20 s for it; that took 15 s on an idle 2-core machine here, and a busy one
# (CI) went past 20 s and failed the command before any work. Wait up to 180 s; a user's own value wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from flows import cli_eval, cli_export, cli_models  # noqa: E402  (after the environment above)
from flows.cli_toy import toy_app  # noqa: E402
from flows.console import (guarded, local_input, parse_workers, print_summary, progress_bar,  # noqa: E402
                           require_catalog)
from mtcore.method.config import InversionConfig  # noqa: E402  (light: defaults for the options)

app = typer.Typer(
    help="motion-transfer: make videos that move like a reference video (motion-textual inversion on SVD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(toy_app, name="toy")
app.command("metrics")(cli_eval.metrics)
app.command("evaluate")(cli_eval.evaluate)
app.command("report")(cli_eval.report)
app.command("plan-gpu")(cli_models.plan_gpu)
app.command("init-model")(cli_models.init_model)
app.command("export")(cli_export.export)

def quiet_ephemeral_prefect() -> None:
    """Without PREFECT_API_URL, Prefect starts a temporary server for the run: its logs then go to the
    console only, not also through that server's API into its database (a second copy nobody reads,
    which costs the run's CPU on small machines). PREFECT_LOGGING_TO_API_ENABLED=true brings it back."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


def local_only() -> None:
    """A local run's Ray listens on loopback only. Ray reads this when it is imported (so before it is):
    off, Ray takes 127.0.0.1 as the node address and binds its servers there, as it does on macOS and
    Windows; on, it binds every interface so other nodes can join. Joining a cluster leaves it on.

    A local run also switches off Ray's metrics collection: it feeds the dashboard and Prometheus,
    which a local run does not start, and its exporting costs CPU beside the model worker."""
    if "ray" in sys.modules:
        return  # too late to change Ray's mind; only in-process callers (tests) get here
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_enable_metrics_collection", "0")


def parse_resources(text: str | None, option: str = "--resources") -> dict[str, float]:
    """--resources: a JSON object of resource name -> amount (InputError names the option and what is wrong)."""
    import json

    from mtcore.errors import InputError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(option, f"not JSON ({exc})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and
                                              not isinstance(v, bool) and v > 0 for k, v in value.items()):
        raise InputError(option, f'must be a JSON object of positive amounts, e.g. {{"svd_host": 1}}; got {text}')
    return {k: float(v) for k, v in value.items()}


MODEL_HELP = ("Image-to-video pipeline (SVD or Wan I2V, found from its model_index.json): a local diffusers folder "
              "or a hub id. Default: the project's built-in CPU model.")


@app.command()
@guarded
def invert(
    reference: str = typer.Option(..., "--reference", "-r", help="Reference video (any file ffmpeg reads; a path "
                                                                  "or a URL such as s3://bucket/wave.mp4)."),
    out: str = typer.Option(..., "--out", "-o", help="Motion embedding file to write (.safetensors; a path or a URL)."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    steps: int = typer.Option(InversionConfig.steps, help="Optimisation steps."),
    tokens_per_frame: int = typer.Option(5, help="N: tokens per group; the embedding has (F + 1) x N tokens."),
    frames: Optional[int] = typer.Option(None, help="F: frames taken from the reference (default: the model's)."),
    lr: float = typer.Option(InversionConfig.lr, help="AdamW learning rate."),
    seed: int = typer.Option(0, help="Seed of every random draw of the inversion."),
    caption: Optional[str] = typer.Option(None, help="Wan only: the text the embedding starts from (default: the "
                                                     "empty prompt)."),
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda if present, else cpu)."),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: fp16 on cuda, fp32 on cpu)."),
) -> None:
    """Optimise a motion embedding on ONE reference video (motion-textual inversion)."""
    with local_input(reference) as local:  # a missing input fails before the heavy imports and the model load
        from mtcore.errors import InputError
        from mtcore.io.fileio import sha256_file
        from mtcore.io.storage import writing_to
        from mtcore.method.config import InversionConfig, validate_config
        from mtcore.method.embedding import save_embedding
        from mtcore.method.inversion import invert as run_inversion
        from mtcore.method.inversion import read_reference
        from mtcore.method.models import load_model

        config = InversionConfig(steps=steps, tokens_per_frame=tokens_per_frame, num_frames=frames, lr=lr, seed=seed)
        validate_config(config, "mt invert")
        svd = load_model(model, revision=revision, device=device, dtype=dtype)
        if caption is not None and svd.family == "svd":
            raise InputError("--caption", "SVD embeddings start from the reference's frames; a caption is for Wan models")
        video = read_reference(svd, local, config)
        bar, advance = progress_bar("inversion", steps)
        with bar:
            embedding, stats = run_inversion(svd, video, config, sha256_file(local), progress=advance, caption=caption)
    with writing_to(out) as tmp:
        save_embedding(embedding, tmp)
    typer.echo(
        f"wrote {out}: {embedding.groups}x{embedding.tokens_per_frame} tokens of width {embedding.token_dim}; "
        f"denoising loss {stats.loss_before:.4f} -> {stats.loss_after:.4f} in {stats.seconds:.1f} s"
    )


@app.command()
@guarded
def transfer(
    embedding: str = typer.Option(..., "--embedding", "-e", help="Motion embedding from `mt invert` (a path or a URL)."),
    target: list[str] = typer.Option(..., "--target", "-t", help="Target image (repeat for several; paths or URLs)."),
    out: str = typer.Option(..., "--out", "-o", help="OUT.mp4 for one target, else a folder (one TARGET.mp4 each); "
                                                     "a path or a URL (s3://bucket/videos/)."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    revision: Optional[str] = typer.Option(None, help="Hub revision of --model."),
    steps: int = typer.Option(25, help="Euler sampling steps."),
    seed: int = typer.Option(0, help="Seed of each target's noise (target i uses seed + i)."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance (1 = off). SVD: the max of its "
                                                        "per-frame ramp, default 1 (stock SVD uses 3); Wan: default "
                                                        "5, the pipeline's."),
    fps: int = typer.Option(7, help="Frames per second (micro-conditioning and the mp4)."),
    batch_size: int = typer.Option(4, help="Targets sampled together in one UNet call."),
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda if present, else cpu)."),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16."),
) -> None:
    """Make videos of target images that move like the embedding's reference video."""
    import posixpath
    from contextlib import ExitStack

    from mtcore.errors import InputError
    from mtcore.io.storage import join, normalize

    single = out.lower().endswith(".mp4")
    if single and len(target) > 1:
        raise InputError(out, f"one .mp4 path given for {len(target)} targets; give a folder instead")
    stems = [posixpath.splitext(posixpath.basename(normalize(t)))[0] for t in target]
    if not single and len(set(stems)) != len(stems):
        raise InputError("--target", "two targets share a file name; outputs would collide")
    with ExitStack() as inputs:  # missing inputs fail before the heavy imports and the model load
        motion_file = inputs.enter_context(local_input(embedding))
        targets = [inputs.enter_context(local_input(t)) for t in target]
        from mtcore.io.videoio import read_image
        from mtcore.method.config import TransferConfig, validate_config
        from mtcore.method.embedding import load_embedding
        from mtcore.method.models import load_model

        svd = load_model(model, revision=revision, device=device, dtype=dtype)
        config = (TransferConfig(steps=steps, max_guidance_scale=1.0 if guidance is None else guidance, fps=fps)
                  if svd.family == "svd" else TransferConfig(steps=steps, guidance_scale=guidance, fps=fps))
        validate_config(config, "mt transfer")
        motion = load_embedding(motion_file, model_id=svd.model_id, token_dim=svd.token_dim, family=svd.family)
        full = svd.resolve(config, num_frames=motion.num_frames)
        # fail on a bad target before any sampling (errors about a download name its URL: local_input)
        images = [read_image(local, full.height, full.width) for local in targets]
    from mtcore.io.storage import writing_to
    from mtcore.io.videoio import write_mp4
    from mtcore.method.sampling import transfer as run_transfer

    paths = [out] if single else [join(out, f"{s}.mp4") for s in stems]
    bar, advance = progress_bar("transfer", steps * len(images))
    with bar:
        for start in range(0, len(images), max(1, batch_size)):
            chunk = images[start : start + batch_size]
            seeds = [seed + start + i for i in range(len(chunk))]
            done = start * steps
            videos = run_transfer(svd, chunk, motion, config, seeds, progress=lambda s, _t: advance(done + s * len(chunk), 0))
            for video, path in zip(videos, paths[start : start + batch_size]):
                with writing_to(path) as tmp:
                    write_mp4(video, tmp, fps=fps)
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command()
@guarded
def validate(manifest: str = typer.Argument(..., help="Manifest YAML file (a path or a URL, e.g. s3://bucket/m.yaml).")) -> None:
    """Check a manifest without running it: structure (refuses the run) and media (fails only their rows).

    Exit status: 0 all good, 1 some media missing or unreadable, 2 the manifest itself is invalid.
    """
    from mtcore.data.media import check_media
    from mtcore.data.samples import check_manifest

    loaded = check_manifest(manifest)
    typer.echo(f"{manifest}: {len(loaded.references)} reference videos, {len(loaded.targets)} target images, "
               f"{len(loaded.pairs)} pairs x {len(loaded.seeds)} seeds = {len(loaded.pairs) * len(loaded.seeds)} "
               f"transfers; model: {loaded.model or 'built-in default'}")
    problems = check_media(loaded)
    for item, problem in problems.items():
        typer.secho(f"item {item}: {problem}", fg=typer.colors.YELLOW, err=True)
    if problems:
        typer.echo(f"{len(problems)} item problem(s): the rows that need them will fail; the rest will run.")
        raise typer.Exit(1)
    typer.echo("ok: structure and media are valid")


@app.command()
@guarded
def run(
    manifest: str = typer.Argument(..., help="Manifest YAML file: a path or a URL (s3://bucket/manifest.yaml); "
                                             "relative media paths resolve against its folder."),
    out: str = typer.Option("mt-out", help="Output root: store/ (artifacts) and catalog/ (Parquet). A local folder, "
                                           "or a URL (s3://bucket/prefix) that every node of a cluster reaches; "
                                           "credentials and endpoint from the standard AWS variables or profile."),
    ray_address: Optional[str] = typer.Option(None, help="Join a Ray cluster started with `ray start` (default: local Ray)."),
    resources: Optional[str] = typer.Option(None, help='Custom Ray resources each model worker requests, as JSON '
                                                       '(e.g. \'{"svd_host": 1}\': workers go only to nodes that '
                                                       'offer them).'),
    gpus_per_worker: float = typer.Option(0.0, help="num_gpus each model worker requests (0 = CPU workers)."),
    workers: Optional[str] = typer.Option(None, help="Model workers (default: one per GPU, or 1 on CPU); MIN:MAX: an "
                                                     "elastic pool, MIN to start, growing onto nodes that join."),
    batch_size: int = typer.Option(4, help="Targets sharing an embedding sampled in one UNet call."),
    inversion_batch: Optional[int] = typer.Option(None, help="References sharing a config inverted together in one "
                                                             "UNet call per step (not part of any key: a batch gives "
                                                             "the same embeddings). Default: 4 on CPU workers; on GPU "
                                                             "workers 8 go together and each worker inverts as many at a "
                                                             "time as its free memory holds."),
    device: Optional[str] = typer.Option(None, help="torch device in workers (default: cuda if visible, else cpu)."),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: fp16 on cuda, fp32 on cpu)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as one JSON object on stdout."),
    min_free_mb: float = typer.Option(256.0, help="Refuse to start when OUT has less free space than this (MiB)."),
    invert_gpus: Optional[float] = typer.Option(None, help="num_gpus of each inversion worker (default: --gpus-per-worker)."),
    invert_workers: Optional[str] = typer.Option(None, help="Inversion workers, N or MIN:MAX (default: --workers)."),
    invert_resources: Optional[str] = typer.Option(None, help='Custom resources of inversion workers, JSON (e.g. '
                                                              '\'{"A100": 1}\'; default: --resources).'),
    transfer_gpus: Optional[float] = typer.Option(None, help="num_gpus of each transfer worker (default: --gpus-per-worker)."),
    transfer_workers: Optional[str] = typer.Option(None, help="Transfer workers, N or MIN:MAX (default: --workers)."),
    transfer_resources: Optional[str] = typer.Option(None, help='Custom resources of transfer workers, JSON (e.g. '
                                                                '\'{"L4": 1}\'; default: --resources).'),
    part: Optional[str] = typer.Option(None, help="Do part I/N of the transfers (N disjoint key ranges), e.g. 2/4: N "
                                                  "drivers, each with its own Ray cluster, split a run on one OUT."),
) -> None:
    """Run a manifest as one Prefect flow: invert missing embeddings, transfer missing pairs, write catalogs.

    Only what the store lacks is computed; a re-run of the same manifest computes nothing new.
    Pools per stage: --invert-* and --transfer-* give the inversion and transfer workers their own GPUs,
    resources and counts (inversions need far more GPU memory than transfers).
    Exit status 1 when any row failed (see the summary and catalog error columns).
    """
    from flows.prefect_server import early_server, using

    server = early_server()  # Prefect's temporary server boots while the inputs are checked and the pipeline loads
    from mtcore.data.samples import check_manifest
    from mtcore.io.outroot import check_output_root

    # refuse a broken manifest, or an output folder that cannot be written, before starting Prefect or Ray
    worker_resources = parse_resources(resources)
    pools = {stage: {"gpus_per_worker": gpus, **parse_workers(count, f"--{stage}-workers"),
                     "resources": parse_resources(text, f"--{stage}-resources") if text else None}
             for stage, gpus, count, text in (("invert", invert_gpus, invert_workers, invert_resources),
                                              ("transfer", transfer_gpus, transfer_workers, transfer_resources))}
    if part is not None:
        from tasks.plan import parse_part
        parse_part(part)
    checked = check_manifest(manifest)
    out = check_output_root(out, int(min_free_mb * 2**20))
    from flows.cached import nothing_to_do  # a plan with nothing to do: recorded in a second, without Prefect's engine
    cached = nothing_to_do(checked, str(out), part, lambda: server.wait() if server else os.environ["PREFECT_API_URL"])
    if cached is not None:
        print_summary(cached, as_json)
        return
    if ray_address is None:
        local_only()
    quiet_ephemeral_prefect()
    from flows.bulk import bulk_run

    with using(server):
        summary = bulk_run(str(manifest), out=str(out), ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                           **parse_workers(workers), batch_size=batch_size, device=device, dtype=dtype, min_free_mb=min_free_mb,
                           inversion_batch=inversion_batch, resources=worker_resources, invert_pool=pools["invert"],
                           transfer_pool=pools["transfer"], part=part)
    print_summary(summary, as_json)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@guarded
def serve(
    manifest: str = typer.Argument(..., help="Manifest YAML file (a path or a URL)."),
    cron: Optional[str] = typer.Option(None, help='Cron schedule, e.g. "0 3 * * *".'),
    interval: Optional[float] = typer.Option(None, help="Or: seconds between runs."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: the manifest's name)."),
    out: str = typer.Option("mt-out", help="Output root shared by every scheduled run (a folder or a URL)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for the runs (default: local Ray)."),
    gpus_per_worker: float = typer.Option(0.0, help="num_gpus each model worker requests."),
    workers: Optional[int] = typer.Option(None, help="Model workers per run."),
) -> None:
    """Serve the manifest's flow as a scheduled Prefect deployment (needs a Prefect server).

    Start a server with `prefect server start`, set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api),
    then keep `mt serve` running; each scheduled or `prefect deployment run` run only does what is new.
    """
    from mtcore.errors import InputError
    from mtcore.data.manifest import load_manifest

    loaded = load_manifest(manifest)
    if (cron is None) == (interval is None):
        raise InputError("mt serve", "give exactly one of --cron or --interval")
    if not os.environ.get("PREFECT_API_URL"):
        raise InputError("PREFECT_API_URL", "not set: scheduled runs need a Prefect server "
                         "(`prefect server start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    if ray_address is None:
        local_only()
    from flows.bulk import FLOW_NAME, bulk_run

    deployment = name or loaded.name
    from mtcore.io.storage import normalize

    params = {"manifest": str(loaded.path), "out": normalize(out), "ray_address": ray_address,
              "gpus_per_worker": gpus_per_worker, "workers": workers}
    typer.echo(f"serving deployment '{FLOW_NAME}/{deployment}' ({'cron ' + cron if cron else f'every {interval:g} s'}); "
               f"trigger now with: prefect deployment run '{FLOW_NAME}/{deployment}'")
    bulk_run.serve(name=deployment, cron=cron, interval=interval, parameters=params)


@app.command()
@guarded
def sheet(
    out: str = typer.Option("mt-out", help="Output root of `mt run` (its catalogs and store; a folder or a URL)."),
    png: str = typer.Option("contact-sheet.png", help="PNG to write (a path or a URL)."),
    manifest: Optional[str] = typer.Option(None, help="Show each reference's own frames first (its manifest)."),
    scale: int = typer.Option(0, help="Enlarge frames by this factor (0 = up to ~64 px high)."),
    limit: int = typer.Option(40, help="At most this many videos."),
) -> None:
    """Write a contact sheet PNG of a run's videos: one row of frames per video, grouped by reference."""
    from mtcore.data.manifest import load_manifest
    from mtcore.eval.sheet import run_contact_sheet

    references = {r.id: r.path for r in load_manifest(manifest).references} if manifest is not None else None
    labels = run_contact_sheet(out, png, references, scale=scale, limit=limit)
    typer.echo(f"wrote {png}: rows top to bottom:")
    for label in labels:
        typer.echo(f"  {label}")


@app.command()
@guarded
def compact(
    out: str = typer.Argument("mt-out", help="Output root of `mt run` (a folder or a URL)."),
    rows_per_file: int = typer.Option(1_000_000, help="Rows per compacted part file."),
) -> None:
    """Rewrite each catalog table's many small part files as a few large ones (faster plans and queries).

    Safe while runs write and readers read: no row is lost, new parts written meanwhile are kept.
    """
    from mtcore.data.catalog import SCHEMAS, compact as compact_table

    require_catalog(out)
    for table in SCHEMAS:
        before, after, rows = compact_table(out, table, rows_per_file)
        typer.echo(f"{table}: {before} part file(s) -> {after} ({rows} rows rewritten)")


def main() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
