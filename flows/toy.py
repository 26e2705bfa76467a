"""Prefect flow that (re)trains the toy image-to-video model in resumable chunks.

Each `train-chunk` task trains for up to `chunk_minutes` and checkpoints; a crash or Ctrl-C loses
at most one chunk's unsaved steps, and running the flow again resumes from the last checkpoint.
`export` writes the EMA weights as a StableVideoDiffusionPipeline folder; `plot` the loss curve.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from mtcore.toy.train import ToyTrainConfig, Trainer, plot_history, seconds_per_step

# Set by the CLI to drive its progress bar: (step, loss, eval or None, seconds left).
PROGRESS: Callable[[int, float, dict | None, float], None] | None = None


@task(name="train-chunk", cache_policy=NONE)
def train_chunk(trainer: Trainer, seconds: float, max_steps: int | None, deadline: float) -> int:
    log = get_run_logger()

    def report(step: int, loss: float, ev: dict | None) -> None:
        if ev is not None:
            log.info("step %d: loss %.4f; held-out loss true/null at sigma 2: %.4f/%.4f, sigma 10: %.4f/%.4f",
                     step, loss, ev["true@2"], ev["null@2"], ev["true@10"], ev["null@10"])
        if PROGRESS is not None:
            PROGRESS(step, loss, ev, deadline - time.monotonic())

    trainer.train_for(seconds, max_steps=max_steps, progress=report)
    log.info("checkpoint at step %d (%.2f s/step)", trainer.step, seconds_per_step(trainer.history))
    return trainer.step


@task(name="export", cache_policy=NONE, retries=1)
def export(trainer: Trainer, folder: str) -> str:
    return str(trainer.export(folder))


@task(name="plot", cache_policy=NONE)
def plot(trainer: Trainer, path: str) -> str:
    return str(plot_history(trainer.history, path))


@flow(name="toy-train")
def toy_train(workdir: str, minutes: float = 60.0, max_steps: int | None = None, seed: int = 0,
              export_to: str | None = None, chunk_minutes: float = 5.0) -> dict:
    """Train (or resume) the toy model in `workdir` for `minutes`; export and plot at the end."""
    deadline = time.monotonic() + 60 * minutes
    trainer = Trainer(ToyTrainConfig(seed=seed), workdir)
    start = trainer.step
    while time.monotonic() < deadline and (max_steps is None or trainer.step < max_steps):
        train_chunk(trainer, min(60 * chunk_minutes, deadline - time.monotonic()), max_steps, deadline)
    curve = plot(trainer, str(Path(workdir) / "loss_curve.png"))
    folder = export(trainer, export_to or str(Path(workdir) / "model"))
    return {"steps_this_run": trainer.step - start, "step": trainer.step, "model": folder, "loss_curve": curve,
            "seconds_per_step": seconds_per_step(trainer.history)}
