"""Sampled pairs for dataset building: `pairs: {per_reference: K, seed: S}` in a manifest."""

from __future__ import annotations

import hashlib


def sample_targets(reference_id: str, target_ids: list[str], k: int, seed: int) -> list[str]:
    """The K targets drawn for a reference: those with the smallest sha256(seed, reference id, target id)
    (rendezvous hashing), in manifest order. Reproducible, and stable as entries are added: a new
    reference changes nothing for the others, and a new target enters a reference's draw only by
    displacing exactly one target, so every other pair, and its keys, stays."""
    def score(target_id: str) -> bytes:
        return hashlib.sha256(f"{seed}\0{reference_id}\0{target_id}".encode()).digest()

    chosen = set(sorted(target_ids, key=score)[:k])
    return [t for t in target_ids if t in chosen]


__all__ = ["sample_targets"]
