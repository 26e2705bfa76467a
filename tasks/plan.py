"""Stage 1 of a bulk run: hash every input, derive content-addressed keys, see what the store holds.

Pure Python (no Prefect, no Ray, no torch): the flow wraps it in a task. The plan carries everything
the later stages need: the model, typed work items (each with its own config) and what is cached.
A missing input file cannot be hashed: its inversion becomes a failed row at once, and a missing
target fails its own transfers; the rest of the run proceeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mtcore.catalog import ok_keys, store_path, store_relpath
from mtcore.config import InversionConfig, TransferConfig
from mtcore.identity import DEFAULT_MODEL, model_identity
from mtcore.keys import embedding_key, sha256_file, transfer_key
from mtcore.manifest import Item, Manifest

if TYPE_CHECKING:  # the worker side; planning never loads torch
    from mtcore.models import SVDModel


@dataclass(frozen=True)
class InversionJob:
    """One motion embedding to make (or found cached): a reference video inverted with one config."""

    key: str
    """Embedding key (mtcore.keys.embedding_key)."""
    reference_id: str
    """Id of the reference video in the manifest."""
    reference_path: str
    """Absolute path of the reference video."""
    reference_sha256: str
    """sha256 of its bytes ("" when the file could not be read)."""
    path: str
    """Store path of the embedding file, relative to OUT."""
    config: InversionConfig
    """How it is inverted (as in the manifest: unset frame count and size mean the model's)."""

    size = 1  # items of work it counts for in a worker's tally

    def run(self, model: SVDModel, out: str, worker: str) -> list[dict]:
        """Invert it on a loaded model (inside a worker); one embeddings row."""
        from tasks.work import run_inversion

        return [run_inversion(model, self, Path(out), worker)]


@dataclass(frozen=True)
class TransferJob:
    """One video: a motion embedding applied to a target image with a seed."""

    key: str
    """Transfer key (mtcore.keys.transfer_key)."""
    embedding_key: str
    """Key of the motion embedding it applies."""
    reference_id: str
    """Id of the reference video the embedding was inverted from."""
    target_id: str
    """Id of the target image in the manifest."""
    target_path: str
    """Absolute path of the target image."""
    target_sha256: str
    """sha256 of its bytes ("" when the file could not be read)."""
    seed: int
    """Seed of the sampling noise."""
    video_path: str
    """Store path of the mp4, relative to OUT."""
    config: TransferConfig
    """How it is sampled."""


@dataclass(frozen=True)
class TransferBatch:
    """Transfers that share one motion embedding and config, sampled in one UNet call."""

    jobs: tuple[TransferJob, ...]

    @property
    def size(self) -> int:
        return len(self.jobs)

    def run(self, model: SVDModel, out: str, worker: str) -> list[dict]:
        """Sample the batch on a loaded model (inside a worker); one transfers row per job."""
        from tasks.work import run_transfers

        return run_transfers(model, list(self.jobs), Path(out), worker)


@dataclass
class Plan:
    """Everything the later stages need; `*_todo` are missing from the store, `*_cached` are done."""

    manifest_path: str
    """The manifest file, absolute."""
    manifest_sha256: str
    """sha256 of the manifest's bytes."""
    model: str
    """Model to load: a local folder or a hub id."""
    revision: str | None
    """Hub revision of `model` (None for local folders)."""
    model_id: str
    """Its identity, as recorded in keys and rows."""
    inversions_todo: list[InversionJob] = field(default_factory=list)
    """Embeddings to compute, each key once."""
    inversions_cached: list[InversionJob] = field(default_factory=list)
    """Embeddings with an ok row and their file in the store."""
    transfers_todo: list[TransferJob] = field(default_factory=list)
    """Videos to compute, each key once (whether their embedding succeeds is decided by the stages)."""
    transfers_cached: list[TransferJob] = field(default_factory=list)
    """Videos with an ok row and their file in the store."""
    failed_inversions: list[tuple[InversionJob, str]] = field(default_factory=list)
    """Inversions whose reference video could not be read, with the error."""
    failed_transfers: list[tuple[TransferJob, str]] = field(default_factory=list)
    """Transfers whose target image could not be read, with the error."""


def _hash_items(items: tuple[Item, ...]) -> dict[str, str | Exception]:
    """sha256 of each item's bytes, or the error that prevented reading it."""
    out: dict[str, str | Exception] = {}
    for item in items:
        try:
            out[item.id] = sha256_file(item.path)
        except FileNotFoundError:
            out[item.id] = FileNotFoundError(f"{item.path}: file not found")
        except OSError as exc:
            out[item.id] = OSError(f"{item.path}: unreadable ({exc.strerror or exc})")
    return out


def _cached(out: Path, table: str, key: str, catalog_ok: set[str]) -> bool:
    # Cached = an ok row AND the artifact still on disk (a deleted file is simply made again).
    return key in catalog_ok and store_path(out, table, key).is_file()


def plan_run(manifest: Manifest, out: str | Path) -> Plan:
    """Keys for every inversion and transfer of the manifest, split into cached and to-do."""
    out = Path(out)
    model = manifest.model or str(DEFAULT_MODEL)
    plan = Plan(str(manifest.path), manifest.sha256, model, manifest.revision, model_identity(model, manifest.revision))
    ref_sha, tgt_sha = _hash_items(manifest.references), _hash_items(manifest.targets)
    targets = {t.id: t for t in manifest.targets}
    emb_ok, tr_ok = ok_keys(out, "embeddings"), ok_keys(out, "transfers")

    jobs: dict[str, InversionJob] = {}
    planned: set[str] = set()  # identical content under two ids gives one key: invert it once
    for ref in manifest.references:
        sha = ref_sha[ref.id]
        # A missing file keys on an empty hash: its failed row is stable; once the file exists it keys anew.
        digest = sha if isinstance(sha, str) else ""
        key = embedding_key(digest, plan.model_id, manifest.inversion)
        job = InversionJob(key, ref.id, str(ref.path), digest, store_relpath("embeddings", key), manifest.inversion)
        jobs[ref.id] = job
        if isinstance(sha, Exception):
            plan.failed_inversions.append((job, str(sha)))
        elif _cached(out, "embeddings", key, emb_ok):
            plan.inversions_cached.append(job)
        elif key not in planned:
            plan.inversions_todo.append(job)
        planned.add(key)

    seen: set[str] = set()  # identical content under two ids gives one key: do it once
    for ref_id, target_id in manifest.pairs:
        embedding = jobs[ref_id]
        sha = tgt_sha[target_id]
        digest = sha if isinstance(sha, str) else ""
        for seed in manifest.seeds:
            key = transfer_key(embedding.key, digest, manifest.transfer, seed)
            if key in seen:
                continue
            seen.add(key)
            job = TransferJob(key, embedding.key, ref_id, target_id, str(targets[target_id].path), digest, seed,
                              store_relpath("transfers", key), manifest.transfer)
            if _cached(out, "transfers", key, tr_ok):
                plan.transfers_cached.append(job)
            elif isinstance(sha, Exception):
                plan.failed_transfers.append((job, str(sha)))
            else:
                plan.transfers_todo.append(job)
    return plan
