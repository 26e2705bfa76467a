"""The samples of a dataset: a manifest's finished transfers joined with their metrics and its labels.

One row a transfer: the catalogs' ok row (the latest, when a key was recorded twice), its metrics of the
current version, and the manifest's current labels of both sides as columns (`reference_<name>`,
`target_<name>`). The manifest is the source of truth for labels, the catalogs for artifacts: editing
a label changes the next export, never a key.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from mtcore import CODE_VERSION, METRICS_VERSION
from mtcore.data.catalog import read_arrow
from mtcore.data.manifest import Item, Manifest, load_manifest

TRANSFER_COLUMNS = ("transfer_key", "embedding_key", "target_sha256", "seed", "model", "model_id", "inversion_config",
                    "transfer_config", "video_path", "created_at")
"""What a sample takes from catalog/transfers. Ids and paths come from the manifest (`planned`, items)."""
METRIC_COLUMNS = ("motion_fidelity", "motion_fidelity_output_to_reference", "motion_fidelity_reference_to_output",
                  "moving_tracks_output", "moving_tracks_reference", "psnr_first", "ssim_first", "clip_first",
                  "clip_avg", "clip_note", "warp_error", "frame_change", "tracker")
"""The metrics of a sample (catalog/metrics less its bookkeeping: version, seconds, worker, times, run)."""


REPEATED = ("model", "model_id", "inversion_config", "transfer_config")
"""Transfer columns with few distinct values, read dictionary-encoded (a fifth of the memory)."""


class MissingMetrics(Exception):
    """Transfers without a metrics row of the current version: `mt evaluate` fills them in."""

    def __init__(self, missing: int, total: int):
        self.missing, self.total = missing, total
        super().__init__(f"{missing} of {total} finished transfers have no metrics of version {METRICS_VERSION}")


def latest(table: pa.Table, key: str) -> pa.Table:
    """One row per key: the latest by created_at (a key recorded twice, e.g. by a recovered run)."""
    if table.num_rows == 0 or pc.count_distinct(table.column(key)).as_py() == table.num_rows:
        return table  # no key twice (the usual case): no sorted copy
    order = table.sort_by([(key, "ascending"), ("created_at", "descending")])
    keys = order.column(key).to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    return order.filter(pa.array(first))


_LABEL_TYPES = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


def label_columns(items: Iterable[Item], ids: pa.Array, prefix: str) -> dict[str, pa.Array]:
    """`prefix_<name>` columns of the items' labels for each row's id (null where an item lacks a name).
    A name's type is decided over every item of the manifest, not the rows at hand (so a condition checked
    before a run holds during it): one type, or numbers (int and float), or else strings."""
    by_id = {item.id: dict(item.labels) for item in items}
    names = sorted({name for labels in by_id.values() for name in labels})
    rows = ids.to_pylist()
    columns = {}
    for name in names:
        kinds = {type(labels[name]) for labels in by_id.values() if name in labels}
        kind = kinds.pop() if len(kinds) == 1 else float if kinds == {int, float} else str
        values = [by_id.get(i, {}).get(name) for i in rows]
        columns[f"{prefix}_{name}"] = pa.array([None if v is None else kind(v) for v in values], _LABEL_TYPES[kind])
    return columns


def _assemble(manifest: Manifest, transfers: pa.Table, planned: pa.Table, embeddings: pa.Table,
              metrics: pa.Table) -> pa.Table:
    """Catalog columns, the manifest's ids (by key) and paths (by id), reference sha256, metrics, labels."""
    joined = transfers.join(planned.select(["transfer_key", "reference_id", "target_id"]), "transfer_key",
                            join_type="inner")
    joined = joined.join(embeddings, "embedding_key", join_type="inner")
    joined = joined.join(metrics, "transfer_key", join_type="left outer").sort_by("transfer_key")
    for prefix, items in (("reference", manifest.references), ("target", manifest.targets)):
        ids = joined.column(f"{prefix}_id")
        path = {item.id: str(item.path) for item in items}
        joined = joined.append_column(f"{prefix}_path", pa.array([path.get(i) for i in ids.to_pylist()], pa.string()))
        for name, values in label_columns(items, ids, prefix).items():
            joined = joined.append_column(name, values)
    return joined


