"""Seconds per training step of the toy model at latent factors 4 and 2, side by side in one run.

The data of each step is made beforehand (the full-mix world at step 3000), so the figure is the
UNet's forward and backward pass, AdamW and the EMA update; factor 4 runs first and last to show the
spread. Run: .venv/bin/python benchmarks/bench_toy_step.py
"""

from __future__ import annotations

import tempfile
import time

from mtcore.toy.train import ToyTrainConfig, Trainer

STEPS = 5


def main() -> None:
    for factor in (4, 2, 4):
        cfg = ToyTrainConfig(factor=factor, curriculum_steps=0)
        trainer = Trainer(cfg, tempfile.mkdtemp())
        batches = [trainer.batch_for(s) for s in range(3000, 3001 + STEPS)]
        trainer.train_step(batches[0])  # warm-up
        t0 = time.perf_counter()
        for batch in batches[1:]:
            trainer.train_step(batch)
        params = sum(p.numel() for p in trainer.unet.parameters())
        print(f"factor {factor}: {(time.perf_counter() - t0) / STEPS:.2f} s/step (data excluded), "
              f"{params / 1e6:.2f} M parameters", flush=True)


if __name__ == "__main__":
    main()
