"""Fewer inversion steps for the same motion: quality against steps, learning rate, warm-up and tokens
per frame N, with the built-in toy model on held-out pairs of every family it knows.

One inversion run per setting (all pairs inverted together: mtcore.method.inversion.invert_batch) observed at
50, 100, 150, 200, 300 and 600 steps (the learning rate is constant after its warm-up, so the embedding at
step s of a longer run is the embedding of an s-step run); each snapshot is transferred to its pair's
target and scored with the true-motion cosine (mtcore.toy.evaluate.true_motion) and motion fidelity.
Prints one row per (setting, steps), writes the table and a plot of quality against steps.

Run: .venv/bin/python benchmarks/bench_steps.py [--pairs 12] [--png docs/steps.png]
     (all 6 settings to 600 steps: about an hour here; the figure in docs/performance.md is
     --pairs 8 --max-steps 300 --settings 0,2,3,5, 12 minutes)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcore.method.config import InversionConfig, TransferConfig  # noqa: E402
from mtcore.method.embedding import MotionEmbedding  # noqa: E402
from mtcore.io.frames import uint8_to_signed, unit_to_uint8  # noqa: E402
from mtcore.method.inversion import invert_batch  # noqa: E402
from mtcore.metrics.motion import motion_fidelity  # noqa: E402
from mtcore.method.models import load_model  # noqa: E402
from mtcore.method.sampling import transfer  # noqa: E402
from mtcore.toy import photos  # noqa: E402
from mtcore.toy.evaluate import make_pairs, true_motion, world_of  # noqa: E402
from mtcore.toy.scenes import SceneConfig  # noqa: E402

SNAPSHOTS = (50, 100, 150, 200, 300, 600)
SETTINGS = {  # name: InversionConfig fields (the rest default; N = 5); the first is the baseline
    "lr 1e-2, warm-up 30 (earlier default)": {"lr": 1e-2, "warmup_steps": 30},
    "lr 3e-2": {"lr": 3e-2, "warmup_steps": 30},
    "lr 3e-2, warm-up 10 (default now)": {"lr": 3e-2, "warmup_steps": 10},
    "lr 1e-1, warm-up 10": {"lr": 1e-1, "warmup_steps": 10},
    "N 2": {"tokens_per_frame": 2, "lr": 1e-2, "warmup_steps": 30},
    "N 2, lr 3e-2, warm-up 10": {"tokens_per_frame": 2, "lr": 3e-2, "warmup_steps": 10},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--png", type=Path, default=Path("docs/steps.png"))
    ap.add_argument("--parquet", type=Path, default=Path("docs/steps.parquet"))
    ap.add_argument("--replot", action="store_true", help="Only redraw the PNG from the Parquet table.")
    ap.add_argument("--max-steps", type=int, default=max(SNAPSHOTS), help="Last snapshot (a shorter study).")
    ap.add_argument("--settings", default=",".join(str(i) for i in range(len(SETTINGS))),
                    help="Comma-separated indices into SETTINGS (default: all).")
    args = ap.parse_args()
    snapshots_at = tuple(s for s in SNAPSHOTS if s <= args.max_steps)
    settings = {name: fields for i, (name, fields) in enumerate(SETTINGS.items())
                if str(i) in args.settings.split(",")}
    if args.replot:
        df = pd.read_parquet(args.parquet)
        plot(df, args.png, tuple(sorted(df.steps.unique())))
        return 0
    torch.set_num_threads(2)
    model = load_model(None, device="cpu", dtype="fp32")
    size = model.default_size[0]
    cfg = SceneConfig(size=size, frames=model.default_num_frames, photos=photos.HELD_OUT)
    pairs = make_pairs(args.pairs, args.seed, cfg, tuple(world_of(model)["families"]))
    references = [uint8_to_signed(p.reference.frames) for p in pairs]
    targets = [Image.fromarray(p.target.frames[0]) for p in pairs]
    rows = []
    for name, fields in settings.items():
        config = InversionConfig(steps=max(snapshots_at), **fields)
        snapshots = {}
        t0 = time.perf_counter()
        invert_batch(model, references, config,
                     observe=lambda step, tokens: snapshots.__setitem__(step, tokens.cpu().clone())
                     if step in snapshots_at else None)
        seconds = time.perf_counter() - t0
        for step in snapshots_at:
            scores = []
            for i, pair in enumerate(pairs):
                video = unit_to_uint8(transfer(model, [targets[i]], MotionEmbedding(snapshots[step][i]),
                                               TransferConfig(steps=args.sample_steps), seeds=[i])[0])
                cosine = true_motion(pair.target, video)["cosine"]
                scores.append((0.0 if not np.isfinite(cosine) else cosine,
                               motion_fidelity(video, pair.reference.frames).score))
            cos, fid = np.array(scores).T
            rows.append({"setting": name, "steps": step, "cosine": cos.mean(), "cosine_std": cos.std(),
                         "motion_fidelity": fid.mean(), "inversion_s_per_ref": seconds / len(pairs) * step / max(snapshots_at)})
            print(f"{name:<36} steps {step:>4}: cosine {cos.mean():.3f} +- {cos.std():.3f}, motion fidelity "
                  f"{fid.mean():.3f}, inversion {rows[-1]['inversion_s_per_ref']:.1f} s/ref", flush=True)
    df = pd.DataFrame(rows)
    args.parquet.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.parquet)
    plot(df, args.png, snapshots_at)
    base = df[(df.setting == next(iter(settings))) & (df.steps == 300)].cosine.item()  # the earlier default
    best = df[df.cosine >= base - 0.01].sort_values(["steps", "cosine"], ascending=[True, False]).iloc[0]
    print(f"earlier default at 300 steps: cosine {base:.3f}; fewest steps within 0.01 of it: {best.steps} with "
          f"'{best.setting}' (cosine {best.cosine:.3f})")
    print(f"steps_for_default_quality={int(best.steps)} setting={best.setting!r}")
    return 0


def plot(df: pd.DataFrame, path: Path, snapshots: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, group in df.groupby("setting", sort=False):
        axes[0].plot(group.steps, group.cosine, marker="o", label=name)
        axes[1].plot(group.steps, group.motion_fidelity, marker="o", label=name)
    for ax, title in zip(axes, ("true-motion cosine", "motion fidelity")):
        ax.set(xscale="log", xlabel="inversion steps", title=title, xticks=list(snapshots))
        ax.set_xticklabels([str(s) for s in snapshots])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
