"""`mt export`: a run's finished transfers as a dataset that loaders read as it is.

An export is a pure function of (catalog rows, manifest, options):
1. the manifest's transfer keys (the plan's, every retry seed included) select the catalogs' ok rows;
   metrics and the manifest's current labels are joined on (mtcore.data.samples);
2. the gate (`--where`), the best seed per pair (`--per-pair`) and the splits (mtcore.data.select)
   choose the samples;
3. shards are written aside and appear whole (mtcore.data.shards), then the dataset card, the
   provenance table, and last `index.json`, which lists every shard with its sha256. A killed
   export never looks complete; an export whose index already says the same fingerprint writes nothing.

Why the webdataset package's TarWriter on the driver rather than Ray Data's `write_webdataset`: the
export is bound by reading small files and writing tar members (measured in benchmarks/bench_export.py),
which one process does at the goal's rate without a cluster; a Ray Data job would add its start-up and
still need our index-last commit, deterministic shard contents and the dataset card around it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from mtcore import CODE_VERSION
from mtcore.data.manifest import Manifest, load_manifest
from mtcore.data.samples import label_names, sample_meta, sample_table
from mtcore.data.select import SPLIT_BY, Gate, assign_splits, best_per_pair, gate, parse_split, per_pair_column
from mtcore.data.shards import FORMATS, Sample, Shard
from mtcore.errors import InputError
from mtcore.io.fileio import remove_stale_temporaries
from mtcore.io.storage import local_copy, storage
from mtcore.io.videoio import probe_video, read_image
from tasks.plan import plan_run, planned_transfers

INDEX = "index.json"
CHUNK = 256  # samples whose files are fetched at once (threads; bounded memory)
FETCH_THREADS = 8
_SHARD = rf"[a-z][a-z0-9_]*-\d{{6}}\.({'|'.join(w.extension for w in FORMATS.values())})"
"""A shard's name, as ShardWriter names them, in any format of FORMATS."""
_OURS = re.compile(rf"^({_SHARD}|README\.md|provenance\.parquet|metrics\.png|index\.json|\..+\.tmp-.+)$")
"""Files an export writes (and temporaries of a killed one): a DEST holding only these is ours to reuse."""


class ExportRefused(InputError):
    """DEST holds something else, or the options select no sample (`exit_code` says which)."""

    def __init__(self, where: object, problem: str, exit_code: int = 2):
        super().__init__(where, problem)
        self.exit_code = exit_code


