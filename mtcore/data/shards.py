"""Shard writers of a dataset export: a sample a transfer, shards of about a target size, made whole in DEST.

A writer is a small class with `write(sample)` and `close()`, as webdataset's `TarWriter` and Ray Data's
datasinks are; the split's shard names (`train-000000.tar`) and the target size are the caller's. Each
shard is written aside and appears in DEST only when complete (renamed locally, one PUT on object
storage), so a killed export leaves no half shard under a final name. Formats:

- `webdataset`: tar shards through the `webdataset` package's TarWriter (`<key>.mp4`, `<key>.json`,
  `<key>.png` per sample), which `webdataset.WebDataset` and Hugging Face `datasets` read as they are;
- `parquet`: Parquet shards with the same three fields as columns (the video and image bytes inline).

A third format (Lance, MosaicML Streaming) is a subclass with `_begin`, `_add` and `_end`, named in FORMATS.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtcore.io.fileio import sha256_file
from mtcore.io.storage import Storage

TAR_HEADER = 512  # bytes of a tar member's header; members are padded to 512 too


@dataclass
class Sample:
    """One exported transfer: its key and its files."""

    key: str
    """The transfer key: the sample's `__key__`."""
    mp4: bytes
    """The video, as in the store."""
    png: bytes
    """The target image as the model saw it (resized to the video's size)."""
    meta: dict[str, Any]
    """Labels, metrics, seed, model, configs, keys, sources: the sample's JSON."""
    json: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.json = json.dumps(self.meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @property
    def size(self) -> int:
        """Bytes the sample adds to a tar shard (three members, each a header and padded data)."""
        return sum(TAR_HEADER + -(-len(data) // TAR_HEADER) * TAR_HEADER for data in (self.mp4, self.png, self.json))


@dataclass
class Shard:
    """A finished shard, as index.json lists it."""

    name: str
    split: str
    samples: int
    bytes: int
    sha256: str


class ShardWriter:
    """Samples of one split into shards of about `target_bytes` (a shard is closed before the sample
    that would take it past the target; the last one of a split is whatever is left)."""

    extension = ""

    def __init__(self, dest: Storage, split: str, target_bytes: int):
        self.dest, self.split, self.target_bytes = dest, split, target_bytes
        self.shards: list[Shard] = []
        self._stack: contextlib.ExitStack | None = None
        self._path: Path | None = None
        self._count = self._bytes = 0

    def write(self, sample: Sample) -> None:
        if self._stack is not None and self._count and self._written() + sample.size > self.target_bytes:
            self._finish()
        if self._stack is None:
            self._start()
        self._add(sample)
        self._count += 1
        self._bytes += sample.size

    def close(self) -> list[Shard]:
        """Finish the open shard; the split's shards."""
        if self._stack is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the open shard (its temporary file is removed; nothing appears in DEST)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            with contextlib.suppress(Exception):
                self._end()
            stack.__exit__(RuntimeError, RuntimeError("export aborted"), None)

    def _start(self) -> None:
        name = f"{self.split}-{len(self.shards):06d}.{self.extension}"
        self._stack = contextlib.ExitStack()
        self._path = self._stack.enter_context(self.dest.writing(name))
        self._name, self._count, self._bytes = name, 0, 0
        self._begin(self._path)

    def _finish(self) -> None:
        self._end()
        size, digest = self._path.stat().st_size, sha256_file(self._path)
        stack, self._stack = self._stack, None
        stack.close()  # the shard appears in DEST, whole
        self.shards.append(Shard(self._name, self.split, self._count, size, digest))

    def _written(self) -> int:
        """Bytes in the open shard so far (by default the samples' sizes; a format that knows better says so)."""
        return self._bytes

    # a format implements these three
    def _begin(self, path: Path) -> None:
        raise NotImplementedError

    def _add(self, sample: Sample) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError


class WebDatasetShards(ShardWriter):
    """Tar shards through webdataset's TarWriter; members carry a fixed mtime, so an export is
    byte-for-byte reproducible. The shard's size is the file's own (tarfile pads members to 512 bytes)."""

    extension = "tar"

    def _begin(self, path: Path) -> None:
        import webdataset

        self._file = open(path, "wb")
        # an int mtime: a float one makes tarfile add a PAX header to every member (1 KiB each)
        self._tar = webdataset.TarWriter(self._file, mtime=0)

    def _written(self) -> int:
        return self._file.tell()

    def _add(self, sample: Sample) -> None:
        self._tar.write({"__key__": sample.key, "mp4": sample.mp4, "png": sample.png, "json": sample.json})

    def _end(self) -> None:
        self._tar.close()
        self._file.close()


class ParquetShards(ShardWriter):
    """Parquet shards: columns key, mp4, png, json (the sample's JSON as a string), row groups of 256."""

    extension = "parquet"
    SCHEMA = pa.schema([("key", pa.string()), ("mp4", pa.binary()), ("png", pa.binary()), ("json", pa.string())])
    ROW_GROUP = 256

    def _begin(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(str(path), self.SCHEMA, compression="none")
        self._rows: list[Sample] = []

    def _add(self, sample: Sample) -> None:
        self._rows.append(sample)
        if len(self._rows) >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self._writer.write_table(pa.table({"key": [s.key for s in rows], "mp4": [s.mp4 for s in rows],
                                               "png": [s.png for s in rows],
                                               "json": [s.json.decode() for s in rows]}, schema=self.SCHEMA))

    def _end(self) -> None:
        self._flush()
        self._writer.close()


FORMATS: dict[str, type[ShardWriter]] = {"webdataset": WebDatasetShards, "parquet": ParquetShards}

__all__ = ["Sample", "Shard", "ShardWriter", "WebDatasetShards", "ParquetShards", "FORMATS"]
