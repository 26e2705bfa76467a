"""Content-addressed cache keys: pure functions of input bytes, model identity, config and code version.

The same key means the same artifact, so a re-run (or another worker) finds it in the store.
A key is the sha256 of a canonical JSON document that names every input that changes the artifact.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Sequence

from mtcore import CODE_VERSION
from mtcore.method.config import InversionConfig, TransferConfig, config_to_dict

def _digest(doc: dict[str, Any]) -> str:
    # sort_keys + fixed separators make the JSON canonical; allow_nan=False refuses NaN/inf,
    # which would hash but have no JSON meaning.
    text = _canonical(doc)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _require(value: Any, cls: type, name: str) -> None:
    # A TransferConfig passed where an InversionConfig belongs would still hash: refuse it.
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


def embedding_key(
    reference_sha256: str,
    model_id: str,
    inversion_config: InversionConfig,
    code_version: str = CODE_VERSION,
    caption: str | None = None,
) -> str:
    """Key of the motion embedding inverted from one reference video.

    `model_id` is the model identity ("hub:<id>@<rev>" or "local:<sha256>", see mtcore.method.models).
    The inversion config includes its `seed`, so another seed is another embedding. `caption`: the text a
    Wan embedding starts from (the reference's `caption` label); in the document only when given, so the
    keys of every embedding without one (all of SVD's) are unchanged.
    """
    _require(inversion_config, InversionConfig, "inversion_config")
    return _digest(
        {
            "kind": "embedding",
            "reference_sha256": reference_sha256,
            "model_id": model_id,
            "inversion": config_to_dict(inversion_config),
            "code_version": code_version,
            **({"caption": caption} if caption is not None else {}),
        }
    )


def transfer_key(
    embedding_key: str,
    target_sha256: str,
    transfer_config: TransferConfig,
    seed: int,
    code_version: str = CODE_VERSION,
) -> str:
    """Key of the video sampled for one target image with one motion embedding and one seed.

    The model identity is not repeated: it is already inside `embedding_key`.
    """
    _require(transfer_config, TransferConfig, "transfer_config")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return _digest(
        {
            "kind": "transfer",
            "embedding_key": embedding_key,
            "target_sha256": target_sha256,
            "transfer": config_to_dict(transfer_config),
            "seed": seed,
            "code_version": code_version,
        }
    )


class TransferKeys:
    """`transfer_key` for many (target, seed) pairs of one transfer config at once: a million keys in about
    a second instead of a minute.

    The canonical JSON of a transfer key is a prefix that depends on the embedding, then a suffix that
    depends on the target and seed; each suffix is built once, and each embedding's prefix is hashed
    once and its hash state copied for every suffix. The keys are byte-identical to `transfer_key`'s.
    """

    def __init__(self, target_sha256s: Sequence[str], seeds: Sequence[int], transfer_config: TransferConfig,
                 code_version: str = CODE_VERSION):
        _require(transfer_config, TransferConfig, "transfer_config")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        config = _canonical(config_to_dict(transfer_config))
        self.seeds = tuple(seeds)
        # the keys of the document, sorted: code_version, embedding_key, kind, seed, target_sha256, transfer
        self._head = '{"code_version":' + _canonical(code_version) + ',"embedding_key":'
        self._suffixes = [[f"{seed},\"target_sha256\":{_canonical(sha)},\"transfer\":{config}}}".encode("ascii")
                           for seed in self.seeds] for sha in target_sha256s]

    def keys(self, embedding_key: str, targets: Iterable[int]) -> list[str]:
        """The keys of `embedding_key` x each target index (into `target_sha256s`) x each seed, seeds inner."""
        state = hashlib.sha256((self._head + _canonical(embedding_key) + ',"kind":"transfer","seed":').encode("ascii"))
        out = []
        for t in targets:
            for suffix in self._suffixes[t]:
                h = state.copy()
                h.update(suffix)
                out.append(h.hexdigest())
        return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


__all__ = ["embedding_key", "transfer_key", "TransferKeys"]
