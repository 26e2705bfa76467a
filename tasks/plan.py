"""Stage 1 of a bulk run: hash every input, derive content-addressed keys, see what the store holds.

Pure Python (no Prefect, no Ray, no torch): the flow wraps it in a task. The plan carries everything
the later stages need: the models and typed work items, each with its own model and config (a
sweep over models and configs is just more items). A missing input file cannot be hashed: its
inversion becomes a failed row at once, and a missing target fails its own transfers; the rest of
the run proceeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mtcore.catalog import metric_keys, ok_keys, store_folder, store_relpath
from mtcore.config import InversionConfig, TransferConfig
from mtcore.identity import DEFAULT_MODEL, model_identity
from mtcore.keys import embedding_key, transfer_key
from mtcore.manifest import Item, Manifest
from mtcore.storage import reason, sha256_input, storage

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
    """Embedding key (mtcore.keys.embedding_key)."""
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

    size = 1  # items of work it counts for in a worker's tally



@dataclass(frozen=True)
class InversionBatch:
    """Inversions that share model and config, optimised together in one UNet call per step."""

    jobs: tuple[InversionJob, ...]

    @property
    def size(self) -> int:
        return len(self.jobs)



@dataclass(frozen=True)
class TransferJob:
    """One video: a motion embedding applied to a target image with a seed."""

    key: str
    """Transfer key (mtcore.keys.transfer_key)."""
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
class TransferBatch:
    """Transfers that share one motion embedding and config, sampled in one UNet call."""

    jobs: tuple[TransferJob, ...]

    @property
    def size(self) -> int:
        return len(self.jobs)



@dataclass(frozen=True)
class MetricsBatch:
    """Finished transfers whose metrics of the current version are missing."""

    jobs: tuple[TransferJob, ...]

    @property
    def size(self) -> int:
        return len(self.jobs)



@dataclass
class Plan:
    """Everything the later stages need; `*_todo` are missing from the store, `*_cached` are done."""

    manifest_path: str
    """The manifest file, absolute."""
    manifest_sha256: str
    """sha256 of the manifest's bytes."""
    models: list[PlannedModel]
    """The models, in manifest order."""
    metrics: bool = True
    """Whether new transfers are measured and missing metrics of cached ones filled in."""
    inversions_todo: list[InversionJob] = field(default_factory=list)
    """Embeddings to compute, each key once."""
    inversions_cached: list[InversionJob] = field(default_factory=list)
    """Embeddings with an ok row and their file in the store."""
    transfers_todo: list[TransferJob] = field(default_factory=list)
    """Videos to compute, each key once (whether their embedding succeeds is decided by the stages)."""
    transfers_cached: list[TransferJob] = field(default_factory=list)
    """Videos with an ok row and their file in the store."""
    metrics_todo: list[TransferJob] = field(default_factory=list)
    """Cached videos without a metrics row of the current version (when `metrics`)."""
    failed_inversions: list[tuple[InversionJob, str]] = field(default_factory=list)
    """Inversions whose reference video could not be read, with the error."""
    failed_transfers: list[tuple[TransferJob, str]] = field(default_factory=list)
    """Transfers whose target image could not be read, with the error."""

    def for_model(self, model: PlannedModel) -> "Plan":
        """The part of the plan that runs on one model."""
        mine = lambda jobs: [j for j in jobs if _model_of(j) == model]  # noqa: E731
        pairs = lambda items: [(j, e) for j, e in items if _model_of(j) == model]  # noqa: E731
        return replace(self, models=[model], inversions_todo=mine(self.inversions_todo),
                       inversions_cached=mine(self.inversions_cached), transfers_todo=mine(self.transfers_todo),
                       transfers_cached=mine(self.transfers_cached), metrics_todo=mine(self.metrics_todo),
                       failed_inversions=pairs(self.failed_inversions), failed_transfers=pairs(self.failed_transfers))


def _model_of(job: InversionJob | TransferJob) -> PlannedModel:
    return job.model if isinstance(job, InversionJob) else job.embedding.model


def _hash_items(items: tuple[Item, ...]) -> dict[str, str | Exception]:
    """sha256 of each item's bytes (local or URL), or the error that prevented reading it."""
    out: dict[str, str | Exception] = {}
    for item in items:
        try:
            out[item.id] = sha256_input(item.path)
        except FileNotFoundError:
            out[item.id] = FileNotFoundError(f"{item.path}: file not found")
        except Exception as exc:  # OSError locally; object stores add their own (no credentials, endpoint down)
            out[item.id] = OSError(f"{item.path}: unreadable ({reason(exc)})")
    return out


def _content_or_path(sha: str | Exception, item: Item) -> str:
    """What a key is made of: the content hash, or for an unreadable file its path.

    Keying an unreadable file on its path keeps its failed row stable from run to run and keeps two
    different missing files apart (one empty hash for both made them one key, and one of them lost
    its row); once the file can be read it keys on its content like any other.
    """
    return sha if isinstance(sha, str) else f"unreadable:{item.path}"


