"""Stage 1 of a bulk run: hash every input, derive content-addressed keys, see what the store holds.

Pure Python (no Prefect, no Ray, no torch): the flow wraps it in a task. The plan carries everything
the later stages need: the models and typed work items, each with its own model and config (a
sweep over models and configs is just more items). A missing input file cannot be hashed: its
inversion becomes a failed row at once, and a missing target fails its own transfers; the rest of
the run proceeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtcore.errors import InputError
from mtcore.data.catalog import metric_key_array, ok_key_array, store_folder, store_relpath
from mtcore.method.family import CAPTION_LABEL, SVD, family_of_identity
from mtcore.method.identity import DEFAULT_MODEL, model_identity
from mtcore.data.keys import TransferKeys, embedding_key
from mtcore.data.labels import Retry
from mtcore.data.manifest import Item, Manifest
from mtcore.io.storage import reason, sha256_input, storage
from tasks.items import InversionJob, PlannedModel, PlannedTarget, TransferJob, Transfers, TransferSet

FEW = 32
"""Up to this many keys, the store is asked about each; beyond, its folders are listed."""


@dataclass
class Plan:
    """Everything the later stages need; `*_todo` are missing from the store, `*_cached` are done.

    Transfers are columnar (tasks.items.Transfers): sized and iterable like lists of TransferJobs."""

    manifest_path: str
    """The manifest file, absolute."""
    manifest_sha256: str
    """sha256 of the manifest's bytes."""
    models: list[PlannedModel]
    """The models, in manifest order."""
    metrics: bool = True
    """Whether new transfers are measured and missing metrics of cached ones filled in."""
    retry: Retry | None = None
    """The manifest's `retry:` (tasks.retry): more seeds for the pairs whose outputs fail its condition."""
    inversions_todo: list[InversionJob] = field(default_factory=list)
    """Embeddings to compute, each key once."""
    inversions_cached: list[InversionJob] = field(default_factory=list)
    """Embeddings with an ok row and their file in the store."""
    transfers_todo: Transfers = field(default_factory=Transfers)
    """Videos to compute, each key once (whether their embedding succeeds is decided by the stages)."""
    transfers_cached: Transfers = field(default_factory=Transfers)
    """Videos with an ok row and their file in the store."""
    metrics_todo: Transfers | list[TransferJob] = field(default_factory=Transfers)
    """Cached videos without a metrics row of the current version (when `metrics`)."""
    failed_inversions: list[tuple[InversionJob, str]] = field(default_factory=list)
    """Inversions whose reference video could not be read, with the error."""
    failed_transfers: list[tuple[TransferJob, str]] = field(default_factory=list)
    """Transfers whose target image could not be read, with the error."""

    def for_model(self, model: PlannedModel) -> "Plan":
        """The part of the plan that runs on one model."""
        mine = lambda jobs: [j for j in jobs if _model_of(j) == model]  # noqa: E731
        pairs = lambda items: [(j, e) for j, e in items if _model_of(j) == model]  # noqa: E731
        sets = lambda transfers: transfers.where(lambda part: part.embedding.model == model)  # noqa: E731
        metrics_todo = sets(self.metrics_todo) if isinstance(self.metrics_todo, Transfers) else mine(self.metrics_todo)
        return replace(self, models=[model], inversions_todo=mine(self.inversions_todo),
                       inversions_cached=mine(self.inversions_cached), transfers_todo=sets(self.transfers_todo),
                       transfers_cached=sets(self.transfers_cached), metrics_todo=metrics_todo,
                       failed_inversions=pairs(self.failed_inversions), failed_transfers=pairs(self.failed_transfers))


    def part(self, index: int, count: int) -> "Plan":
        """Part `index` (1-based) of `count` disjoint parts of the transfers, by key (`key_part`): what one of
        `count` drivers does when they split a run between them (`mt run --part I/N`). Its inversions are
        those its transfers need (a reference whose transfers fall in several parts is inverted by the first
        driver to claim it; the others find it in the store); the failed inversions' rows are part 1's."""
        if not 1 <= index <= count:
            raise ValueError(f"part {index} of {count}: the part is 1 to {count}")
        if count == 1:
            return self
        take = lambda transfers: transfers.split(key_part(transfers.keys(), count) == index - 1)[0]  # noqa: E731
        ours = lambda job: key_part(np.array([job.key], "S64"), count)[0] == index - 1  # noqa: E731
        todo = take(self.transfers_todo)
        needed = {p.embedding.key for p in todo.parts}
        metrics_todo = (take(self.metrics_todo) if isinstance(self.metrics_todo, Transfers)
                        else [j for j in self.metrics_todo if ours(j)])
        return replace(self, inversions_todo=[j for j in self.inversions_todo if j.key in needed],
                       transfers_todo=todo, transfers_cached=take(self.transfers_cached), metrics_todo=metrics_todo,
                       failed_inversions=self.failed_inversions if index == 1 else [],
                       failed_transfers=[(j, e) for j, e in self.failed_transfers if ours(j)])


