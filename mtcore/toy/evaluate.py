"""Held-out evaluation of motion transfer with the built-in toy model, per content family and motion kind.

A pair = a reference scene and a target scene of the same family with new content (appearance,
background, start, photo: mtcore.toy.scenes with held-out photos) moving exactly as the reference
does, so the target's ground truth is the reference's motion; the target image is its frame 0.
Methods, all on the same pairs and seeds:
- `mti`: motion-textual inversion on the reference (InversionConfig as given), then transfer;
- `stock`: the model's usual conditioning for the target (its CLIP embedding; zero for the toy);
- `random`: a random embedding of the MTI shape, at the scale of the true motion tokens;
- `ceiling`: the true motion tokens of the reference fed directly (what the model can do at best).
Measured per pair: `cosine` and `speed_ratio` of the output's motion against the true one: for a
sprite, its track by masked template matching; for a camera pan, whole-frame shifts by phase
correlation; for a zoom, the per-step log scale of the dense flow (a target whose own true clip these
trackers cannot follow to cosine >= 0.9 is redrawn, so the score is the model's, not the tracker's);
`motion_fidelity` of the output against the reference (mtcore.metrics, no ground truth needed);
`first_frame_psnr` of the first output frame against the target image.

A model trained on the original 16-px world (no `toy_world.json` in its folder) is evaluated on that
world only, with the motion tokens it was trained on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mtcore.method.config import InversionConfig, TransferConfig
from mtcore.method.embedding import MotionEmbedding
from mtcore.io.frames import uint8_to_signed, unit_to_uint8
from mtcore.method.inversion import invert_batch
from mtcore.metrics.appearance import psnr
from mtcore.metrics.motion import motion_fidelity
from mtcore.method.models import SVDModel
from mtcore.method.sampling import transfer
from mtcore.eval.sheet import save_contact_sheet
from mtcore.toy import photos
from mtcore.toy.scenes import CAMERA_KINDS, FAMILIES, SPRITE_KINDS, Scene, SceneConfig, sample_scene
from mtcore.toy.tokens import motion_tokens, scene_tokens
from mtcore.toy.tracking import camera_motion, track_template, trajectory_metrics
from mtcore.toy.world import MOTION_KINDS

METHODS = ("mti", "stock", "random", "ceiling")
KINDS = {"toy": MOTION_KINDS, "photo_sprite": SPRITE_KINDS, "camera": CAMERA_KINDS}
WORLD_FILE = "toy_world.json"  # written by the trainer into the exported model folder


@dataclass(frozen=True)
class Pair:
    index: int
    reference: Scene
    target: Scene
    """New content moving as the reference: frame 0 is the target image, its motion the ground truth."""


def world_of(model: SVDModel) -> dict:
    """What the model was trained on: {"families", "tokens"}, from its folder's toy_world.json (the
    original 16-px model has none: the toy family and its own tokens)."""
    folder = Path(str(model.pipe.config._name_or_path))
    if (folder / WORLD_FILE).is_file():
        return json.loads((folder / WORLD_FILE).read_text())
    return {"families": ["toy"], "tokens": "motion"}


def true_motion(scene: Scene, video: np.ndarray) -> dict:
    """Cosine and speed ratio of the motion in `video` (F, S, S, 3) against `scene`'s true motion."""
    if scene.family == "camera":
        shifts, zooms = camera_motion(video)
        if scene.kind == "zoom":
            pred, true = zooms[:, None], scene.log_zoom[:, None]
            norms = np.linalg.norm(pred) * np.linalg.norm(true)
            return {"cosine": float((pred * true).sum() / norms) if norms > 0 else 0.0,
                    "speed_ratio": float(np.abs(pred).mean() / np.abs(true).mean()), "steps": len(true)}
        positions = np.concatenate([np.zeros((1, 2)), np.cumsum(shifts, axis=0)])
        return trajectory_metrics(positions, scene.displacements)
    positions = track_template(video, scene.sprite.patch, scene.sprite.mask, scene.wrap)
    return trajectory_metrics(positions, scene.displacements)


