"""Both model families on the GPU at hand: measured inversion and sampling steps beside the plan.

For each family at its full size (SVD img2vid's UNet at 14 frames of 576x1024; Wan2.1-I2V-14B's transformer
at 81 frames of 480x832), bf16, gradient checkpointing on and off, batch 1 and 4: the denoiser is built
from its config with random weights (mtcore.method.gpumeasure; the weights do not change the cost), three
inversion steps are timed after a warm-up (forward + backward to the motion embedding, Wan's routing
installed), then one sampling step (SVD: 1 pass, guidance off as the method's default; Wan: 2 passes, its
stock guidance), all the batch's videos at once. s/video = 25 sampling steps x that step / batch: the denoiser only (no VAE decoding, no text or
image encoding). `planned` is mtcore.method.gpuplan's count on the meta device for the same case: its peak
(without the 1.5 GiB CUDA context) and its step time on this card's row of GPUS when the card is one of
them. A case whose planned activations exceed the card's free memory (its weights loaded) is skipped and says so (that is the plan
being used, as `invert_fitting` uses it). One command, at most 5 minutes on one H100.

Run on a GPU machine:   python benchmarks/bench_gpu.py
On a CPU (a smoke run): python benchmarks/bench_gpu.py --tiny     (the tests' tiny sizes)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcore.method.gpumeasure import build_denoiser, measure  # noqa: E402
from mtcore.method.gpuplan import GPUS, count_step, seconds  # noqa: E402
from mtcore.method.models import quiet_libraries  # noqa: E402

FULL = [("svd", "1.5B", 14, 576, 1024, 1), ("wan-i2v", "14B", 81, 480, 832, 2)]
TINY = [("svd", "tiny", 8, 64, 64, 1), ("wan-i2v", "tiny", 9, 32, 32, 2)]
SAMPLE_STEPS = 25


def card_row(device: torch.device) -> tuple[str, float, float] | None:
    """(name, dense bf16 TFLOP/s, assumed utilisation) of GPUS matching this card, if any."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for gpu, (_, tflops, utilisation) in GPUS.items():
        if gpu.split()[0] in name:
            return gpu, tflops, utilisation
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny sizes (a CPU smoke run)")
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    args = parser.parse_args()
    quiet_libraries()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    row = card_row(device)
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; plan row: {row[0] if row else 'none (not a card in GPUS)'}", flush=True)
    print(f"{'family':<8} {'size':<5} {'video':<12} {'ckpt':<4} {'batch':>5} {'s/step':>8} {'s/video':>8} "
          f"{'peak GiB':>8}   planned: {'s/step':>7} {'peak GiB':>8}", flush=True)
    t_start = time.perf_counter()
    for family, size, frames, height, width, passes in (TINY if args.tiny else FULL):
        meta = build_denoiser(family, size)
        model = build_denoiser(family, size, device, torch.bfloat16)
        for checkpointing in (True, False):
            for batch in (1, 4):
                cost = count_step(meta, frames, height, width, batch, True, checkpointing, 2, 5)
                planned_gib = (cost.weight_bytes + cost.activation_bytes + cost.transient_bytes) / 2**30
                planned_s = f"{seconds(cost, row[1], row[2]):7.2f}" if row else f"{'-':>7}"
                video = f"{frames}x{width}x{height}"
                head = f"{family:<8} {size:<5} {video:<12} {('on' if checkpointing else 'off'):<4} {batch:>5}"
                # the weights are already on the card: what must still fit is the step's activations
                if device.type == "cuda" and cost.activation_bytes + cost.transient_bytes > torch.cuda.mem_get_info(device)[0]:
                    print(f"{head} {'skipped: planned peak over the free memory':>27}   planned: {planned_s} "
                          f"{planned_gib:8.1f}", flush=True)
                    continue
                try:
                    got = measure(model, frames, height, width, batch, 5, checkpointing, steps=3, guidance_passes=passes)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{head} {'out of memory':>27}   planned: {planned_s} {planned_gib:8.1f}", flush=True)
                    continue
                peak = f"{got.peak_gib:8.1f}" if got.peak_gib is not None else f"{'n/a':>8}"
                print(f"{head} {got.step_s:8.3f} {SAMPLE_STEPS * got.sample_step_s / batch:8.2f} {peak}   planned: "
                      f"{planned_s} {planned_gib:8.1f}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