def parse_part(text: str) -> tuple[int, int]:
    """"I/N" (`mt run --part`) -> (I, N); InputError unless 1 <= I <= N."""
    index, sep, count = str(text).partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()) or not 1 <= int(index) <= int(count):
        raise InputError("--part", f"{text!r}: must be I/N with 1 <= I <= N, e.g. 2/4")
    return int(index), int(count)


def key_part(keys: np.ndarray, count: int) -> np.ndarray:
    """0-based part (of `count` equal key ranges) of each transfer key (S64, ASCII hex): by its first 8 hex
    digits, so the parts are contiguous ranges of the key space, disjoint, and about equal in size."""
    chars = np.frombuffer(np.asarray(keys, "S64").astype("S8").tobytes(), np.uint8).reshape(-1, 8).astype(np.uint64)
    digits = np.where(chars >= ord("a"), chars - (ord("a") - 10), chars - ord("0"))
    head = digits @ (np.uint64(16) ** np.arange(7, -1, -1, dtype=np.uint64))
    return ((head * np.uint64(count)) >> np.uint64(32)).astype(np.int64)


def planned_transfers(plan: Plan) -> pa.Table:
    """Every planned transfer (to do and cached) as columns: transfer_key, reference_id, target_id, seed,
    model_id. The ids are the manifest's: a key is content, so a catalog row of the same key may carry
    the ids another manifest (or an older version of this one) gave that content."""
    parts = plan.transfers_todo.parts + plan.transfers_cached.parts
    if not parts:
        return pa.table({"transfer_key": pa.array([], pa.string()), "reference_id": pa.array([], pa.string()),
                         "target_id": pa.array([], pa.string()), "seed": pa.array([], pa.int64()),
                         "model_id": pa.array([], pa.string())})
    target_ids = np.array([t.id for t in parts[0].targets], dtype=object)
    return pa.table({
        "transfer_key": pa.array(np.concatenate([p.key for p in parts]), pa.binary()).cast(pa.string()),
        "reference_id": pa.array(np.concatenate([np.full(len(p), p.embedding.reference_id, object) for p in parts]),
                                 pa.string()),
        "target_id": pa.array(np.concatenate([target_ids[p.target] for p in parts]), pa.string()),
        "seed": pa.array(np.concatenate([p.seed for p in parts]), pa.int64()),
        "model_id": pa.array(np.concatenate([np.full(len(p), p.embedding.model.model_id, object) for p in parts]),
                             pa.string())})


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


def isin(keys: np.ndarray | pa.Array, values) -> np.ndarray:
    """Which `keys` (S64 array, or Arrow binary) are among `values` (an Arrow array, or strings): one hash
    join in Arrow."""
    if not len(keys):
        return np.zeros(0, bool)
    values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values), pa.string())
    if not len(values):
        return np.zeros(len(keys), bool)
    keys = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.binary())
    found = pc.is_in(keys, value_set=values.cast(pa.binary()))
    return found.to_numpy(zero_copy_only=False).astype(bool)