def make_pairs(n: int, seed: int, cfg: SceneConfig, families: tuple[str, ...] = FAMILIES) -> list[Pair]:
    """n held-out pairs: families in turn, and within a family its motion kinds in turn."""
    pairs = []
    for i in range(n):
        family = families[i % len(families)]
        kind = KINDS[family][(i // len(families)) % len(KINDS[family])]
        rng = np.random.default_rng([seed, 7919, i])  # 7919: apart from training's (seed, step) streams
        reference = sample_scene(rng, cfg, family, kind)
        for _ in range(20):
            target = sample_scene(rng, cfg, like=reference)
            if true_motion(target, target.frames)["cosine"] >= 0.9:  # the trackers can follow it
                break
        pairs.append(Pair(i, reference, target))
    return pairs


def evaluate(
    model: SVDModel,
    n_pairs: int = 40,
    seed: int = 0,
    inversion: InversionConfig = InversionConfig(),
    transfer_cfg: TransferConfig = TransferConfig(),
    methods: tuple[str, ...] = METHODS,
    families: tuple[str, ...] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    inversion_batch: int = 8,
) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """Per (pair, method) rows, and the output videos per method (for contact sheets).

    MTI inverts `inversion_batch` pairs at a time (`invert_batch`: each pair gets the embedding it
    would get alone); its rows' seconds are the batch's time split evenly, plus the transfer.
    """
    size, frames = model.default_size[0], model.default_num_frames
    world = world_of(model)
    families = tuple(families or world["families"])
    cfg = SceneConfig(size=size, frames=frames, photos=photos.HELD_OUT)
    pairs = make_pairs(n_pairs, seed, cfg, families)
    inverted = _invert_pairs(model, pairs, inversion, seed, inversion_batch, progress) if "mti" in methods else {}
    rows, videos = [], {method: [] for method in methods}
    for k, pair in enumerate(pairs):
        target_img = Image.fromarray(pair.target.frames[0])
        true = torch.from_numpy(_tokens(pair.reference, world, model.token_dim, size))[:, None]  # (F+1, 1, D)
        for method in methods:
            t0 = time.perf_counter()
            extra = 0.0
            if method == "mti":
                emb, extra = inverted[k]
            elif method == "stock":
                emb = None
            elif method == "random":
                g = torch.Generator().manual_seed(seed * 100_003 + k)
                shape = (frames + 1, inversion.tokens_per_frame, model.token_dim)
                emb = MotionEmbedding(tokens=torch.randn(shape, generator=g) * true[:-1].std())
            else:
                emb = MotionEmbedding(tokens=true)
            video = unit_to_uint8(transfer(model, [target_img], emb, transfer_cfg, seeds=[seed + k])[0])
            agreement = true_motion(pair.target, video)
            if not np.isfinite(agreement["cosine"]):  # nothing found to follow: no agreement, not a skipped pair
                agreement["cosine"], agreement["speed_ratio"] = 0.0, 0.0
            rows.append({
                "pair": k, "method": method, "family": pair.reference.family, "motion": pair.reference.kind,
                "cosine": agreement["cosine"], "speed_ratio": agreement["speed_ratio"],
                "motion_fidelity": motion_fidelity(video, pair.reference.frames).score,
                "first_frame_psnr": psnr(video[0], pair.target.frames[0]),
                "seconds": time.perf_counter() - t0 + extra,
            })
            videos[method].append(video)
        if progress is not None:
            progress(k + 1, len(pairs), f"{pair.reference.family}/{pair.reference.kind}")
    return pd.DataFrame(rows), videos


def _invert_pairs(model: SVDModel, pairs: list[Pair], config: InversionConfig, seed: int, batch: int,
                  progress: Callable[[int, int, str], None] | None) -> dict[int, tuple[MotionEmbedding, float]]:
    """Pair index -> (its inverted embedding, its share of the batch's seconds)."""
    out, batch = {}, max(1, batch)
    for start in range(0, len(pairs), batch):
        chunk = range(start, min(start + batch, len(pairs)))
        if progress is not None:
            progress(0, len(pairs), f"inverting pairs {chunk[0] + 1}-{chunk[-1] + 1}")
        t0 = time.perf_counter()
        done = invert_batch(model, [uint8_to_signed(pairs[k].reference.frames) for k in chunk], config,
                            [f"toy-pair-{seed}-{k}" for k in chunk])
        share = (time.perf_counter() - t0) / len(chunk)
        out.update({k: (emb, share) for k, (emb, _) in zip(chunk, done)})
    return out


def _tokens(scene: Scene, world: dict, dim: int, size: int) -> np.ndarray:
    if world["tokens"] == "scene":
        return scene_tokens(scene.displacements, scene.log_zoom, scene.kind_index, scene.wrap, size, dim)
    return motion_tokens(scene.displacements, MOTION_KINDS.index(scene.kind), dim, size)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of each metric per method: overall, per family, and per family and motion kind."""
    metrics = ["cosine", "motion_fidelity", "speed_ratio", "first_frame_psnr"]
    parts = [df.groupby("method")[metrics].agg(["mean", "std"]).assign(family="all", motion="all"),
             df.groupby(["method", "family"])[metrics].agg(["mean", "std"]).reset_index(level="family")
             .assign(motion="all"),
             df.groupby(["method", "family", "motion"])[metrics].agg(["mean", "std"])
             .reset_index(level=["family", "motion"])]
    out = pd.concat(parts).reset_index()
    out.columns = ["_".join(c).strip("_") if isinstance(c, tuple) else c for c in out.columns]
    return out.sort_values(["method", "family", "motion"]).reset_index(drop=True)


def write_results(df: pd.DataFrame, videos: dict[str, list[np.ndarray]], out: str | Path, model_id: str,
                  seed: int) -> tuple[pd.DataFrame, list[Path]]:
    """OUT/pairs.parquet (one row per pair and method), OUT/summary.parquet (`summarise`) and one
    contact sheet PNG per method (its first 12 outputs); returns the summary and the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.assign(model_id=model_id, seed=seed).to_parquet(out / "pairs.parquet")
    table = summarise(df)
    table.to_parquet(out / "summary.parquet")
    written = [out / "pairs.parquet", out / "summary.parquet"]
    for method, method_videos in videos.items():
        written.append(save_contact_sheet(method_videos[:12], out / f"sheet_{method}.png", scale=2))
    return table, written
