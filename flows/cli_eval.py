"""`mt metrics`, `mt evaluate`, `mt report`: measuring outputs and looking at them."""

from __future__ import annotations

import json
from typing import Optional

import typer

from flows.console import guarded, local_input, require_catalog


@guarded
def metrics(
    reference: str = typer.Option(..., "--reference", "-r", help="Reference video (a path or a URL)."),
    output: str = typer.Option(..., "--output", "-o", help="Output video, e.g. from `mt transfer` (a path or a URL)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target image, for PSNR, SSIM, CLIP (a path "
                                                                      "or a URL)."),
    model: Optional[str] = typer.Option(None, help="Model whose image encoder gives CLIP-1st / CLIP-avg (default: none)."),
    tracker: str = typer.Option("opencv_lk", help="Point tracker of motion fidelity."),
) -> None:
    """Measure one output video: prints one JSON object (motion_fidelity, psnr_first, ssim_first, clip_first, ...).

    The reference is read at the output's frame count and size (frames spread evenly over the clip),
    the target fitted to the output's size.
    """
    from contextlib import ExitStack

    import numpy as np

    from mtcore.io.frames import signed_to_uint8
    from mtcore.io.videoio import read_frames, read_image, read_video
    from mtcore.metrics import timed_metrics

    with ExitStack() as inputs:  # URLs are downloaded to scratch; errors name what the user gave
        out_frames = read_frames(inputs.enter_context(local_input(output)))
        f, h, w = out_frames.shape[:3]
        ref_frames = signed_to_uint8(read_video(inputs.enter_context(local_input(reference)), f, h, w))
        image = np.asarray(read_image(inputs.enter_context(local_input(target)), h, w)) if target is not None else None
    encoder = None
    if model is not None:
        from mtcore.metrics.appearance import model_encoder
        from mtcore.method.models import load_model

        encoder = model_encoder(load_model(model))
    typer.echo(json.dumps(timed_metrics(ref_frames, out_frames, image, encoder, tracker), indent=2))


@guarded
def evaluate(
    out: str = typer.Argument("mt-out", help="Output root of `mt run` (a folder or a URL)."),
    group_by: str = typer.Option("reference", help="Summarise per reference, target, model or config."),
    fill: bool = typer.Option(True, help="First measure finished transfers that lack the current metrics."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    worst: int = typer.Option(5, help="List this many items with the lowest motion fidelity."),
) -> None:
    """Fill in missing metrics, then print summary tables (mean, std, count per group; the worst items)."""
    import pandas as pd

    from mtcore.errors import InputError
    from mtcore.eval.evaluation import GROUPS, to_records
    from mtcore.eval.results_sql import summarise_catalog
    from mtcore import METRICS_VERSION

    if group_by not in GROUPS:
        raise InputError("--group-by", f"must be one of {', '.join(GROUPS)}, got {group_by!r}")
    require_catalog(out, "transfers")
    filled = None
    if fill:
        from flows.evaluate import fill_metrics

        filled = fill_metrics(str(out))
    table, worst_items = summarise_catalog(out, METRICS_VERSION, group_by, worst)  # bounded memory at any size
    if as_json:
        typer.echo(json.dumps({"metrics_version": METRICS_VERSION, "filled": filled, "group_by": group_by,
                               "groups": to_records(table), "worst": to_records(worst_items)}, indent=2))
        return
    if filled:
        typer.echo(f"measured {filled['measured']} transfers; {filled['unmeasurable']} not measurable from the "
                   f"catalog, {filled['missing_files']} with their video gone")
    with pd.option_context("display.width", 200, "display.max_columns", 40, "display.precision", 3):
        typer.echo(f"\nper {group_by} (metrics version {METRICS_VERSION}):")
        typer.echo(table.to_string(index=False) if len(table) else "  (nothing measured yet)")
        typer.echo("\nlowest motion fidelity:")
        typer.echo(worst_items.to_string(index=False) if len(worst_items) else "  (none)")


@guarded
def report(
    out: str = typer.Argument("mt-out", help="Output root of `mt run` (a folder or a URL)."),
    run: Optional[str] = typer.Option(None, "--run", help="Only the transfers made by this run id (default: all)."),
    page_size: int = typer.Option(50, help="Transfers per page of the table."),
) -> None:
    """Write OUT/report/index.html: every transfer's reference, target and output side by side, with metrics.

    On object storage the page and its media are written there too, beside the store it links to
    (serve the bucket, or copy OUT/report and OUT/store down, to look at it)."""
    from mtcore.eval.report import write_report

    page = write_report(out, run_id=run, page_size=page_size)
    typer.echo(f"wrote {page}  (open it in a browser; it works offline)")
