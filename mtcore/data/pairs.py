"""Sampled pairs for dataset building: `pairs: {per_reference: K, seed: S}` in a manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from itertools import islice

from mtcore.errors import did_you_mean


def sample_targets(reference_id: str, target_ids: list[str], k: int, seed: int) -> list[str]:
    """The K targets drawn for a reference: those with the smallest sha256(seed, reference id, target id)
    (rendezvous hashing), in manifest order. Reproducible, and stable as entries are added: a new
    reference changes nothing for the others, and a new target enters a reference's draw only by
    displacing exactly one target, so every other pair, and its keys, stays."""
    def score(target_id: str) -> bytes:
        return hashlib.sha256(f"{seed}\0{reference_id}\0{target_id}".encode()).digest()

    chosen = set(sorted(target_ids, key=score)[:k])
    return [t for t in target_ids if t in chosen]


class Pairs(Sequence):
    """The (reference id, target id) pairs of a manifest, held per reference as the indices of its targets
    instead of a tuple per pair: `cross` over 100 references x 10,000 targets is one shared range, not a
    million tuples. Iterates in manifest order (per reference for `cross` and sampled pairs; as listed for
    an explicit list) and compares equal to the tuple of its pairs."""

    def __init__(self, reference_ids: Sequence[str], target_ids: Sequence[str], groups: Sequence[Sequence[int]],
                 listed: tuple[tuple[str, str], ...] | None = None):
        self.reference_ids, self.target_ids = tuple(reference_ids), tuple(target_ids)
        self.groups = tuple(groups)
        """Per reference (in manifest order), the indices of its targets."""
        self._listed = listed
        self._len = sum(map(len, self.groups))

    @classmethod
    def cross(cls, reference_ids: Sequence[str], target_ids: Sequence[str]) -> "Pairs":
        every = range(len(target_ids))
        return cls(reference_ids, target_ids, [every] * len(reference_ids))

    @classmethod
    def listed(cls, reference_ids: Sequence[str], target_ids: Sequence[str], pairs: Sequence[tuple[str, str]]) -> "Pairs":
        """An explicit list of pairs (ids known, no duplicates), kept in its own order."""
        ref_index = {r: i for i, r in enumerate(reference_ids)}
        target_index = {t: i for i, t in enumerate(target_ids)}
        groups: list[list[int]] = [[] for _ in reference_ids]
        for ref, target in pairs:
            groups[ref_index[ref]].append(target_index[target])
        return cls(reference_ids, target_ids, [tuple(g) for g in groups], tuple(pairs))

    def by_reference(self) -> Iterator[tuple[int, Sequence[int]]]:
        """(reference index, indices of its targets) for each reference with at least one target."""
        return ((i, g) for i, g in enumerate(self.groups) if len(g))

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[str, str]]:
        if self._listed is not None:
            return iter(self._listed)
        return ((self.reference_ids[i], self.target_ids[t]) for i, g in enumerate(self.groups) for t in g)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("pair index out of range")
        return next(islice(iter(self), index, None))

    def __eq__(self, other) -> bool:
        if isinstance(other, (Pairs, tuple, list)):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a list: compared by value, not hashable

    def __repr__(self) -> str:
        return f"Pairs({len(self)} pairs of {len(self.reference_ids)} references x {len(self.target_ids)} targets)"


def sampled_pairs(add, raw: dict, reference_ids: list[str], target_ids: list[str]) -> Pairs | tuple:
    """A manifest's `pairs: {per_reference: K, seed: S}`: K targets per reference (all when there are fewer),
    drawn by hash; problems go to `add(field, problem)` (the manifest reader's), and () is returned."""
    for key in raw:
        if key not in ("per_reference", "seed"):
            add("pairs", f"unknown key {key!r}" + did_you_mean(key, ("per_reference", "seed")))
    k, seed = raw.get("per_reference"), raw.get("seed", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        add("pairs.per_reference", f"must be a positive integer, got {k!r}")
        return ()
    if isinstance(seed, bool) or not isinstance(seed, int):
        add("pairs.seed", f"must be an integer, got {seed!r}")
        return ()
    index = {t: i for i, t in enumerate(target_ids)}
    return Pairs(list(reference_ids), list(target_ids),
                 [tuple(index[t] for t in sample_targets(r, target_ids, k, seed)) for r in reference_ids])



__all__ = ["sample_targets", "Pairs", "sampled_pairs"]