@dataclass
class ExportSummary:
    """What an export kept and dropped, and what it wrote."""

    dest: str
    format: str
    candidates: int
    """The manifest's finished transfers found in the catalogs."""
    kept: int
    splits: dict[str, int]
    gate: Gate | None
    per_pair_dropped: int
    crossed_dropped: int
    """With `--split-by both`: samples whose reference and target fell in different splits."""
    shards: list[Shard] = field(default_factory=list)
    written: bool = True
    """False: DEST already held this very export; nothing was written."""
    fingerprint: str = ""
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"{self.candidates} finished transfers of the manifest"]
        if self.gate:
            out += [f"  --where {self.gate.where!r}: kept {self.gate.kept}, dropped {self.gate.dropped}"]
            out += [f"    {term!r} fails on {n}" for term, n in self.gate.terms] if len(self.gate.terms) > 1 else []
        if self.per_pair_dropped:
            out.append(f"  --per-pair: dropped {self.per_pair_dropped} other seeds of the same pairs")
        if self.crossed_dropped:
            out.append(f"  --split-by both: dropped {self.crossed_dropped} whose reference and target fall in two splits")
        out.append(f"kept {self.kept}: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        if not self.written:
            out.append(f"{self.dest} already holds this export (index.json, fingerprint {self.fingerprint[:12]}): "
                       "nothing written")
        else:
            rate = self.kept / self.seconds if self.seconds else 0.0
            out.append(f"wrote {len(self.shards)} {self.format} shard(s), {sum(s.bytes for s in self.shards):,} bytes, "
                       f"to {self.dest} in {self.seconds:.1f} s ({rate:,.0f} samples/s)")
        return out


def parse_size(text: str | int) -> int:
    """'500MB', '1GiB', '100M', 12345 -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", str(text), re.I)
    if not m or float(m[1]) <= 0:
        raise InputError("--shard-size", f"must be a size such as 500MB or 1GiB, got {text!r}")
    power = " kmgt".index(m[2].lower() or " ")
    return int(float(m[1]) * (1024 if m[3] else 1000) ** power)


def planned_for(manifest: Manifest, out: str) -> tuple[pa.Table, dict[str, str | None]]:
    """Every transfer the manifest asks for (with `retry:`, every seed a pair may use) with the manifest's
    ids (tasks.plan.planned_transfers), and each model identity's revision."""
    if manifest.retry is not None:
        manifest = replace(manifest, seeds=manifest.retry.seeds(manifest.seeds[0]))
    plan = plan_run(manifest, out)
    return planned_transfers(plan), {m.model_id: m.revision for m in plan.models}


def export_dataset(manifest_path: str, dest: str, out: str = "mt-out", where: str | None = None,
                   per_pair: str | None = None, split: str | None = None, split_by: str = "reference",
                   fmt: str = "webdataset", shard_size: str | int = "500MB", overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ExportSummary:
    """Export the manifest's finished transfers from OUT to DEST (see the module docstring)."""
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise InputError("--format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    target_bytes, fractions = parse_size(shard_size), parse_split(split)
    if split_by not in SPLIT_BY:
        raise InputError("--split-by", f"must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    if per_pair:
        per_pair_column(per_pair)
    manifest = load_manifest(manifest_path)
    planned, revisions = planned_for(manifest, out)
    table = sample_table(manifest, out, planned)
    del planned
    pa.default_memory_pool().release_unused()  # the catalogs' scan buffers: the pool would keep them
    candidates = table.num_rows
    table, gated = gate(table, where)
    table, per_pair_dropped = best_per_pair(table, per_pair) if per_pair else (table, 0)
    table, crossed = assign_splits(table, fractions, split_by)
    table = table.sort_by([("split", "ascending"), ("transfer_key", "ascending")])
    counts = {name: int(np.sum(table.column("split").to_numpy(zero_copy_only=False) == name)) for name in fractions}
    summary = ExportSummary(dest, fmt, candidates, table.num_rows, counts, gated, per_pair_dropped, crossed)
    if candidates == 0:
        raise ExportRefused(out, f"no finished transfer of {manifest.file_name}: run `mt run {manifest_path}` first",
                            exit_code=1)
    if table.num_rows == 0:
        raise ExportRefused(dest, "no sample kept: " + "; ".join(summary.lines()[:-1]), exit_code=1)

    options = {"format": fmt, "shard_bytes": target_bytes, "where": where, "per_pair": per_pair,
               "split": fractions, "split_by": split_by, "code_version": CODE_VERSION}
    summary.fingerprint = _fingerprint(table, options, manifest, revisions)
    store = storage(dest)
    previous = _previous_export(store, dest, summary.fingerprint, overwrite)
    if previous is not None:
        summary.shards, summary.written = previous, False
        summary.seconds = time.perf_counter() - t0
        return summary
    if store.exists(INDEX):
        store.delete(INDEX)  # from here on DEST is an incomplete export until the new index is written
    if not store.remote:  # what a killed export left half-written (objects are whole or absent)
        remove_stale_temporaries(Path(store.path()))

    from mtcore.eval.card import write_card, write_provenance  # matplotlib: only when writing

    summary.shards = _write_shards(store, out, table, fmt, target_bytes, revisions, progress)
    write_provenance(store, manifest, table)
    write_card(store, manifest, table, summary, options)
    listed = {s.name for s in summary.shards}
    for name in store.names(""):  # shards of an earlier export that this one does not list: gone before the
        if re.fullmatch(_SHARD, name) and name not in listed:  # index says the folder is complete
            store.delete(name)
    index = {"format": fmt, "fingerprint": summary.fingerprint, "samples": table.num_rows, "splits": counts,
             "options": options, "manifest_sha256": manifest.sha256, "shards": [asdict(s) for s in summary.shards]}
    store.write_bytes(INDEX, json.dumps(index, indent=1, sort_keys=True).encode())  # last: the export is complete
    summary.seconds = time.perf_counter() - t0
    return summary


def _fingerprint(table: pa.Table, options: dict, manifest: Manifest, revisions: dict) -> str:
    """sha256 of the chosen rows (every column: labels, paths and ids included), the options, and what
    else the card says (the dataset block, the manifest's name, the models' revisions)."""
    h = hashlib.sha256(json.dumps({"options": options, "name": manifest.name, "revisions": revisions,
                                   "dataset": asdict(manifest.dataset) if manifest.dataset else None},
                                  sort_keys=True).encode())
    # the rows' values, not their encoding (a compaction may re-encode the same rows): dictionaries decoded,
    # a batch at a time, streamed into the hash
    plain = pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                       for f in table.schema])
    with pa.ipc.new_stream(pa.PythonFile(_HashSink(h), mode="w"), plain) as writer:
        for batch in table.to_batches(max_chunksize=8192):
            writer.write_batch(batch.cast(plain))
    return h.hexdigest()


class _HashSink:
    """A write-only file that feeds what is written to a hash."""

    def __init__(self, h):
        self.h, self.closed = h, False

    def write(self, data) -> int:
        self.h.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _previous_export(store, dest: str, fingerprint: str, overwrite: bool) -> list[Shard] | None:
    """The shards of the identical export DEST already holds (None: write it). Refuses a DEST that holds
    another export or other files, unless `overwrite`."""
    names = store.names("")
    if INDEX in names:
        index = json.loads(store.read_bytes(INDEX))
        shards = [Shard(**s) for s in index.get("shards", [])]
        if index.get("fingerprint") == fingerprint:  # this very export: whole, or to be made whole again
            return shards if all(s.name in names for s in shards) else None
        if not overwrite:
            raise ExportRefused(dest, f"holds another export ({index.get('samples')} samples, fingerprint "
                                      f"{str(index.get('fingerprint'))[:12]}); --overwrite replaces it")
    foreign = [n for n in names if not _OURS.match(n)]
    if foreign and not overwrite:
        raise ExportRefused(dest, f"is not empty ({', '.join(sorted(foreign)[:5])}{', ...' if len(foreign) > 5 else ''}"
                                  "); choose an empty folder or give --overwrite")
    return None


def _video(source, out: str, row: dict) -> bytes:
    try:
        return source.read_bytes(row["video_path"])
    except FileNotFoundError:
        raise InputError(f"{out}: {row['video_path']}", "in the catalog but not in the store (deleted?): "
                                                        "a run of the manifest makes it again") from None


@functools.lru_cache(maxsize=1024)  # rows come in key order: a target recurs, but not in order
def _fitted_png(path: str, sha256: str, height: int, width: int) -> bytes:
    """A target image as the model saw it, fitted to the video's size, as PNG bytes (`sha256`: the
    content the plan hashed, part of the cache key)."""
    with local_copy(path) as local:
        image = read_image(local, height, width)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_shards(store, out: str, table: pa.Table, fmt: str, target_bytes: int, revisions: dict,
                  progress: Callable[[int, int], None] | None) -> list[Shard]:
    source = storage(out)
    labels = {side: label_names(table, side) for side in ("reference", "target")}
    sizes: dict[tuple, tuple[int, int]] = {}

    def png(row: dict) -> bytes:
        size_key = (row["model_id"], row["transfer_config"])
        if size_key not in sizes:  # one probe per model and transfer config
            with source.reading(row["video_path"]) as path:
                info = probe_video(path)
            sizes[size_key] = (info.height, info.width)
        return _fitted_png(row["target_path"], row["target_sha256"], *sizes[size_key])

    shards: list[Shard] = []
    writer, done = None, 0
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        try:
            for start in range(0, table.num_rows, CHUNK):
                rows = table.slice(start, CHUNK).to_pylist()
                videos = pool.map(lambda r: _video(source, out, r), rows)
                for row, mp4 in zip(rows, videos):
                    if writer is None or writer.split != row["split"]:
                        shards += writer.close() if writer else []
                        writer = FORMATS[fmt](store, row["split"], target_bytes)
                    writer.write(Sample(row["transfer_key"], mp4, png(row), sample_meta(row, labels, revisions)))
                done += len(rows)
                if progress:
                    progress(done, table.num_rows)
            shards += writer.close() if writer else []
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return shards


__all__ = ["export_dataset", "ExportSummary", "ExportRefused", "planned_for", "parse_size", "INDEX"]
