"""The content-addressed artifact store and the Parquet catalogs of a bulk run, under one output root OUT.

    OUT/store/embeddings/<key[:2]>/<key>.safetensors   motion embeddings
    OUT/store/videos/<key[:2]>/<key>.mp4               transferred videos
    OUT/catalog/<table>/part-<UTC time>-<uuid8>.parquet  append-only rows, one file per append

OUT is a local folder or an object-store URL (mtcore.io.storage). Appends never rewrite a file, so
concurrent workers need no lock; every file is written whole (aside and renamed locally, one PUT on
object stores), so readers (this module, pandas, DuckDB) never see a partial file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import re
import uuid
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mtcore.io.storage import join, located, storage

_TS = pa.timestamp("us", tz="UTC")


def _f(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


EMBEDDINGS = pa.schema([
    _f("embedding_key", pa.string()),  # mtcore.data.keys.embedding_key
    _f("reference_id", pa.string()),  # id in the manifest
    _f("reference_sha256", pa.string()),  # sha256 of the reference video's bytes
    _f("model_id", pa.string()),  # model identity, "hub:<id>@<rev>" or "local:<sha256>"
    _f("num_frames", pa.int32(), True),  # F; null if the inversion failed before it was known
    _f("tokens_per_frame", pa.int32()),  # N
    _f("path", pa.string(), True),  # safetensors file relative to OUT; null when failed
    _f("status", pa.string()),  # "ok" | "failed"
    _f("error", pa.string(), True),  # one-line reason when failed, else null
    _f("seconds", pa.float64()),  # wall time of the inversion
    _f("worker", pa.string()),  # host/actor that ran it
    _f("created_at", _TS),
    _f("run_id", pa.string(), True),  # the run that made the row
    _f("model", pa.string(), True),  # the model as the manifest names it (folder or hub id)
    _f("inversion_config", pa.string(), True),  # the InversionConfig, canonical JSON
    _f("reference_path", pa.string(), True),  # the reference video, as planned
])
"""One row per inversion attempt (ok or failed)."""

TRANSFERS = pa.schema([
    _f("transfer_key", pa.string()),  # mtcore.data.keys.transfer_key
    _f("embedding_key", pa.string()),
    _f("reference_id", pa.string()),
    _f("target_id", pa.string()),
    _f("target_sha256", pa.string()),  # sha256 of the target image's bytes
    _f("seed", pa.int64()),
    _f("model_id", pa.string()),
    _f("video_path", pa.string(), True),  # mp4 relative to OUT; null when failed
    _f("status", pa.string()),  # "ok" | "failed"
    _f("error", pa.string(), True),
    _f("seconds", pa.float64()),
    _f("worker", pa.string()),
    _f("created_at", _TS),
    _f("run_id", pa.string(), True),
    _f("model", pa.string(), True),
    _f("inversion_config", pa.string(), True),
    _f("transfer_config", pa.string(), True),  # the TransferConfig, canonical JSON
    _f("reference_path", pa.string(), True),
    _f("target_path", pa.string(), True),
])
"""One row per transfer attempt (ok or failed)."""

METRICS = pa.schema([
    _f("transfer_key", pa.string()),  # joins catalog/transfers
    _f("metrics_version", pa.string()),  # mtcore.metrics.METRICS_VERSION
    _f("motion_fidelity", pa.float64()),  # symmetric, in [-1, 1]; 1 both still, 0 one still
    _f("motion_fidelity_output_to_reference", pa.float64(), True),  # null when a video is still
    _f("motion_fidelity_reference_to_output", pa.float64(), True),
    _f("moving_tracks_output", pa.int32()),
    _f("moving_tracks_reference", pa.int32()),
    _f("psnr_first", pa.float64(), True),  # dB, capped at 100; first frame vs target
    _f("ssim_first", pa.float64(), True),
    _f("clip_first", pa.float64(), True),  # null with clip_note when the encoder cannot say
    _f("clip_avg", pa.float64(), True),
    _f("clip_note", pa.string(), True),
    _f("warp_error", pa.float64()),  # mean |frame - next frame warped back|, in [0, 1]
    _f("frame_change", pa.float64()),  # mean |next frame - frame|, in [0, 1]
    _f("tracker", pa.string()),  # point tracker of motion fidelity
    _f("seconds", pa.float64()),
    _f("worker", pa.string()),
    _f("created_at", _TS),
    _f("run_id", pa.string(), True),
])
"""One row per (transfer, metrics version) measured: mtcore.metrics.compute_metrics."""

RUNS = pa.schema([
    _f("run_id", pa.string()),
    _f("manifest_path", pa.string()),
    _f("manifest_sha256", pa.string()),
    _f("started_at", _TS),
    _f("finished_at", _TS),
    _f("inversions_computed", pa.int64()),
    _f("inversions_cached", pa.int64()),
    _f("transfers_computed", pa.int64()),
    _f("transfers_cached", pa.int64()),
    _f("failed", pa.int64()),  # inversions + transfers that failed
    _f("metrics_computed", pa.int64(), True),
])
"""One row per finished bulk run."""

SCHEMAS: dict[str, pa.Schema] = {"embeddings": EMBEDDINGS, "transfers": TRANSFERS, "runs": RUNS, "metrics": METRICS}
# Columns added after the first release: nullable, older part files read them as null, and a row may omit them.
ADDED_COLUMNS = {"embeddings": {"run_id", "model", "inversion_config", "reference_path"},
                 "transfers": {"run_id", "model", "inversion_config", "transfer_config", "reference_path", "target_path"},
                 "runs": {"metrics_computed"}, "metrics": set()}
_KEY_COLUMN = {"embeddings": "embedding_key", "transfers": "transfer_key"}
_ARTIFACT_COLUMN = {"embeddings": "path", "transfers": "video_path"}
# Artifacts are stored per catalog table: (folder under OUT/store, file suffix).
_STORE = {"embeddings": ("embeddings", ".safetensors"), "transfers": ("videos", ".mp4")}
_KEY_RE = re.compile(r"[0-9a-f]{64}")


def store_relpath(table: str, key: str) -> str:
    """Store path (relative to OUT, posix) of the artifact of a row of `table`, as recorded in it.

    "embeddings" -> store/embeddings/<key[:2]>/<key>.safetensors; "transfers" -> store/videos/<key[:2]>/<key>.mp4.
    """
    if table not in _STORE:
        raise ValueError(f"unknown store kind {table!r}; expected a table with artifacts: {', '.join(_STORE)}")
    if not _KEY_RE.fullmatch(key):
        # Keys become path components: only a sha256 hex digest is allowed.
        raise ValueError(f"not a cache key (64 lowercase hex digits): {key!r}")
    folder, suffix = _STORE[table]
    return f"store/{folder}/{key[:2]}/{key}{suffix}"


def store_folder(table: str) -> str:
    """The store folder (relative to OUT) of a table's artifacts: "store/embeddings" or "store/videos"."""
    if table not in _STORE:
        raise ValueError(f"unknown store kind {table!r}; expected a table with artifacts: {', '.join(_STORE)}")
    return f"store/{_STORE[table][0]}"


