"""The YAML manifest of a bulk run: reference videos, target images, pairs, seeds and configs.

Structural problems (bad YAML, unknown keys, wrong types, duplicate or unknown ids, paths
escaping the manifest folder) refuse the whole manifest, all reported at once. Problems of
single items (missing or unreadable media) are found by `mtcore.data.media.check_media`, so a run can skip them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mtcore.method.config import InversionConfig, TransferConfig, parse_config
from mtcore.errors import InputError, ProblemsError, did_you_mean
from mtcore.method.identity import local_candidate, locate_model
from mtcore.data.labels import DatasetInfo, Label, Retry, parse_dataset, parse_labels, parse_retry
from mtcore.data.pairs import Pairs, sampled_pairs
from mtcore.io.storage import inside, is_url, normalize, parent, read_input, resolve
from mtcore.io.yamlio import parse_yaml

# Ids end up in file names and log lines: no leading dot or dash, no separators.
_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TOP_KEYS = ("name", "model", "models", "revision", "allow_outside", "references", "targets", "pairs", "seeds",
             "inversion", "transfer", "metrics", "dataset", "retry")
_MAX_SEED = 2**63  # seeds are int64 in the transfers catalog


@dataclass(frozen=True)
class Item:
    """One reference video or target image of the manifest."""

    id: str
    """Unique within its list; [A-Za-z0-9_.-], not starting with '.' or '-'."""
    path: Path | str
    """Absolute and normalised (a Path), or a URL (a str: mtcore.io.storage); relative paths are resolved
    against the manifest's folder, which may itself be a URL."""
    index: int
    """Position in its list (references or targets) in the manifest."""
    labels: tuple[tuple[str, Label], ...] = ()
    """`labels:` as sorted (name, value) pairs (mtcore.data.labels); in no cache key."""


@dataclass(frozen=True)
class ModelRef:
    """One model of the manifest."""

    model: str | None
    """Absolute folder (local model) or hub id; None = the caller's default model."""
    is_local: bool
    """True when `model` is a local folder."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); None for local models or the default branch."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; `pairs` are expanded, every path absolute.

    A sweep lists several models (`models:`) and/or several inversion or transfer configs (a list
    under `inversion:` / `transfer:`): every combination is planned under its own keys.
    """

    path: Path | str
    """The manifest file, absolute (a Path), or its URL (a str)."""
    name: str
    """`name:` or the file stem."""
    models: tuple[ModelRef, ...]
    """The models, in manifest order (one: `model:` or the default)."""
    references: tuple[Item, ...]
    """Reference videos, in manifest order."""
    targets: tuple[Item, ...]
    """Target images, in manifest order."""
    pairs: Pairs
    """(reference id, target id) in manifest order, held per reference (mtcore.data.pairs.Pairs); `cross` =
    every reference x every target; `{per_reference: K, seed: S}` = K targets per reference drawn by
    hash (`sample_targets`)."""
    seeds: tuple[int, ...]
    """One transfer per pair per seed."""
    inversions: tuple[InversionConfig, ...]
    """How references are inverted: one config, or several for a sweep."""
    transfers: tuple[TransferConfig, ...]
    """How transfers are sampled: one config, or several for a sweep."""
    allow_outside: bool
    """Whether media paths may escape the manifest folder."""
    sha256: str
    """sha256 of the manifest file's bytes."""
    metrics: bool = True
    """Whether `mt run` measures every new transfer (catalog/metrics)."""
    dataset: DatasetInfo | None = None
    """`dataset: {name, description, license}`, for the card of `mt export`."""
    retry: Retry | None = None
    """`retry: {where, max_seeds}`: more seeds for the pairs whose outputs fail `where`."""

    @property
    def file_name(self) -> str:
        """The manifest's file name ("demo.yaml"), as errors name it."""
        return PurePosixPath(str(self.path)).name

    # The single-model, single-config view (the first of each list).
    @property
    def model(self) -> str | None:
        return self.models[0].model

    @property
    def model_is_local(self) -> bool:
        return self.models[0].is_local

    @property
    def revision(self) -> str | None:
        return self.models[0].revision

    @property
    def inversion(self) -> InversionConfig:
        return self.inversions[0]

    @property
    def transfer(self) -> TransferConfig:
        return self.transfers[0]


