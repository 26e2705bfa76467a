"""What a manifest says about its data beyond the media: labels, the dataset block, and retry.

- `labels: {key: value}` on a reference or target (an action class, a caption, a source, a license):
  strings, numbers or booleans, carried to the exported samples and their columns. Labels are in no
  cache key: editing one never recomputes anything.
- `dataset: {name, description, license}`: what the dataset card of an export says about it.
- `retry: {where: EXPR, max_seeds: N}`: a run samples further seeds for the pairs whose outputs
  fail EXPR (a DuckDB condition over the metric and label columns), until one passes or N are tried.

Each parser reports problems through `add(field, problem)` (the manifest reader's), one line each.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

MAX_LABELS = 64
MAX_KEY = 64
MAX_VALUE = 1000
"""Characters of a label's string value (a caption fits; a document does not belong in a label)."""
# A label becomes a column (reference_<key>, target_<key>) of exports and `--where` conditions.
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
RESERVED = ("id", "path", "sha256", "labels")
"""Keys that would clash with the columns reference_id, reference_path, reference_sha256 (and target_...)."""

Label = str | int | float | bool
Add = Callable[[str, str], None]


@dataclass(frozen=True)
class DatasetInfo:
    """The manifest's `dataset:` block, for the dataset card of an export."""

    name: str
    """The dataset's name (default: the manifest's name)."""
    description: str = ""
    """A paragraph for the card."""
    license: str = "other"
    """An SPDX id or a Hugging Face license tag ("cc-by-4.0", "apache-2.0", "other")."""


@dataclass(frozen=True)
class Retry:
    """`retry:`: more seeds for the pairs whose outputs fail `where`, up to `max_seeds` attempts."""

    where: str
    """A DuckDB SQL condition over the metric and label columns (as `mt export --where`)."""
    max_seeds: int
    """Attempts per pair at most, the first included: seeds S, S+1, ..., S+max_seeds-1 (S: `seeds: [S]`)."""

    def seeds(self, first: int) -> tuple[int, ...]:
        """The fixed sequence of seeds a pair may use."""
        return tuple(first + k for k in range(self.max_seeds))


def parse_labels(add: Add, where: str, raw: Any) -> tuple[tuple[str, Label], ...]:
    """`labels:` of one item as sorted (key, value) pairs; every problem reported through `add`."""
    if raw is None:
        return ()
    field = f"{where}.labels"
    if not isinstance(raw, dict):
        add(field, f"must be a mapping of names to strings, numbers or booleans, got {type(raw).__name__}")
        return ()
    if len(raw) > MAX_LABELS:
        add(field, f"at most {MAX_LABELS} labels, got {len(raw)}")
        return ()
    labels = []
    for key, value in raw.items():
        if not isinstance(key, str) or len(key) > MAX_KEY or not _KEY_RE.fullmatch(key):
            add(field, f"label name {key!r} must be lower-case letters, digits and '_', starting with a letter, "
                       f"at most {MAX_KEY} characters")
            continue
        if key in RESERVED:
            add(f"{field}.{key}", f"{key!r} is reserved (a column of its own); choose another name")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            add(f"{field}.{key}", f"must be a finite number, got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
            add(f"{field}.{key}", f"must fit in 64 bits, got {value}")
        elif isinstance(value, str) and len(value) > MAX_VALUE:
            add(f"{field}.{key}", f"too long: {len(value)} characters (at most {MAX_VALUE})")
        elif not isinstance(value, (str, int, float, bool)):
            add(f"{field}.{key}", f"must be a string, number or boolean, got {type(value).__name__} {value!r}"[:200])
        else:
            labels.append((key, value))
    return tuple(sorted(labels))


def parse_dataset(add: Add, raw: Any, default_name: str) -> DatasetInfo | None:
    """The `dataset:` block (absent: None)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        add("dataset", f"must be a mapping with name, description, license, got {raw!r}"[:200])
        return None
    values = {}
    for key, value in raw.items():
        if key not in ("name", "description", "license"):
            add("dataset", f"unknown key {key!r} (dataset takes name, description, license)")
        elif not isinstance(value, str) or not value.strip():
            add(f"dataset.{key}", f"must be a non-empty string, got {value!r}"[:200])
        else:
            values[key] = value
    return DatasetInfo(**{"name": default_name, **values})


def parse_retry(add: Add, raw: Any, seeds: tuple[int, ...], max_seed: int) -> Retry | None:
    """The `retry:` block (absent: None). It takes one first seed: attempt k of a pair uses seeds[0] + k."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        add("retry", f"must be a mapping {{where: CONDITION, max_seeds: N}}, got {raw!r}"[:200])
        return None
    for key in raw:
        if key not in ("where", "max_seeds"):
            add("retry", f"unknown key {key!r} (retry takes where, max_seeds)")
    where, count = raw.get("where"), raw.get("max_seeds")
    ok = True
    if not isinstance(where, str) or not where.strip():
        add("retry.where", f"must be a condition such as 'motion_fidelity >= 0.6', got {where!r}")
        ok = False
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 64:
        add("retry.max_seeds", f"must be an integer from 1 to 64, got {count!r}")
        ok = False
    if len(seeds) > 1:
        add("retry", f"takes one first seed (seeds: [S]; attempt k uses seed S + k), got seeds {list(seeds)}")
        ok = False
    if ok and seeds and seeds[0] + count > max_seed:
        add("retry.max_seeds", f"seeds {seeds[0]} + {count} pass 2**63")
        ok = False
    return Retry(where, count) if ok else None


__all__ = ["DatasetInfo", "Retry", "Label", "parse_labels", "parse_dataset", "parse_retry", "RESERVED"]