def store_path(out: str | os.PathLike, table: str, key: str) -> Path | str:
    """OUT / store_relpath(table, key): a Path for a local OUT, a URL (str) for object storage."""
    return located(join(out, store_relpath(table, key)))


def _schema(table: str, dictionary: Sequence[str] = ()) -> pa.Schema:
    """A table's schema; `dictionary`: these string columns as dictionaries (how they are read)."""
    if table not in SCHEMAS:
        raise ValueError(f"unknown catalog table {table!r}; expected one of {', '.join(SCHEMAS)}")
    return pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), f.type), f.nullable) if f.name in dictionary
                      else f for f in SCHEMAS[table]]) if dictionary else SCHEMAS[table]


def _check_row(table: str, schema: pa.Schema, i: int, row: dict[str, Any]) -> None:
    where = f"{table} row {i}"
    missing = [n for n in schema.names if n not in row and n not in ADDED_COLUMNS[table]]
    extra = [n for n in row if n not in schema.names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
    if extra:
        raise ValueError(f"{where}: unknown column(s) {', '.join(extra)}")
    for field in schema:
        value = row.get(field.name)
        if value is None and not field.nullable:
            raise ValueError(f"{where}: column {field.name} must not be null")
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            # pyarrow would silently read a naive local time as UTC.
            raise ValueError(f"{where}: column {field.name} needs a timezone-aware datetime")
    if table in _KEY_COLUMN:
        _check_status(where, row, _ARTIFACT_COLUMN[table])


def _check_status(where: str, row: dict[str, Any], artifact: str) -> None:
    status = row["status"]
    if status not in ("ok", "failed"):
        raise ValueError(f"{where}: status must be 'ok' or 'failed', got {status!r}")
    if status == "ok" and row[artifact] is None:
        raise ValueError(f"{where}: status ok needs {artifact}")
    if status == "failed" and not row["error"]:
        raise ValueError(f"{where}: status failed needs an error")


def append_rows(out: str | os.PathLike, table: str, rows: list[dict[str, Any]]) -> Path | str | None:
    """Validate rows against the table's schema and write them as one new Parquet file.

    Returns the file written, or None for no rows. ValueError names the row and column at fault.
    """
    schema = _schema(table)
    if not rows:
        return None
    for i, row in enumerate(rows):
        _check_row(table, schema, i, row)
    rows = [{name: row.get(name) for name in schema.names} for row in rows]
    try:
        data = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{table}: {exc}") from None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return _write_part(str(out), table, f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet", data)