class ManifestError(ProblemsError):
    """A structurally invalid manifest; `problems` holds every problem found, one line each."""


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest; ManifestError lists every structural problem."""
    label = str(path)
    remote = is_url(path)
    file: Path | str = normalize(path) if remote else Path(os.path.abspath(path))
    try:
        data = read_input(file)
    except InputError as exc:
        raise ManifestError(label, [f"{label}: {exc.problem}"]) from None
    doc = parse_yaml(label, data, ManifestError)
    reader = _Reader(label, parent(file) if remote else file.parent)
    manifest = reader.read(doc, file, hashlib.sha256(data).hexdigest())
    if reader.problems or manifest is None:
        raise ManifestError(label, reader.problems)
    return manifest

class _Reader:
    """Walks a parsed manifest, collecting every problem instead of stopping at the first."""

    def __init__(self, label: str, folder: Path | str):
        self.label = label
        self.remote = is_url(folder)
        self.folder = folder if self.remote else Path(os.path.normpath(folder))
        self.problems: list[str] = []
        self.allow_outside = False

    def add(self, field: str, problem: str) -> None:
        self.problems.append(f"{self.label}: {field}: {problem}" if field else f"{self.label}: {problem}")

    def read(self, doc: Any, file: Path, sha256: str) -> Manifest | None:
        if not isinstance(doc, dict):
            self.add("", "must be a mapping with at least references and targets")
            return None
        for key in doc:
            if key not in _TOP_KEYS:
                self.add(str(key), "unknown key" + did_you_mean(key, _TOP_KEYS))
        name = self.string("name", doc.get("name", PurePosixPath(str(file)).stem))
        self.allow_outside = doc.get("allow_outside", False)
        if not isinstance(self.allow_outside, bool):
            self.add("allow_outside", f"must be true or false, got {self.allow_outside!r}")
        models = self.models(doc)
        references, ref_ids = self.items(doc, "references")
        targets, target_ids = self.items(doc, "targets")
        pairs = self.pairs(doc.get("pairs", "cross"), references, targets, ref_ids, target_ids)
        seeds = self.seeds(doc.get("seeds", [0]))
        inversions = self.configs(doc, "inversion", InversionConfig)
        transfers = self.configs(doc, "transfer", TransferConfig)
        metrics = doc.get("metrics", True)
        if not isinstance(metrics, bool):
            self.add("metrics", f"must be true or false, got {metrics!r}")
        dataset = parse_dataset(self.add, doc.get("dataset"), name)
        retry = parse_retry(self.add, doc.get("retry"), seeds, _MAX_SEED)
        if retry is not None and metrics is False:
            self.add("retry", "needs metrics: true (a pair's next seed depends on its outputs' metrics)")
        if self.problems:
            return None
        return Manifest(file, name, models, references, targets, pairs, seeds, inversions, transfers,
                        self.allow_outside, sha256, metrics, dataset, retry)

    def string(self, field: str, value: Any, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(field, f"must be a non-empty string, got {value!r}")
            return None
        return value

    def models(self, doc: dict) -> tuple[ModelRef, ...]:
        """`model:` (+ `revision:`) or `models:`, a list of folders / hub ids or {model, revision}."""
        if "models" not in doc:
            model, is_local = self.model("model", doc.get("model"))
            revision = self.string("revision", doc.get("revision"), optional=True)
            if is_local and revision is not None:
                self.add("revision", "only applies to a hub model; model is a local folder")
            return (ModelRef(model, is_local, revision),)
        if "model" in doc or "revision" in doc:
            self.add("models", "give either model (+ revision) or models, not both")
        raw = doc["models"]
        if not isinstance(raw, list) or not raw:
            self.add("models", f"must be a non-empty list of folders, hub ids or {{model, revision}}, got {raw!r}")
            return ()
        refs, seen = [], {}
        for i, entry in enumerate(raw):
            where = f"models[{i}]"
            value, revision = entry, None
            if isinstance(entry, dict):
                if not self.entry(where, entry, ("model", "revision")):
                    continue
                value = entry.get("model")
                revision = self.string(f"{where}.revision", entry.get("revision"), optional=True)
            model, is_local = self.model(where, value)
            if is_local and revision is not None:
                self.add(f"{where}.revision", "only applies to a hub model; model is a local folder")
            ref = ModelRef(model, is_local, revision)
            if ref in seen:
                self.add(where, f"duplicate model {value!r} (also {seen[ref]})")
                continue
            seen[ref] = where
            refs.append(ref)
        return tuple(refs)

    def model(self, field: str, value: Any) -> tuple[str | None, bool]:
        if value is None and field == "model":
            return None, False
        if self.string(field, value) is None:
            return None, False
        if self.remote and local_candidate(value, "/") is not None and not os.path.isabs(os.path.expanduser(value)):
            self.add(field, f"{value!r}: a manifest in object storage names a model by hub id or absolute folder")
            return value, False
        try:
            return locate_model(value, self.folder)
        except InputError as exc:
            self.add(field, str(exc))
            return value, local_candidate(value, self.folder) is not None

    def items(self, doc: dict, kind: str) -> tuple[tuple[Item, ...], set[str]]:
        raw = doc.get(kind)
        if not isinstance(raw, list) or not raw:
            self.add(kind, "missing" if kind not in doc else "must be a non-empty list of {id, path}")
            return (), set()
        items, seen = [], {}
        for i, entry in enumerate(raw):
            where = f"{kind}[{i}]"
            if not self.entry(where, entry, ("id", "path", "labels")):
                continue
            item_id = self.item_id(where, entry, seen)
            path = self.item_path(where, entry)
            labels = parse_labels(self.add, where, entry.get("labels"))
            if item_id is not None and path is not None:
                items.append(Item(item_id, path, i, labels))
        return tuple(items), set(seen)

    def entry(self, where: str, entry: Any, keys: tuple[str, ...]) -> bool:
        """False if `entry` is not a mapping; unknown keys are reported but the rest is still read."""
        if not isinstance(entry, dict):
            self.add(where, f"must be a mapping with {' and '.join(keys)}, got {entry!r}")
            return False
        for key in entry:
            if key not in keys:
                self.add(where, f"unknown key {key!r}" + did_you_mean(key, keys))
        return True

    def item_id(self, where: str, entry: dict, seen: dict[str, str]) -> str | None:
        if "id" not in entry:
            self.add(f"{where}.id", "missing")
            return None
        value = entry["id"]
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            self.add(f"{where}.id", f"must be a string of letters, digits, '_', '.', '-' "
                                    f"(not starting with '.' or '-'), got {value!r}")
            return None
        if value in seen:
            self.add(f"{where}.id", f"duplicate id {value!r} (also {seen[value]})")
            return None
        seen[value] = where
        return value

    def item_path(self, where: str, entry: dict) -> Path | str | None:
        if "path" not in entry:
            self.add(f"{where}.path", "missing")
            return None
        value = self.string(f"{where}.path", entry["path"])
        if value is None:
            return None
        # The lexical path must stay inside the folder ('..', absolute paths and other URLs escape it),
        # and so must the file it names once symlinks are followed (a link inside pointing out escapes too).
        location = resolve(value, str(self.folder))
        if is_url(location) or self.remote:
            if self.allow_outside is not True and not inside(location, str(self.folder)):
                self.add(f"{where}.path", f"{value!r} is outside the manifest folder (set allow_outside: true to allow)")
                return None
            return location if is_url(location) else Path(location)
        path = Path(location)
        if self.allow_outside is not True:
            if not inside(str(path), str(self.folder)):
                self.add(f"{where}.path", f"{value!r} is outside the manifest folder (set allow_outside: true to allow)")
                return None
            real = Path(os.path.realpath(path))
            if not inside(str(real), os.path.realpath(self.folder)):
                self.add(f"{where}.path", f"{value!r} is a link to {real}, outside the manifest folder "
                                          "(set allow_outside: true to allow)")
                return None
        return path

    def pairs(self, raw: Any, references: tuple[Item, ...], targets: tuple[Item, ...],
              ref_ids: set[str], target_ids: set[str]) -> Pairs:
        ids = [r.id for r in references], [t.id for t in targets]
        if raw == "cross":
            return Pairs.cross(*ids)
        if isinstance(raw, dict):
            return sampled_pairs(self.add, raw, ids[0], ids[1])
        if not isinstance(raw, list) or not raw:
            self.add("pairs", f"must be 'cross', {{per_reference: K, seed: S}} or a non-empty list of "
                              f"{{reference, target}}, got {raw!r}")
            return Pairs(*ids, [])
        pairs, seen = [], {}
        for i, entry in enumerate(raw):
            where = f"pairs[{i}]"
            if not self.entry(where, entry, ("reference", "target")):
                continue
            ref = self.pair_id(where, entry, "reference", ref_ids)
            target = self.pair_id(where, entry, "target", target_ids)
            if ref is None or target is None:
                continue
            if (ref, target) in seen:
                self.add(where, f"duplicate pair {ref!r} x {target!r} (also {seen[ref, target]})")
                continue
            seen[ref, target] = where
            pairs.append((ref, target))
        return Pairs.listed(*ids, pairs)

    def pair_id(self, where: str, entry: dict, field: str, known: set[str]) -> str | None:
        if field not in entry:
            self.add(f"{where}.{field}", "missing")
            return None
        value = entry[field]
        if not isinstance(value, str) or value not in known:
            self.add(f"{where}.{field}", f"unknown {field} id {value!r}" + did_you_mean(value, known))
            return None
        return value

    def seeds(self, raw: Any) -> tuple[int, ...]:
        if not isinstance(raw, list) or not raw:
            self.add("seeds", f"must be a non-empty list of integers, got {raw!r}")
            return ()
        seeds, seen = [], {}
        for i, seed in enumerate(raw):
            if isinstance(seed, bool) or not isinstance(seed, int):
                self.add(f"seeds[{i}]", f"must be an integer, got {seed!r}")
            elif not 0 <= seed < _MAX_SEED:
                self.add(f"seeds[{i}]", f"must be in [0, 2**63), got {seed}")
            elif seed in seen:
                self.add(f"seeds[{i}]", f"duplicate seed {seed} (also seeds[{seen[seed]}])")
            else:
                seen[seed] = i
                seeds.append(seed)
        return tuple(seeds)

    def configs(self, doc: dict, name: str, cls: type) -> tuple:
        """One config (a mapping, or absent: the defaults) or a sweep of several (a list of mappings)."""
        raw = doc.get(name)
        if not isinstance(raw, list):
            config, problems = parse_config(cls, raw, f"{self.label}: {name}")
            self.problems += problems
            return (config,)
        if not raw:
            self.add(name, f"must be a mapping of {cls.__name__} fields or a non-empty list of them")
            return ()
        configs, seen = [], {}
        for i, entry in enumerate(raw):
            config, problems = parse_config(cls, entry, f"{self.label}: {name}[{i}]")
            self.problems += problems
            if config is None:
                continue
            if config in seen:
                self.add(f"{name}[{i}]", f"the same config as {name}[{seen[config]}]")
                continue
            seen[config] = i
            configs.append(config)
        return tuple(configs)


__all__ = ["Item", "Manifest", "ManifestError", "load_manifest"]
