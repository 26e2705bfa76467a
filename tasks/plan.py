"""Stage 1 of a bulk run: hash every input, derive content-addressed keys, see what the store holds.

Pure Python (no Prefect, no Ray): the flow wraps it in a task. A missing input file cannot be
hashed; the jobs that need it become failed rows right here, and the rest of the run proceeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtcore.catalog import ok_keys, store_path, store_relpath
from mtcore.keys import embedding_key, sha256_file, transfer_key
from mtcore.manifest import Item, Manifest
from mtcore.identity import DEFAULT_MODEL, model_identity


@dataclass(frozen=True)
class InversionJob:
    """One motion embedding to make (or found cached)."""

    key: str
    reference_id: str
    reference_path: str
    reference_sha256: str
    path: str
    """Store path relative to OUT."""


@dataclass(frozen=True)
class TransferJob:
    """One video: an embedding applied to a target image with a seed."""

    key: str
    embedding_key: str
    reference_id: str
    target_id: str
    target_path: str
    target_sha256: str
    seed: int
    video_path: str
    """Store path relative to OUT."""


@dataclass
class Plan:
    """Everything the later stages need; `*_todo` are missing from the store, `*_cached` are done."""

    model: str
    revision: str | None
    model_id: str
    inversions_todo: list[InversionJob] = field(default_factory=list)
    inversions_cached: list[InversionJob] = field(default_factory=list)
    transfers_todo: list[TransferJob] = field(default_factory=list)
    transfers_cached: list[TransferJob] = field(default_factory=list)
    failed_inversions: list[tuple[InversionJob, str]] = field(default_factory=list)
    failed_transfers: list[tuple[TransferJob, str]] = field(default_factory=list)


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


def _done(out: Path, kind: str, key: str, catalog_ok: set[str]) -> bool:
    # Cached = an ok row AND the artifact still on disk (a deleted file is simply made again).
    return key in catalog_ok and store_path(out, kind, key).is_file()


def plan_run(manifest: Manifest, out: str | Path) -> Plan:
    """Keys for every inversion and transfer of the manifest, split into cached and to-do."""
    out = Path(out)
    model = manifest.model or str(DEFAULT_MODEL)
    plan = Plan(model=model, revision=manifest.revision, model_id=model_identity(model, manifest.revision))
    ref_sha, tgt_sha = _hash_items(manifest.references), _hash_items(manifest.targets)
    tgts = {t.id: t for t in manifest.targets}
    emb_ok, tr_ok = ok_keys(out, "embeddings"), ok_keys(out, "transfers")

    jobs: dict[str, InversionJob] = {}
    planned: set[str] = set()  # identical content under two ids gives one key: invert it once
    for ref in manifest.references:
        sha = ref_sha[ref.id]
        # A missing file keys on an empty hash: its failed row is stable; once the file exists it keys anew.
        key = embedding_key(sha if isinstance(sha, str) else "", plan.model_id, manifest.inversion)
        job = InversionJob(key, ref.id, str(ref.path), sha if isinstance(sha, str) else "", store_relpath("embeddings", key))
        jobs[ref.id] = job
        if isinstance(sha, Exception):
            plan.failed_inversions.append((job, str(sha)))
        elif _done(out, "embeddings", key, emb_ok):
            plan.inversions_cached.append(job)
        elif key not in planned:
            plan.inversions_todo.append(job)
        planned.add(key)

    failed_refs = {j.reference_id: err for j, err in plan.failed_inversions}
    seen: set[str] = set()  # identical content under two ids gives one key: do it once
    for ref_id, tgt_id in manifest.pairs:
        emb = jobs[ref_id]
        sha = tgt_sha[tgt_id]
        for seed in manifest.seeds:
            key = transfer_key(emb.key, sha if isinstance(sha, str) else "", manifest.transfer, seed)
            job = TransferJob(key, emb.key, ref_id, tgt_id, str(tgts[tgt_id].path), sha if isinstance(sha, str) else "",
                              seed, store_relpath("videos", key))
            if key in seen:
                continue
            seen.add(key)
            if _done(out, "videos", key, tr_ok):
                plan.transfers_cached.append(job)
            elif isinstance(sha, Exception):
                plan.failed_transfers.append((job, str(sha)))
            elif ref_id in failed_refs:
                plan.failed_transfers.append((job, f"reference {ref_id} failed: {failed_refs[ref_id]}"))
            else:
                plan.transfers_todo.append(job)
    return plan