def _write_part(out: str, table: str, name: str, data: pa.Table, **options) -> Path | str:
    """One Parquet part written whole; its location. Locally the temporary file must not end in
    .parquet (DuckDB's glob reads hidden files too); on object stores it is a single PUT."""
    store, rel = storage(out), f"catalog/{table}/{name}"
    with store.writing(rel, suffix=".tmp") as tmp:
        pq.write_table(data, tmp, **options)
    return located(store.uri(rel))


def _part_names(out: str | os.PathLike, table: str) -> list[str]:
    """Relative paths of the table's committed parts (in-flight ".part-*.tmp-*" files are hidden)."""
    return [rel for rel in storage(str(out)).files(f"catalog/{table}")
            if rel.rsplit("/", 1)[-1].startswith("part-") and rel.endswith(".parquet")]


def _dataset(out: str | os.PathLike, table: str, dictionary: Sequence[str] = ()) -> ds.Dataset | None:
    names = _part_names(out, table)
    return _parts_dataset(storage(str(out)), table, names, dictionary) if names else None


def _parts_dataset(store, table: str, names: list[str], dictionary: Sequence[str] = ()) -> ds.Dataset:
    """These part files of a table as one dataset; the explicit schema makes older files without a newer
    column read as nulls instead of failing. `dictionary`: string columns read dictionary-encoded."""
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=list(dictionary)))
    return ds.dataset([store.path(n) for n in names], format=fmt, schema=_schema(table, dictionary),
                      filesystem=store.fs if store.remote else None)


def _read(out: str | os.PathLike, table: str, dictionary: Sequence[str] = (), **scan) -> pa.Table | None:
    """The table's rows (None when it has no folder). A compaction may replace part files between
    listing and reading them: the read is then simply done again on the new listing."""
    for attempt in range(5):
        dataset = _dataset(out, table, dictionary)
        if dataset is None:
            return None
        try:
            return dataset.to_table(**scan)
        except OSError as exc:  # pyarrow raises FileNotFoundError, or an OSError that says so
            vanished = isinstance(exc, FileNotFoundError) or "No such file" in str(exc)
            if not vanished or attempt == 4:
                raise
    return None