def stored_mask(out: str, table: str, keys: np.ndarray | pa.Array) -> np.ndarray:
    """Which `keys` (S64, or Arrow binary) have their artifact in the store now: a check per key when few,
    else one listing of each store folder they fall in (keys spread over 256 folders by their first two
    hex digits; an object store answers a listing with up to 1,000 names, so a million keys cost about
    1,000 requests, not a million)."""
    store, folder = storage(out), store_folder(table)
    keys = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.binary())
    if len(keys) <= FEW:
        return np.array([store.exists(store_relpath(table, k.decode())) for k in keys.to_pylist()], bool)
    suffix = store_relpath(table, "0" * 64).rsplit("0" * 64, 1)[1]
    listed = []  # one Arrow array per folder: never a Python string per artifact of the whole store
    for shard in pc.unique(pc.binary_slice(keys, 0, 2)).to_pylist():
        names = pa.array(store.names(f"{folder}/{shard.decode()}"), pa.string())
        listed.append(pc.utf8_slice_codeunits(names.filter(pc.ends_with(names, suffix)), 0, 64))
    return isin(keys, pa.chunked_array(listed, pa.string()).combine_chunks())


def stored(out: str, table: str, keys) -> set[str]:
    """The subset of `keys` (strings) whose artifact is in the store now (see stored_mask)."""
    keys = list(keys)
    array = np.array(keys, "S64")
    return {k for k, here in zip(keys, stored_mask(out, table, array)) if here}


def first_occurrence(keys: np.ndarray) -> np.ndarray:
    """bool mask: true at the first occurrence of each key (identical content under two ids is one key)."""
    arrow = pa.array(keys, pa.binary())
    index = pc.index_in(arrow, value_set=pc.unique(arrow)).to_numpy()
    first = np.zeros(len(keys), bool)
    first[np.unique(index, return_index=True)[1]] = True
    return first


def plan_run(manifest: Manifest, out: str, metrics_version: str | None = None) -> Plan:
    """Keys for every (model x inversion config x reference) and (... x transfer config x pair x seed).

    `metrics_version`: the current mtcore.metrics.METRICS_VERSION (given by the caller, so planning
    does not import the metrics' OpenCV); None skips looking for missing metrics.
    Transfer keys are made in bulk (mtcore.data.keys.TransferKeys) and held as columns; the catalogs' ok keys
    are read once, as Arrow arrays, and the store's folders listed once.
    """
    out = str(out)
    models = [PlannedModel(m.model or str(DEFAULT_MODEL), m.revision, model_identity(m.model or DEFAULT_MODEL, m.revision))
              for m in manifest.models]
    plan = Plan(str(manifest.path), manifest.sha256, models, metrics=manifest.metrics, retry=manifest.retry)
    ref_sha, tgt_sha = _hash_items(manifest.references), _hash_items(manifest.targets)
    targets = tuple(PlannedTarget(t.id, str(t.path), tgt_sha[t.id] if isinstance(tgt_sha[t.id], str) else "",
                                  f"{manifest.file_name}: targets[{t.index}].path") for t in manifest.targets)
    contents = [_content_or_path(tgt_sha[t.id], t) for t in manifest.targets]
    emb_ok = set(ok_key_array(out, "embeddings").to_pylist())

    planned: set[str] = set()  # identical content under two ids gives one key: do it once
    sets: list[TransferSet] = []
    for model in models:
        for inversion in manifest.inversions:
            jobs: list[InversionJob] = []
            for ref in manifest.references:
                sha = ref_sha[ref.id]
                digest = sha if isinstance(sha, str) else ""
                caption = _caption(model, ref)
                key = embedding_key(_content_or_path(sha, ref), model.model_id, inversion, caption=caption)
                job = InversionJob(key, ref.id, str(ref.path), digest, store_relpath("embeddings", key), inversion, model,
                                   f"{manifest.file_name}: references[{ref.index}].path", caption)
                jobs.append(job)
                if isinstance(sha, Exception):
                    plan.failed_inversions.append((job, f"{job.where}: {sha}"))
                elif key in emb_ok:
                    plan.inversions_cached.append(job)
                elif key not in planned:
                    plan.inversions_todo.append(job)
                planned.add(key)
            for transfer in manifest.transfers:
                bulk = TransferKeys(contents, manifest.seeds, transfer)
                for ref_index, target_indices in manifest.pairs.by_reference():
                    keys = np.array(bulk.keys(jobs[ref_index].key, target_indices), "S64")
                    n = len(keys)
                    sets.append(TransferSet(jobs[ref_index], transfer, targets,
                                            np.repeat(np.asarray(target_indices, np.int32), len(manifest.seeds)),
                                            np.tile(np.asarray(manifest.seeds, np.int64), len(target_indices)),
                                            keys, np.zeros(n, bool), np.zeros(n, bool)))
    _check_inversions(plan, out)
    measured = metric_key_array(out, metrics_version) if manifest.metrics and metrics_version else None
    duplicates = (len(set(contents)) < len(contents) or len(set(manifest.seeds)) < len(manifest.seeds)
                  or len({(s.embedding.key, s.config) for s in sets}) < len(sets))
    every = Transfers(sets)
    del sets
    _split_transfers(plan, every, out, np.array([isinstance(tgt_sha[t.id], Exception) for t in manifest.targets]),
                     tgt_sha, measured, duplicates)
    return plan