def stored(out: str, table: str, keys) -> set[str]:
    """The keys whose artifact is in the store now: a check per key when few, else one listing of the
    table's store folder (object stores: one request per 1,000 artifacts instead of one per key)."""
    rels = {store_relpath(table, k): k for k in keys}
    return {rels[r] for r in storage(out).existing(list(rels), prefix=store_folder(table))}


def plan_run(manifest: Manifest, out: str, metrics_version: str | None = None) -> Plan:
    """Keys for every (model x inversion config x reference) and (... x transfer config x pair x seed).

    `metrics_version`: the current mtcore.metrics.METRICS_VERSION (given by the caller, so planning
    does not import the metrics' OpenCV); None skips looking for missing metrics.
    """
    out = str(out)
    models = [PlannedModel(m.model or str(DEFAULT_MODEL), m.revision, model_identity(m.model or DEFAULT_MODEL, m.revision))
              for m in manifest.models]
    plan = Plan(str(manifest.path), manifest.sha256, models, metrics=manifest.metrics)
    ref_sha, tgt_sha = _hash_items(manifest.references), _hash_items(manifest.targets)
    targets = {t.id: t for t in manifest.targets}
    # Cached = an ok row AND the artifact still in the store (a deleted file is simply made again).
    emb_ok, tr_ok = ok_keys(out, "embeddings"), ok_keys(out, "transfers")
    measured = metric_keys(out, metrics_version) if manifest.metrics and metrics_version else None

    planned: set[str] = set()  # identical content under two ids gives one key: do it once
    for model in models:
        for inversion in manifest.inversions:
            jobs: dict[str, InversionJob] = {}
            for ref in manifest.references:
                sha = ref_sha[ref.id]
                digest = sha if isinstance(sha, str) else ""
                key = embedding_key(_content_or_path(sha, ref), model.model_id, inversion)
                job = InversionJob(key, ref.id, str(ref.path), digest, store_relpath("embeddings", key), inversion, model,
                                   f"{manifest.file_name}: references[{ref.index}].path")
                jobs[ref.id] = job
                if isinstance(sha, Exception):
                    plan.failed_inversions.append((job, f"{job.where}: {sha}"))
                elif key in emb_ok:
                    plan.inversions_cached.append(job)
                elif key not in planned:
                    plan.inversions_todo.append(job)
                planned.add(key)
            for transfer in manifest.transfers:
                _plan_transfers(plan, manifest, jobs, transfer, tgt_sha, targets, out, tr_ok, measured, planned)
    return _check_store(plan, out)


def _check_store(plan: Plan, out: str) -> Plan:
    """Move jobs with an ok row whose artifact has gone from the store back to the to-do lists."""
    here = stored(out, "embeddings", {j.key for j in plan.inversions_cached})
    todo = {j.key for j in plan.inversions_todo}
    for job in plan.inversions_cached:
        if job.key not in here and job.key not in todo:
            plan.inversions_todo.append(job)
            todo.add(job.key)
    plan.inversions_cached = [j for j in plan.inversions_cached if j.key in here]
    here = stored(out, "transfers", {j.key for j in plan.transfers_cached})
    plan.transfers_todo += [j for j in plan.transfers_cached if j.key not in here]
    plan.transfers_cached = [j for j in plan.transfers_cached if j.key in here]
    plan.metrics_todo = [j for j in plan.metrics_todo if j.key in here]
    return plan


def _plan_transfers(plan: Plan, manifest: Manifest, embeddings: dict[str, InversionJob], transfer: TransferConfig,
                    tgt_sha: dict, targets: dict[str, Item], out: str, tr_ok: set[str], measured: set[str] | None,
                    planned: set[str]) -> None:
    for ref_id, target_id in manifest.pairs:
        embedding = embeddings[ref_id]
        sha = tgt_sha[target_id]
        digest = sha if isinstance(sha, str) else ""
        for seed in manifest.seeds:
            key = transfer_key(embedding.key, _content_or_path(sha, targets[target_id]), transfer, seed)
            if key in planned:
                continue
            planned.add(key)
            target = targets[target_id]
            job = TransferJob(key, embedding, target_id, str(target.path), digest, seed, store_relpath("transfers", key),
                              transfer, measure=measured is not None and key not in measured,
                              where=f"{manifest.file_name}: targets[{target.index}].path")
            if key in tr_ok:
                plan.transfers_cached.append(job)
                if measured is not None and key not in measured:
                    plan.metrics_todo.append(job)
            elif isinstance(sha, Exception):
                plan.failed_transfers.append((job, f"{job.where}: {sha}"))
            else:
                plan.transfers_todo.append(job)
