"""The work items of a bulk run, and the columnar sets of transfers the plan holds.

A plan of a million transfers holds them as columns (tasks.items.TransferSet: per embedding and
transfer config, arrays of target indices, seeds and keys), not as a million Python objects; a
TransferJob is made only when its batch is about to be served.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mtcore.data.catalog import store_relpath
from mtcore.method.config import InversionConfig, TransferConfig

Rows = dict[str, list[dict]]
"""What a work item returns: catalog table -> rows."""


@dataclass(frozen=True)
class PlannedModel:
    """One model of the run."""

    model: str
    """Folder or hub id to load."""
    revision: str | None
    """Hub revision (None for local folders)."""
    model_id: str
    """Its identity, as recorded in keys and rows."""


@dataclass(frozen=True)
class InversionJob:
    """One motion embedding to make (or found cached): a reference video inverted on one model with one config."""

    key: str
    """Embedding key (mtcore.data.keys.embedding_key)."""
    reference_id: str
    """Id of the reference video in the manifest."""
    reference_path: str
    """The reference video: an absolute path or a URL."""
    reference_sha256: str
    """sha256 of its bytes ("" when the file could not be read)."""
    path: str
    """Store path of the embedding file, relative to OUT."""
    config: InversionConfig
    """How it is inverted (as in the manifest: unset frame count and size mean the model's)."""
    model: PlannedModel
    """The model it is inverted on."""
    where: str = ""
    """The manifest entry and field it comes from ("demo.yaml: references[2].path"), for errors."""
    caption: str | None = None
    """Wan: the reference's `caption` label, the text the embedding starts from (in its key); None otherwise."""

    size = 1  # items of work it counts for in a worker's tally


class _Batch:
    """Jobs a worker serves in one call."""

    jobs: tuple

    @property
    def size(self) -> int:
        """Items of work it counts for in a worker's tally."""
        return len(self.jobs)


@dataclass(frozen=True)
class InversionBatch(_Batch):
    """Inversions that share model and config, optimised together in one UNet call per step."""

    jobs: tuple[InversionJob, ...]


@dataclass(frozen=True)
class TransferJob:
    """One video: a motion embedding applied to a target image with a seed."""

    key: str
    """Transfer key (mtcore.data.keys.transfer_key)."""
    embedding: InversionJob
    """The inversion whose embedding it applies (reference, model, inversion config)."""
    target_id: str
    """Id of the target image in the manifest."""
    target_path: str
    """The target image: an absolute path or a URL."""
    target_sha256: str
    """sha256 of its bytes ("" when the file could not be read)."""
    seed: int
    """Seed of the sampling noise."""
    video_path: str
    """Store path of the mp4, relative to OUT."""
    config: TransferConfig
    """How it is sampled."""
    measure: bool = True
    """Measure the video once made (metrics on, and no metrics row of this version yet)."""
    where: str = ""
    """The manifest entry and field of its target ("demo.yaml: targets[0].path"), for errors."""

    @property
    def embedding_key(self) -> str:
        return self.embedding.key

    @property
    def reference_id(self) -> str:
        return self.embedding.reference_id


@dataclass(frozen=True)
class TransferBatch(_Batch):
    """Transfers that share one motion embedding and config, sampled in one UNet call."""

    jobs: tuple[TransferJob, ...]


@dataclass(frozen=True)
class MetricsBatch(_Batch):
    """Finished transfers whose metrics of the current version are missing."""

    jobs: tuple[TransferJob, ...]


@dataclass(frozen=True)
class PlannedTarget:
    """A target image of the manifest, as the plan knows it."""

    id: str
    path: str
    """An absolute path or a URL."""
    sha256: str
    """sha256 of its bytes ("" when the file could not be read)."""
    where: str
    """The manifest entry and field it comes from, for errors."""


@dataclass(eq=False)
class TransferSet:
    """Transfers of one embedding with one transfer config, as columns (row i = one video)."""

    embedding: InversionJob
    config: TransferConfig
    targets: tuple[PlannedTarget, ...]
    """The manifest's targets (shared by every set of a plan); `target` indexes it."""
    target: np.ndarray
    """int32: index of each row's target."""
    seed: np.ndarray
    """int64: each row's seed."""
    key: np.ndarray
    """S64: each row's transfer key (ASCII hex)."""
    measure: np.ndarray
    """bool: measure the video once made."""
    stored: np.ndarray
    """bool: its artifact was in the store when planned (a to-do one then has no ok row: recovered, not remade)."""

    def __len__(self) -> int:
        return len(self.key)

    def take(self, mask: np.ndarray) -> "TransferSet":
        """The rows where `mask` is true (itself when all are: no copy)."""
        if mask.all():
            return self
        return TransferSet(self.embedding, self.config, self.targets, self.target[mask], self.seed[mask],
                           self.key[mask], self.measure[mask], self.stored[mask])

    def job(self, i: int) -> TransferJob:
        target, key = self.targets[self.target[i]], self.key[i].decode("ascii")
        return TransferJob(key, self.embedding, target.id, target.path, target.sha256, int(self.seed[i]),
                           store_relpath("transfers", key), self.config, bool(self.measure[i]), target.where)

    def jobs(self) -> Iterator[TransferJob]:
        return (self.job(i) for i in range(len(self)))

    def stored_keys(self) -> set[str]:
        """Keys of the rows whose artifact was in the store when planned."""
        return {k.decode("ascii") for k in self.key[self.stored]}


class Transfers:
    """Transfers as a list of TransferSets: sized and iterable like a list of TransferJobs (made one at a
    time as they are iterated), without holding one."""

    def __init__(self, parts=()):
        self.parts: list[TransferSet] = [p for p in parts if len(p)]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[TransferJob]:
        return (job for part in self.parts for job in part.jobs())

    def __repr__(self) -> str:
        return f"Transfers({len(self)} in {len(self.parts)} sets)"

    def keys(self) -> np.ndarray:
        """Every key, in order (S64)."""
        return np.concatenate([p.key for p in self.parts]) if self.parts else np.empty(0, "S64")

    def where(self, keep) -> "Transfers":
        """The sets for which `keep(set)` is true."""
        return Transfers(p for p in self.parts if keep(p))

    def split(self, mask: np.ndarray) -> tuple["Transfers", "Transfers"]:
        """(rows where `mask`, rows where not), `mask` over `keys()`' order."""
        yes, no, at = [], [], 0
        for part in self.parts:
            m = mask[at:at + len(part)]
            yes.append(part.take(m))
            no.append(part.take(~m))
            at += len(part)
        return Transfers(yes), Transfers(no)