def read_arrow(out: str | os.PathLike, table: str, columns: list[str] | None = None,
               filter: ds.Expression | None = None, dictionary: Sequence[str] = ()) -> pa.Table:
    """Rows of a catalog table as Arrow, only `columns` and those matching `filter` (empty, with the
    table's columns, if none were written). `dictionary`: string columns that repeat (configs, models,
    paths) read dictionary-encoded: a fifth of the memory at 100,000 rows (benchmarks/bench_export.py)."""
    data = _read(out, table, dictionary, columns=columns, filter=filter)
    if data is None:
        schema = _schema(table, dictionary)
        data = (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()
    return data


def read_table(out: str | os.PathLike, table: str) -> pd.DataFrame:
    """All rows of a catalog table (empty, with the table's columns, if none were written)."""
    data = _read(out, table)
    return (data if data is not None else _schema(table).empty_table()).to_pandas()


def metric_keys(out: str | os.PathLike, version: str, among=None) -> set[str]:
    """Transfer keys that have a metrics row of this metrics version (`among`: only of these keys)."""
    return set(metric_key_array(out, version, among).to_pylist())


def metric_key_array(out: str | os.PathLike, version: str, among=None) -> pa.Array:
    """`metric_keys` as one Arrow array (a million keys without a Python string each; may repeat keys)."""
    return _read_keys(out, "metrics", "transfer_key", ds.field("metrics_version") == version, among)


def ok_keys(out: str | os.PathLike, table: str, among=None) -> set[str]:
    """Cache keys with at least one row of status ok ("embeddings" or "transfers"); `among`: only of these
    keys (the rest of the catalog is scanned, not held).

    A later failed row does not revoke an ok one: the artifact was written before its ok row.
    """
    return set(ok_key_array(out, table, among).to_pylist())


def ok_key_array(out: str | os.PathLike, table: str, among=None) -> pa.Array:
    """`ok_keys` as one Arrow array (one read of the key and status columns; may repeat keys)."""
    if table not in _KEY_COLUMN:
        raise ValueError(f"ok_keys: table must be embeddings or transfers, got {table!r}")
    return _read_keys(out, table, _KEY_COLUMN[table], ds.field("status") == "ok", among)


def _read_keys(out: str | os.PathLike, table: str, column: str, wanted: ds.Expression, among) -> pa.Array:
    """The `column` of the rows `wanted` (and, with `among`, whose key is one of these), as one array."""
    if among is not None:
        wanted = wanted & ds.field(column).isin(pa.array(list(among), pa.string()))
    data = _read(out, table, columns=[column], filter=wanted)
    return data.column(column).combine_chunks() if data is not None else pa.array([], pa.string())


def part_files(out: str | os.PathLike, table: str) -> list[Path | str]:
    """The table's committed part files (Paths, or URLs for object storage)."""
    _schema(table)
    return [located(storage(str(out)).uri(n)) for n in _part_names(out, table)]


def compact(out: str | os.PathLike, table: str, rows_per_file: int = 1_000_000) -> tuple[int, int, int]:
    """Rewrite a table's part files as a few large ones; (files before, files after, rows).

    Never loses a row and is safe beside readers and writers: it reads a snapshot of the part files
    there now, writes their rows as new parts (whole, as any part), and only then deletes exactly that
    snapshot; parts appended meanwhile are untouched. Between the two steps a reader may see a row
    twice (the catalogs' readers keep the latest row per key and retry a read whose file vanished).
    One compaction of a table at a time (`_compaction_lock`).
    """
    out = str(out)
    store = storage(out)
    _schema(table)
    with _compaction_lock(store, table):
        snapshot = _part_names(out, table)
        if len(snapshot) <= 1:
            return len(snapshot), len(snapshot), 0
        data = _parts_dataset(store, table, snapshot).to_table()
        # oldest first (catalog/runs has no created_at: its rows are ordered by when each run started)
        data = data.sort_by([("created_at" if "created_at" in data.schema.names else "started_at", "ascending")])
        for start in range(0, max(1, data.num_rows), rows_per_file):
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            _write_part(out, table, f"part-{stamp}-compact-{uuid.uuid4().hex[:8]}.parquet",
                        data.slice(start, rows_per_file), compression="zstd")
        for old in snapshot:
            store.delete(old)
        return len(snapshot), len(_part_names(out, table)), data.num_rows


def compact_fragmented(out: str | os.PathLike, max_parts: int) -> dict[str, tuple[int, int, int]]:
    """Compact each table with more than `max_parts` part files (what a long run leaves: a part per
    flush); {table: (files before, files after, rows)} of those compacted."""
    done = {}
    for table in SCHEMAS:
        if len(_part_names(out, table)) > max_parts:
            done[table] = compact(out, table)
    return done


COMPACT_LOCK_TTL = 3600.0
"""An object-store compaction lock older than this (seconds) belongs to a compaction that died: broken."""


@contextlib.contextmanager
def _compaction_lock(store, table: str):
    """Locally an OS lock (released if the process dies); on object stores a lock object created with
    `If-None-Match: *`, removed at the end, and broken (`If-Match` on its ETag) once COMPACT_LOCK_TTL old."""
    rel = f"catalog/{table}/.compact.lock"
    if not store.remote:
        import fcntl

        path = Path(store.path(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    while not store.create_exclusive(rel, b"compacting"):
        stat = store.stat(rel)
        if stat is not None and time.time() - stat.mtime > COMPACT_LOCK_TTL:
            store.delete_if(rel, stat.token)
            continue
        time.sleep(1.0)
    try:
        yield
    finally:
        store.delete(rel)


__all__ = [
    "read_arrow",
    "EMBEDDINGS",
    "TRANSFERS",
    "RUNS",
    "METRICS",
    "SCHEMAS",
    "metric_keys",
    "store_relpath",
    "store_folder",
    "store_path",
    "append_rows",
    "read_table",
    "ok_keys",
    "part_files",
    "compact",
    "compact_fragmented",
]