def sample_table(manifest: Manifest, out: str | os.PathLike, planned: pa.Table, require_metrics: bool = True) -> pa.Table:
    """The finished transfers among `planned` (tasks.plan.planned_transfers: the manifest's keys and ids),
    with metrics and labels, sorted by transfer key. MissingMetrics when `require_metrics` and some lack
    a metrics row."""
    transfers = latest(read_arrow(out, "transfers", list(TRANSFER_COLUMNS),
                                   (ds.field("status") == "ok") & ds.field("transfer_key").isin(
                                       planned.column("transfer_key").combine_chunks()), REPEATED
                                   ).unify_dictionaries(),  # one dictionary per column, not one per part file
                        "transfer_key").drop_columns(["created_at"])
    found = transfers.column("transfer_key").combine_chunks()
    metrics = latest(read_arrow(out, "metrics", ["transfer_key", "created_at", *METRIC_COLUMNS],
                                 (ds.field("metrics_version") == METRICS_VERSION) & ds.field("transfer_key").isin(found)),
                      "transfer_key").drop_columns(["created_at"])
    if require_metrics and metrics.num_rows < transfers.num_rows:
        raise MissingMetrics(transfers.num_rows - metrics.num_rows, transfers.num_rows)
    # the reference's sha256 is recorded with its embedding
    embeddings = latest(read_arrow(out, "embeddings", ["embedding_key", "reference_sha256", "created_at"],
                                    (ds.field("status") == "ok")
                                    & ds.field("embedding_key").isin(pc.unique(transfers.column("embedding_key")))),
                         "embedding_key").drop_columns(["created_at"])
    return _assemble(manifest, transfers, planned, embeddings, metrics)


def check_manifest(path: str | os.PathLike) -> Manifest:
    """`load_manifest`, and its `retry.where` run on no rows: an unknown column or bad SQL is refused
    before any work (the condition is otherwise first run after the first seed's videos). A model in a
    bucket is fetched into this machine's cache now, so a missing or partial one is refused here, in one
    line (mtcore.io.modelcache), and the plan finds it."""
    from mtcore.data.catalog import SCHEMAS
    from mtcore.data.select import filter_rows
    from mtcore.io.locations import is_url
    from mtcore.method.identity import model_identity

    manifest = load_manifest(path)
    for ref in manifest.models:
        if ref.model and is_url(ref.model):
            model_identity(ref.model, ref.revision)
    if manifest.retry is not None:
        def no_rows(table: str, columns) -> pa.Table:
            return pa.schema([SCHEMAS[table].field(c) for c in columns]).empty_table()
        planned = pa.table({c: pa.array([], pa.string()) for c in ("transfer_key", "reference_id", "target_id")})
        columns = _assemble(manifest, no_rows("transfers", TRANSFER_COLUMNS).drop_columns(["created_at"]), planned,
                            no_rows("embeddings", ["embedding_key", "reference_sha256"]),
                            no_rows("metrics", ["transfer_key", *METRIC_COLUMNS]))
        filter_rows(columns, manifest.retry.where, f"{manifest.file_name}: retry.where")
    return manifest


_HF_TYPES = {"string": "string", "large_string": "string", "double": "float64", "float": "float64", "int32": "int64",
             "int64": "int64", "bool": "bool", "null": "string"}
SIDE_COLUMNS = ("id", "path", "sha256")


def label_names(table: pa.Table, side: str) -> list[str]:
    """The label names of one side ("reference" or "target") among the table's columns."""
    return sorted(c[len(side) + 1:] for c in table.column_names
                  if c.startswith(side + "_") and c[len(side) + 1:] not in SIDE_COLUMNS)


def sample_meta(row: dict, labels: dict[str, list[str]], revisions: dict) -> dict:
    """A sample's JSON: keys, split, seed, model and revision, configs (canonical JSON, as in the catalogs),
    both sides with their labels, metrics, versions. Its types are `sample_types`."""
    def side(name: str) -> dict:
        out = {c: row[f"{name}_{c}"] for c in SIDE_COLUMNS}
        if labels[name]:
            out["labels"] = {n: row[f"{name}_{n}"] for n in labels[name]}
        return out
    return {"transfer_key": row["transfer_key"], "embedding_key": row["embedding_key"], "split": row["split"],
            "seed": row["seed"], "model": row["model"], "model_id": row["model_id"],
            "revision": revisions.get(row["model_id"]), "inversion_config": row["inversion_config"],
            "transfer_config": row["transfer_config"], "reference": side("reference"), "target": side("target"),
            "metrics": {m: row[m] for m in METRIC_COLUMNS}, "code_version": CODE_VERSION,
            "metrics_version": METRICS_VERSION}


def sample_types(table: pa.Table) -> dict:
    """The types of `sample_meta`'s fields, nested as it is ({name: dtype or {...}}), in Hugging Face's
    dtype names: loaders that infer types from a few samples guess wrong where those few are null."""
    def dtype(column: str) -> str:
        return _HF_TYPES.get(str(table.schema.field(column).type), "string")

    def side(name: str) -> dict:
        out: dict = {c: "string" for c in SIDE_COLUMNS}
        if label_names(table, name):
            out["labels"] = {n: dtype(f"{name}_{n}") for n in label_names(table, name)}
        return out
    strings = ("transfer_key", "embedding_key", "split", "model", "model_id", "revision", "inversion_config",
               "transfer_config", "code_version", "metrics_version")
    return {**{k: "string" for k in strings}, "seed": "int64", "reference": side("reference"),
            "target": side("target"), "metrics": {m: dtype(m) for m in METRIC_COLUMNS}}


__all__ = ["sample_table", "sample_meta", "sample_types", "label_names", "check_manifest", "label_columns", "MissingMetrics", "TRANSFER_COLUMNS", "METRIC_COLUMNS"]
