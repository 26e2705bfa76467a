"""`mt toy ...`: (re)train and evaluate the toy model, the built-in CPU model that really transfers motion."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.console import guarded, progress_bar
from mtcore.method.config import InversionConfig

toy_app = typer.Typer(help="The toy world and its trained toy model (the CPU default that really transfers motion).",
                      no_args_is_help=True)


@toy_app.command("train")
@guarded
def toy_train(
    minutes: float = typer.Option(60.0, help="Training time for this run (resumes from the last checkpoint)."),
    seed: int = typer.Option(0, help="Seed of the initial weights and of every step's data and noise."),
    workdir: Path = typer.Option(Path("toy-train"), help="Checkpoints, loss curve and exported model."),
    max_steps: Optional[int] = typer.Option(None, help="Stop at this total step count."),
    export_to: Optional[Path] = typer.Option(None, help="Pipeline folder to write (default WORKDIR/model)."),
) -> None:
    """Train the toy image-to-video model on the toy world, as a Prefect flow; Ctrl-C and re-run to resume."""
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


@toy_app.command("eval")
@guarded
def toy_eval(
    pairs: int = typer.Option(40, help="Held-out (reference, target) pairs; motion kinds in turn."),
    seed: int = typer.Option(0, help="Seed of the pairs and of sampling."),
    model: Optional[str] = typer.Option(None, help="Toy pipeline folder (default: the built-in model)."),
    steps: int = typer.Option(InversionConfig.steps, help="Inversion steps (default settings otherwise)."),
    lr: float = typer.Option(InversionConfig.lr, help="Inversion learning rate."),
    warmup_steps: int = typer.Option(InversionConfig.warmup_steps, help="Inversion learning-rate warm-up steps."),
    sample_steps: int = typer.Option(25, help="Sampling steps."),
    out: Path = typer.Option(Path("toy-eval"), help="Folder for the Parquet results and contact sheets."),
    families: Optional[str] = typer.Option(None, help="Comma-separated families (toy, photo_sprite, camera); "
                                                      "default: those the model was trained on."),
    methods: str = typer.Option("mti,stock,random,ceiling", help="Comma-separated methods to run."),
    inversion_batch: int = typer.Option(8, min=1, help="Pairs inverted together in one UNet call per step "
                                                       "(each gets the embedding it would get alone)."),
) -> None:
    """Motion-textual inversion vs baselines (stock, random) and the ceiling (true motion) on held-out pairs,
    per content family and motion kind."""
    import pandas as pd

    from mtcore.method.config import TransferConfig
    from mtcore.method.models import load_model
    from mtcore.toy.evaluate import evaluate, write_results

    svd = load_model(model, device="cpu", dtype="fp32")
    bar, advance = progress_bar("toy eval (pairs)", pairs)
    with bar:
        inversion = InversionConfig(steps=steps, lr=lr, warmup_steps=warmup_steps)
        df, videos = evaluate(svd, pairs, seed, inversion, TransferConfig(steps=sample_steps),
                              methods=tuple(methods.split(",")),
                              families=tuple(families.split(",")) if families else None,
                              progress=lambda k, n, kind: advance(k, n), inversion_batch=inversion_batch)
    table, written = write_results(df, videos, out, svd.model_id, seed)
    with pd.option_context("display.width", 160, "display.max_rows", 200, "display.precision", 3):
        typer.echo(table.to_string(index=False))
    typer.echo("wrote " + ", ".join(str(p) for p in written))
