"""`mt export`: a run's finished transfers as a dataset (WebDataset or Parquet shards, a card, provenance)."""

from __future__ import annotations

from typing import Optional

import typer

from flows.console import fail, guarded


class _StderrLog:
    """What StageProgress logs to, on stderr (`mt export` runs no Prefect flow to log into)."""

    def info(self, message: str, *args) -> None:
        typer.echo(message % args if args else message, err=True)

    warning = info


def _progress():
    """The export's progress in the pipeline's own format (tasks.progress: rows/s, ETA), every 2 s and at
    the end; StageProgress is made at the first call, which gives the total."""
    from tasks.progress import StageProgress

    state: dict = {}

    def show(done: int, total: int) -> None:
        progress = state.setdefault("stage", StageProgress(_StderrLog(), "export", total, per_item_limit=0,
                                                           interval=2.0))
        progress.advance(done - progress.done)
        if done == total:
            progress.finish()
    return show


@guarded
def export(
    manifest: str = typer.Argument(..., help="The manifest whose transfers to export (its current labels go with them)."),
    to: str = typer.Option(..., "--to", help="Destination folder or URL (s3://bucket/prefix) of the dataset."),
    out: str = typer.Option("mt-out", help="The run's output root (store and catalogs)."),
    where: Optional[str] = typer.Option(None, help="Keep only samples for which this DuckDB SQL condition over the metric "
                                                   "and label columns is true, e.g. 'motion_fidelity >= 0.6 AND "
                                                   "frame_change > 0.01'; labels are columns reference_<name> and "
                                                   "target_<name>."),
    per_pair: Optional[str] = typer.Option(None, help="best:COLUMN keeps, per pair, the seed with the highest COLUMN."),
    split: Optional[str] = typer.Option(None, help="Splits and fractions, e.g. train=0.9,val=0.05,test=0.05 "
                                                   "(default: all train)."),
    split_by: str = typer.Option("reference", help="Group that decides a sample's split, by content hash: reference, "
                                                   "target, or both (no reference and no target in two splits; "
                                                   "samples that would cross are dropped and counted)."),
    fmt: str = typer.Option("webdataset", "--format", help="webdataset (tar shards: .mp4, .png, .json per sample) or "
                                                           "parquet (the same as columns)."),
    shard_size: str = typer.Option("500MB", help="Target size of a shard (e.g. 100MB, 1GB)."),
    overwrite: bool = typer.Option(False, help="Replace another export (or other files) in the destination."),
) -> None:
    """Export the manifest's finished transfers as a dataset that loaders read as it is.

    Joins the catalogs' ok transfers with their metrics and the manifest's labels, applies the gate and
    the splits, and writes shards per split, a dataset card (README.md, metrics.png), provenance.parquet
    and, last, index.json. Exporting again with the same inputs writes nothing.
    Exit status: 0 written (or already there), 1 nothing kept or metrics missing, 2 bad options or a
    destination that holds something else.
    """
    from mtcore.data.samples import MissingMetrics
    from tasks.export import ExportRefused, export_dataset

    try:
        summary = export_dataset(manifest, to, out=out, where=where, per_pair=per_pair, split=split,
                                 split_by=split_by, fmt=fmt, shard_size=shard_size, overwrite=overwrite,
                                 progress=_progress())
    except MissingMetrics as exc:
        fail(f"{out}: {exc}: run `mt evaluate {out}` first", 1)
    except ExportRefused as exc:
        fail(str(exc), exc.exit_code)
    for line in summary.lines():
        typer.echo(line)
