"""Held-out evaluation of motion transfer on the toy world.

A pair = a reference clip (motion, sprite, background) and a target image with another sprite,
background and position (frame 0 of the target sprite moving by the reference's motion, which
also gives the target's ground truth). Methods, all on the same pairs and seeds:
- `mti`: motion-textual inversion on the reference (InversionConfig as given), then transfer;
- `stock`: the model's usual conditioning for the target (its CLIP embedding; zero for the toy);
- `random`: a random embedding of the MTI shape, at the scale of the true motion tokens;
- `ceiling`: the true motion tokens of the reference fed directly (what the model can do at best).
Measured per pair: trajectory cosine and speed ratio of the target sprite's tracked motion against
the reference's displacements (0 and 0 when the sprite's colour is not found in the output, so a
method that loses the sprite is penalised, not skipped), motion fidelity of the output against the
reference clip (mtcore.metrics, no ground truth needed), and PSNR of the first output frame
against the target image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mtcore.config import InversionConfig, TransferConfig
from mtcore.embedding import MotionEmbedding
from mtcore.frames import uint8_to_signed, unit_to_uint8
from mtcore.inversion import invert
from mtcore.metrics.motion import motion_fidelity
from mtcore.models import SVDModel
from mtcore.sampling import transfer
from mtcore.sheet import save_contact_sheet
from mtcore.toy.render import render
from mtcore.toy.sampling import sample_appearance, sample_clip, sample_start
from mtcore.toy.tokens import motion_tokens
from mtcore.toy.tracking import track_sprite, trajectory_metrics
from mtcore.toy.world import MOTION_KINDS, Clip, WorldConfig

METHODS = ("mti", "stock", "random", "ceiling")


@dataclass(frozen=True)
class Pair:
    index: int
    reference: Clip
    target: Clip
    """The target sprite moving by the reference's motion: frame 0 is the target image."""


def make_pairs(n: int, seed: int, cfg: WorldConfig) -> list[Pair]:
    """n held-out pairs, motion kinds in turn so every kind is covered."""
    pairs = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7919, i])  # 7919: apart from training's (seed, step) streams
        ref = sample_clip(rng, cfg, kind=MOTION_KINDS[i % len(MOTION_KINDS)])
        target = render(sample_appearance(rng, cfg), ref.motion, sample_start(rng, cfg), cfg)
        pairs.append(Pair(i, ref, target))
    return pairs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def evaluate(
    model: SVDModel,
    n_pairs: int = 40,
    seed: int = 0,
    inversion: InversionConfig = InversionConfig(),
    transfer_cfg: TransferConfig = TransferConfig(),
    methods: tuple[str, ...] = METHODS,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """Per (pair, method) rows, and the output videos per method (for contact sheets)."""
    size, frames = model.default_size[0], model.default_num_frames
    cfg = WorldConfig(size=size, frames=frames)
    pairs = make_pairs(n_pairs, seed, cfg)
    rows, videos = [], {method: [] for method in methods}
    for k, pair in enumerate(pairs):
        ref = uint8_to_signed(pair.reference.frames)
        target_img = Image.fromarray(pair.target.frames[0])
        true = torch.from_numpy(motion_tokens(pair.reference.displacements, pair.reference.kind_index,
                                              model.token_dim, size))[:, None]  # (F+1, 1, D)
        for method in methods:
            t0 = time.perf_counter()
            if method == "mti":
                emb, _ = invert(model, ref, inversion, reference_sha256=f"toy-pair-{seed}-{k}")
            elif method == "stock":
                emb = None
            elif method == "random":
                g = torch.Generator().manual_seed(seed * 100_003 + k)
                shape = (frames + 1, inversion.tokens_per_frame, model.token_dim)
                emb = MotionEmbedding(tokens=torch.randn(shape, generator=g) * true[:-1].std())
            else:
                emb = MotionEmbedding(tokens=true)
            video = unit_to_uint8(transfer(model, [target_img], emb, transfer_cfg, seeds=[seed + k])[0])
            track = track_sprite(video, np.array(pair.target.appearance.colours))
            agreement = trajectory_metrics(track, pair.reference.displacements)
            if not np.isfinite(agreement["cosine"]):  # the sprite was not found: no agreement, not a skipped pair
                agreement["cosine"], agreement["speed_ratio"] = 0.0, 0.0
            rows.append({
                "pair": k, "method": method, "motion": pair.reference.motion.kind,
                "cosine": agreement["cosine"], "speed_ratio": agreement["speed_ratio"],
                "tracked_steps": agreement["steps"],
                "motion_fidelity": motion_fidelity(video, pair.reference.frames).score,
                "first_frame_psnr": psnr(video[0], pair.target.frames[0]),
                "seconds": time.perf_counter() - t0,
            })
            videos[method].append(video)
        if progress is not None:
            progress(k + 1, len(pairs), pair.reference.motion.kind)
    return pd.DataFrame(rows), videos


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of each metric per method, overall and per motion type."""
    metrics = ["cosine", "motion_fidelity", "speed_ratio", "first_frame_psnr"]
    overall = df.groupby("method")[metrics].agg(["mean", "std"]).assign(motion="all")
    per_kind = df.groupby(["method", "motion"])[metrics].agg(["mean", "std"]).reset_index(level="motion")
    out = pd.concat([overall, per_kind]).reset_index()
    out.columns = ["_".join(c).strip("_") if isinstance(c, tuple) else c for c in out.columns]
    return out.sort_values(["method", "motion"]).reset_index(drop=True)


def write_results(df: pd.DataFrame, videos: dict[str, list[np.ndarray]], out: str | Path, model_id: str,
                  seed: int) -> tuple[pd.DataFrame, list[Path]]:
    """OUT/pairs.parquet (one row per pair and method), OUT/summary.parquet (`summarise`) and one
    contact sheet PNG per method (its first 10 outputs); returns the summary and the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.assign(model_id=model_id, seed=seed).to_parquet(out / "pairs.parquet")
    table = summarise(df)
    table.to_parquet(out / "summary.parquet")
    written = [out / "pairs.parquet", out / "summary.parquet"]
    for method, method_videos in videos.items():
        written.append(save_contact_sheet(method_videos[:10], out / f"sheet_{method}.png"))
    return table, written