def _caption(model: PlannedModel, ref: Item) -> str | None:
    """The text a Wan embedding of `ref` starts from: its `caption` label (None: the empty prompt, and SVD)."""
    if family_of_identity(model.model_id) == SVD:
        return None
    value = dict(ref.labels).get(CAPTION_LABEL)
    return None if value is None else str(value)


def _check_inversions(plan: Plan, out: str) -> None:
    """Move inversions with an ok row whose artifact has gone from the store back to the to-do list."""
    here = stored(out, "embeddings", {j.key for j in plan.inversions_cached})
    todo = {j.key for j in plan.inversions_todo}
    for job in plan.inversions_cached:
        if job.key not in here and job.key not in todo:
            plan.inversions_todo.append(job)
            todo.add(job.key)
    plan.inversions_cached = [j for j in plan.inversions_cached if j.key in here]


def _split_transfers(plan: Plan, every: Transfers, out: str, unreadable: np.ndarray, tgt_sha: dict,
                     measured: pa.Array | None, duplicates: bool) -> None:
    """Each planned transfer (each key once) is cached (an ok row and its file in the store), failed (its
    target unreadable), or to do; a to-do one whose file is in the store without its row is marked
    `stored`, for the stage to record instead of remaking (a run killed between the two). `duplicates`:
    whether two sets may share keys (identical content under two ids), so that keys are deduplicated."""
    if duplicates:
        every, _ = every.split(first_occurrence(every.keys()))
    keys = every.keys()
    arrow = pa.array(keys, pa.binary())
    del keys
    here = stored_mask(out, "transfers", arrow)
    ok = isin(arrow, ok_key_array(out, "transfers"))
    measure = ~isin(arrow, measured) if measured is not None else np.zeros(len(arrow), bool)
    del arrow
    at = 0
    for part in every.parts:
        part.stored[:] = here[at:at + len(part)]
        part.measure[:] = measure[at:at + len(part)]
        at += len(part)
    bad = np.concatenate([unreadable[p.target] for p in every.parts]) if every.parts else np.zeros(0, bool)
    plan.transfers_cached, rest = every.split(ok & here)
    plan.metrics_todo, _ = plan.transfers_cached.split(measure[ok & here])
    failed, plan.transfers_todo = rest.split(bad[~(ok & here)] & ~ok[~(ok & here)])
    for job in failed:
        plan.failed_transfers.append((job, f"{job.where}: {tgt_sha[job.target_id]}"))
