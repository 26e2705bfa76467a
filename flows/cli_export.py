"""`mt export`: a run's finished transfers as a dataset (WebDataset or Parquet shards, a card, provenance)."""

from __future__ import annotations

import time
from typing import Optional

import typer

from flows.console import fail, guarded


def _progress():
    """rows/s and an ETA on stderr, at most every 2 s, and once at the end."""
    start, last = time.monotonic(), [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 2.0 and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        typer.echo(f"export: {done:,}/{total:,} samples ({100 * done / total:.0f}%), {rate:,.0f} samples/s, "
                   f"ETA {eta:,.0f} s", err=True)
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
