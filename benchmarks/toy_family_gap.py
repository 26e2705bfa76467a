"""Held-out loss gap of a toy-model checkpoint per content family: 1 - loss(true motion) / loss(null)
at sigma 2, 5 and 10, on 24 held-out scenes of each family (held-out photos), EMA weights.

Tells whether the model uses its motion input on each family at all (the training curve's gap mixes
the families). Run: .venv/bin/python benchmarks/toy_family_gap.py [CHECKPOINT_DIR]
(default checkpoints/toy32; the folder must hold a `mt toy train` checkpoint of the default recipe).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from mtcore.toy.scenes import FAMILIES
from mtcore.toy.train import ToyTrainConfig, Trainer, relative_gap, scene_batch


def main(folder: str = "checkpoints/toy32") -> None:
    cfg = ToyTrainConfig(seed=0)
    trainer = Trainer(cfg, folder)
    for i, family in enumerate(FAMILIES):
        only = dataclasses.replace(cfg, family_weights=tuple(float(j == i) for j in range(len(FAMILIES))))
        frames, tokens, _ = scene_batch(only, np.random.default_rng([0, 10**9, i]), 24, True)
        gap = trainer.loss_gap((2.0, 5.0, 10.0), frames, tokens)
        print(f"{family:13s} step {trainer.step}: " + "  ".join(
            f"sigma {s}: {relative_gap(gap, s):.3f}" for s in ("2", "5", "10")), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
