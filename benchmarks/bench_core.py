"""Core compute benchmark: per-step cost of inversion and sampling on the tiny random SVD, and the
speed-up of sampling several targets in one batched `transfer` call.

What it measures, for each (px, F) in {64, 128} x {8, 14}:
  * a tiny random SVD is written with `mtcore.method.svd.init_tiny_model` (sample_size = px // 8,
    num_frames = F) into a temp folder and loaded back with `load_model(dir, device="cpu",
    dtype="fp32")`, i.e. through the real `from_pretrained` path;
  * seconds per inversion step: `invert` on a synthetic F-frame reference video with
    InversionConfig(steps=S, tokens_per_frame=5, warmup_steps=1), reported as
    (time(steps=S) - time(steps=1)) / (S - 1). The difference removes the one-time setup of a
    call (VAE encode of the reference, CLIP embeddings, the before/after loss evaluations);
  * seconds per sampling step: `transfer` of 1 target with TransferConfig(steps=T), reported as
    (time(steps=T) - time(steps=1)) / (T - 1) (removes VAE encode/decode and postprocessing);
  * process peak RSS (ru_maxrss) after the configuration. It is the peak of the whole process
    so far, hence cumulative: a configuration can only show a peak >= the previous one.
Before each timed pair an untimed steps=1 call warms up lazily initialised kernels. Every timing
is the best (minimum) of --repeats runs, alternating the order of the two calls: on a shared
2-core machine another process's CPU burst can make one call several times slower (seen: a
0.33 s inversion call taking 8.6 s), so the minimum is the estimate of the code's own cost; the
`spread` column (worst / best of the long runs) and the load averages printed show the noise.
With 2 torch threads on 2 busy cores the slow-down is catastrophic (threads wait on each other;
measured ~20x); --threads 1 degrades far more gracefully, so use it when the machine is shared.

Then, at 64 px / 8 frames: items/s of ONE `transfer` call with 4 target images (seeds 0..3)
against 4 calls of 1 image each (seeds 0..3), same steps, measured side by side in the same
process, alternating which goes first, best of --repeats. Then the line
`batched_vs_single_items_per_s_ratio=X` (> 1 means batching helps).

Then, with the built-in model: batched inversion (mtcore.method.inversion.invert_batch), references per second
for k = 1, 2, 4 and 8 references in one UNet call per step (the built-in model's size, S steps, best of
--repeats), and the GPU code paths (bf16 autocast, gradient checkpointing, two-pass guidance, channels-
last, torch.compile unless --no-compile) timed on the tiny model against the plain path, with the
largest difference of their results. The last line is `batched_inversion_refs_per_s_ratio=X.XX` (k = 4 vs 1).

Run (full; several minutes on 2 cores):
    .venv/bin/python benchmarks/bench_core.py
Smoke test (64 px / 8 frames only, few steps; well under a minute):
    .venv/bin/python benchmarks/bench_core.py --quick
Flags: --steps-invert S (20), --steps-sample T (10), --repeats R (3), --threads N (2), --quick.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

# Library chatter is not what this script prints (set before transformers/diffusers import).
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# Run from anywhere: make the repo importable even without the editable install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcore.method.config import InversionConfig, TransferConfig  # noqa: E402
from mtcore.method.inversion import invert  # noqa: E402
from mtcore.method.models import load_count, load_model  # noqa: E402
from mtcore.method.svd import init_tiny_model  # noqa: E402
from mtcore.method.sampling import transfer  # noqa: E402

GRID = [(64, 8), (64, 14), (128, 8), (128, 14)]
BATCH_K = 4


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux ru_maxrss is in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def synthetic_video(num_frames: int, px: int) -> torch.Tensor:
    """(F, 3, px, px) in [-1, 1]: a bright square sliding right over a smooth gradient."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, px), torch.linspace(-1, 1, px), indexing="ij")
    frames = []
    side = max(2, px // 8)
    for f in range(num_frames):
        img = torch.stack([0.5 * xx, 0.5 * yy, -0.3 * xx * yy])
        x0 = int(round((px - side) * f / max(1, num_frames - 1)))
        y0 = (px - side) // 2
        img[:, y0 : y0 + side, x0 : x0 + side] = torch.tensor([0.9, -0.6, 0.2])[:, None, None]
        frames.append(img)
    return torch.stack(frames).clamp(-1, 1)


def target_image(px: int, seed: int) -> Image.Image:
    """A distinct RGB target per seed: flat colour with a disc."""
    rng = np.random.default_rng(seed)
    arr = np.empty((px, px, 3), np.uint8)
    arr[:] = rng.integers(40, 200, size=3)
    yy, xx = np.mgrid[:px, :px]
    cy, cx = rng.integers(px // 4, 3 * px // 4, size=2)
    arr[(yy - cy) ** 2 + (xx - cx) ** 2 < (px // 6) ** 2] = rng.integers(0, 255, size=3)
    return Image.fromarray(arr)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def per_step(t_many: float, t_one: float, steps: int) -> float:
    return (t_many - t_one) / (steps - 1) if steps > 1 else float("nan")


def best_pair(fn_one, fn_many, repeats: int) -> tuple[float, float, list[float], list[float], object]:
    """Best-of-`repeats` seconds of fn_one() and fn_many(), alternating which runs first.

    Minimum, not mean: on a shared 2-core machine another process's burst can make one call many
    times slower (torch's threads then wait on each other), and that is noise, not the code's cost.
    Returns (best one, best many, all one, all many, last result of fn_many).
    """
    ones, manys, out = [], [], None
    for r in range(repeats):
        order = [("1", fn_one), ("n", fn_many)] if r % 2 == 0 else [("n", fn_many), ("1", fn_one)]
        for name, fn in order:
            t, res = timed(fn)
            if name == "1":
                ones.append(t)
            else:
                manys.append(t)
                out = res
    return min(ones), min(manys), ones, manys, out


def bench_config(px: int, num_frames: int, steps_inv: int, steps_smp: int, repeats: int, workdir: Path) -> dict:
    folder = init_tiny_model(workdir / f"svd-{px}px-{num_frames}f", seed=0, sample_size=px // 8, num_frames=num_frames)
    t_load, model = timed(lambda: load_model(folder, device="cpu", dtype="fp32"))
    assert model.default_size == (px, px) and model.default_num_frames == num_frames, (model.default_size,
                                                                                      model.default_num_frames)
    video = synthetic_video(num_frames, px)
    inv = lambda s: invert(model, video, InversionConfig(steps=s, tokens_per_frame=5, warmup_steps=1))  # noqa: E731

    inv(1)  # warm-up, untimed
    t_inv1, t_invS, all_inv1, all_invS, (emb, _stats) = best_pair(lambda: inv(1), lambda: inv(steps_inv), repeats)

    img = [target_image(px, 0)]
    smp = lambda s: transfer(model, img, emb, TransferConfig(steps=s), seeds=[0])  # noqa: E731
    smp(1)  # warm-up, untimed
    t_smp1, t_smpT, all_smp1, all_smpT, video_out = best_pair(lambda: smp(1), lambda: smp(steps_smp), repeats)
    assert tuple(video_out.shape) == (1, num_frames, 3, px, px), tuple(video_out.shape)
    # Spread = worst / best over the repeats of the long runs: a large value means contention.
    spread = max(max(all_invS) / t_invS, max(all_smpT) / t_smpT)
    return {
        "px": px, "frames": num_frames, "load_s": t_load,
        "inv_1_s": t_inv1, "inv_S_s": t_invS, "inv_step_s": per_step(t_invS, t_inv1, steps_inv),
        "smp_1_s": t_smp1, "smp_T_s": t_smpT, "smp_step_s": per_step(t_smpT, t_smp1, steps_smp),
        "spread": spread, "peak_rss_mb": peak_rss_mb(), "model": model, "embedding": emb,
    }


def bench_batching(model, emb, px: int, steps: int, repeats: int) -> dict:
    """Best-of-`repeats` seconds of 1 call x k images vs k calls x 1 image (alternating order)."""
    images = [target_image(px, s) for s in range(BATCH_K)]
    seeds = list(range(BATCH_K))
    cfg = TransferConfig(steps=steps)

    def batched():
        return transfer(model, images, emb, cfg, seeds=seeds)

    def single():
        return [transfer(model, [im], emb, cfg, seeds=[s]) for im, s in zip(images, seeds)]

    # Warm-up both shapes once (batch-4 tensors and batch-1 tensors), untimed.
    vb = batched()
    vs = single()
    # Sanity: a batch equals the same targets one at a time (documented in mtcore.method.sampling).
    max_diff = max(float((vb[i] - vs[i][0]).abs().max()) for i in range(BATCH_K))
    tb, ts = [], []
    for r in range(repeats):
        order = [("b", batched), ("s", single)] if r % 2 == 0 else [("s", single), ("b", batched)]
        for name, fn in order:
            t, _ = timed(fn)
            (tb if name == "b" else ts).append(t)
    return {"batched_s": tb, "single_s": ts, "batched_best": min(tb), "single_best": min(ts),
            "max_abs_diff": max_diff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps-invert", type=int, default=None, help="S: inversion steps of the long run (default 20; --quick 4)")
    ap.add_argument("--steps-sample", type=int, default=None, help="T: sampling steps of the long run (default 10; --quick 3)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of every timing, best kept (default 3; --quick 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke test: only 64 px / 8 frames, few steps")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile path (its compile takes minutes)")
    args = ap.parse_args(argv)

    steps_inv = args.steps_invert if args.steps_invert is not None else (4 if args.quick else 20)
    steps_smp = args.steps_sample if args.steps_sample is not None else (3 if args.quick else 10)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    if steps_inv < 2 or steps_smp < 2 or repeats < 1:
        ap.error("--steps-invert and --steps-sample must be >= 2, --repeats >= 1")
    threads = args.threads or 2
    torch.set_num_threads(threads)
    grid = [(64, 8)] if args.quick else GRID

    import transformers

    transformers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar
    print(f"torch {torch.__version__}; python {platform.python_version()}; cpu_count={os.cpu_count()}; "
          f"torch threads={torch.get_num_threads()}; device=cpu fp32")
    print(f"mode={'quick' if args.quick else 'full'}; inversion S={steps_inv} steps (tokens_per_frame=5, warmup_steps=1); "
          f"sampling T={steps_smp} steps; repeats={repeats}")
    print("per-step times = (time of S (or T) steps - time of 1 step) / (S - 1): one-time setup of a call "
          "(VAE encode, CLIP, loss evals / decode) is excluded; an untimed 1-step warm-up call precedes each pair.")
    print(f"timings are the best of {repeats} repeats (alternating order); load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("peak RSS = ru_maxrss of this process after the configuration: cumulative, never decreases.")
    print(flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="mt-bench-core-") as tmp:
        for px, f in grid:
            r = bench_config(px, f, steps_inv, steps_smp, repeats, Path(tmp))
            rows.append(r)
            print(f"  {px:>3} px x {f:>2} frames: inversion {r['inv_step_s']:.4f} s/step, "
                  f"sampling {r['smp_step_s']:.4f} s/step, spread {r['spread']:.2f}, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        base = next(r for r in rows if (r["px"], r["frames"]) == (64, 8))
        batch = bench_batching(base["model"], base["embedding"], 64, steps_smp, repeats)

    print()
    head = (f"{'px':>4} {'F':>3} | {'load s':>7} | {'inv 1 step s':>12} {f'inv {steps_inv} steps s':>15} "
            f"{'inv s/step':>10} | {'smp 1 step s':>12} {f'smp {steps_smp} steps s':>15} {'smp s/step':>10} | "
            f"{'spread':>6} | {'peak RSS MB (cumul.)':>20}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['px']:>4} {r['frames']:>3} | {r['load_s']:>7.2f} | {r['inv_1_s']:>12.3f} {r['inv_S_s']:>15.3f} "
              f"{r['inv_step_s']:>10.4f} | {r['smp_1_s']:>12.3f} {r['smp_T_s']:>15.3f} {r['smp_step_s']:>10.4f} | "
              f"{r['spread']:>6.2f} | {r['peak_rss_mb']:>20.0f}")
    noisy = [f"{r['px']}px/{r['frames']}f" for r in rows
             if r["spread"] > 1.5 or not (r["inv_step_s"] > 0 and r["smp_step_s"] > 0)]
    if noisy:
        print(f"WARNING: noisy measurement for {', '.join(noisy)} (spread > 1.5 or a per-step time <= 0): another "
              f"process competed for the CPU; re-run on a quiet machine or with more --repeats.")
    print()
    ips_b = BATCH_K / batch["batched_best"]
    ips_s = BATCH_K / batch["single_best"]
    ratio = ips_b / ips_s
    print(f"batched vs single at 64 px / 8 frames, k={BATCH_K} targets, {steps_smp} sampling steps, best of {repeats} "
          f"(alternating order):")
    print(f"  1 call x {BATCH_K} images : {batch['batched_best']:.3f} s -> {ips_b:.3f} items/s   "
          f"(all: {', '.join(f'{t:.3f}' for t in batch['batched_s'])} s)")
    print(f"  {BATCH_K} calls x 1 image : {batch['single_best']:.3f} s -> {ips_s:.3f} items/s   "
          f"(all: {', '.join(f'{t:.3f}' for t in batch['single_s'])} s)")
    bspread = max(max(batch["batched_s"]) / batch["batched_best"], max(batch["single_s"]) / batch["single_best"])
    if bspread > 1.5:
        print(f"  WARNING: noisy (worst / best = {bspread:.2f}); re-run on a quiet machine or with more --repeats.")
    print(f"  max |batched - single| over the videos: {batch['max_abs_diff']:.2e}")
    print(f"model loads in this process: {load_count()}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"process peak RSS at the end: {peak_rss_mb():.0f} MB")
    if not math.isfinite(ratio):
        print("warning: ratio is not finite")
    print(f"batched_vs_single_items_per_s_ratio={ratio:.2f}")
    print()
    if not args.quick:
        bench_code_paths(steps_inv, steps_smp, repeats, compile_too=not args.no_compile)
    curve = bench_inversion_batching(steps_inv, repeats, ks=(1, 2, 4) if args.quick else (1, 2, 4, 8))
    print(f"batched_inversion_refs_per_s_ratio={curve[4] / curve[1]:.2f}")
    return 0


def bench_inversion_batching(steps: int, repeats: int, ks=(1, 2, 4, 8)) -> dict[int, float]:
    """References per second of invert_batch with k references, on the built-in model."""
    from mtcore.method.inversion import invert_batch

    model = load_model(None, device="cpu", dtype="fp32")
    f, (h, w) = model.default_num_frames, model.default_size
    g = torch.Generator().manual_seed(0)
    refs = [torch.rand(f, 3, h, w, generator=g) * 2 - 1 for _ in range(max(ks))]
    cfg = InversionConfig(steps=steps, warmup_steps=1)
    invert_batch(model, refs[:1], InversionConfig(steps=1))  # warm-up
    print(f"batched inversion on the built-in model ({h}x{w}, {f} frames, {steps} steps, best of {repeats}):")
    curve = {}
    for k in ks:
        best = min(timed(lambda: invert_batch(model, refs[:k], cfg))[0] for _ in range(repeats))
        curve[k] = k / best
        print(f"  k = {k}: {best:6.2f} s -> {curve[k]:.3f} references/s ({curve[k] / curve[ks[0]]:.2f}x k = 1)", flush=True)
    return curve


def bench_code_paths(steps_inv: int, steps_smp: int, repeats: int, compile_too: bool = True) -> None:
    """The GPU code paths on the tiny model (64 px, 8 frames): time against the plain path, and agreement."""
    from mtcore.method.embedding import MotionEmbedding

    with tempfile.TemporaryDirectory(prefix="mt-bench-paths-") as tmp:
        folder = init_tiny_model(Path(tmp) / "tiny", seed=0, sample_size=8, num_frames=8)
        plain = load_model(folder, device="cpu", dtype="fp32")
        video = synthetic_video(8, 64)
        base_cfg = InversionConfig(steps=steps_inv, tokens_per_frame=5, warmup_steps=1)
        ref_tokens = invert(plain, video, base_cfg)[0].tokens
        emb = MotionEmbedding(ref_tokens)
        img = [target_image(64, 0)]
        guided = TransferConfig(steps=steps_smp, max_guidance_scale=3.0)
        ref_video = transfer(plain, img, emb, guided, seeds=[0])
        print(f"GPU code paths on the tiny model, CPU (best of {repeats}; diff = max |path - plain| of the result):")
        rows = [("inversion, plain", plain, base_cfg, None), ("inversion, bf16 autocast", plain,
                 InversionConfig(**{**base_cfg.__dict__, "autocast_bf16": True}), None),
                ("inversion, gradient checkpointing", plain,
                 InversionConfig(**{**base_cfg.__dict__, "gradient_checkpointing": True}), None)]
        for name, model, cfg, _ in rows:
            best = min(timed(lambda: invert(model, video, cfg))[0] for _ in range(repeats))
            diff = (invert(model, video, cfg)[0].tokens - ref_tokens).abs().max().item()
            print(f"  {name:<38} {best:7.3f} s   diff {diff:.2e}")
        paths = [("sampling with guidance, one pass", plain, 1), ("sampling with guidance, two passes", plain, 2),
                 ("sampling, channels-last", load_model(folder, device="cpu", dtype="fp32", channels_last=True), 1)]
        if compile_too:
            compiled = load_model(folder, device="cpu", dtype="fp32", compile_unet=True)
            t0 = time.perf_counter()
            transfer(compiled, img, emb, guided, seeds=[0])
            print(f"  (torch.compile: first call, compiling, {time.perf_counter() - t0:.0f} s)")
            paths.append(("sampling, torch.compile", compiled, 1))
        for name, model, passes in paths:
            best = min(timed(lambda: transfer(model, img, emb, guided, seeds=[0], guidance_passes=passes))[0]
                       for _ in range(repeats))
            diff = (transfer(model, img, emb, guided, seeds=[0], guidance_passes=passes) - ref_video).abs().max().item()
            print(f"  {name:<38} {best:7.3f} s   diff {diff:.2e}")
    print()


if __name__ == "__main__":
    sys.exit(main())
