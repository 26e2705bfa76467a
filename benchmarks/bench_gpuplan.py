"""Checks mtcore.method.gpuplan's cost model on this CPU with the real SVD UNet (1.52 B parameters, random
weights, diffusers' default config, float32): measured time and memory of inversion steps (forward +
backward to the embedding) at small sizes against the model's predictions.

The model counts FLOPs and saved activations on the meta device (mtcore.method.gpuplan.count_step). Here the
CPU's sustained FLOP/s is fitted (time = fixed + FLOPs / rate, least squares) on the first sizes only,
and the others are predicted from their counted FLOPs; memory is predicted from the counted activation
bytes at 4 bytes a value (no fitting) and compared with the peak RSS increase during the step (run
with MALLOC_MMAP_THRESHOLD_=65536, so freed tensors leave RSS at once and each step is measured alone).

Run: .venv/bin/python benchmarks/bench_gpuplan.py     (about 10 minutes; 7 GB of RAM)
Last line: `time_error_max=..% memory_error_max=..%` over the sizes not fitted on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcore.method.gpuplan import count_step, svd_unet  # noqa: E402

FIT = [(2, 64, 64), (4, 64, 64), (2, 128, 64)]
HELD_OUT = [(2, 128, 128), (6, 64, 64), (4, 128, 64)]


def peak_rss_during(fn) -> tuple[float, float, object]:
    """(seconds, peak RSS increase in bytes over the call, result)."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    return seconds, peak[0] - base, out


def step(unet, frames: int, height: int, width: int) -> None:
    x = torch.randn(1, frames, 8, height // 8, width // 8)
    ehs = torch.randn(1, 5, 1024, requires_grad=True)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    out = unet(x, torch.ones(1), encoder_hidden_states=ehs, added_time_ids=ids).sample
    out.float().pow(2).mean().backward()
    return ehs.grad.abs().sum().item()


def main() -> int:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc keeps freed heap pages for reuse, so after the first size a step's RSS increase would
        # miss what earlier steps left behind; with every block over 64 KiB its own mapping, freed
        # tensors go back to the OS at once and RSS follows what is alive. Set before the process starts.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    from diffusers import UNetSpatioTemporalConditionModel

    torch.set_num_threads(psutil.cpu_count(logical=False) or 2)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel().requires_grad_(False).eval()
    print(f"real SVD UNet on CPU: {sum(p.numel() for p in unet.parameters()) / 1e9:.3f} B parameters, "
          f"built in {time.perf_counter() - t0:.0f} s; torch {torch.__version__}, {torch.get_num_threads()} threads")
    step(unet, 2, 64, 64)  # warm-up
    meta = svd_unet()
    rows = []
    for size in FIT + HELD_OUT:
        cost = count_step(meta, *size, batch=1, backward=True, checkpointing=False, dtype_bytes=4, tokens=5)
        seconds, rss, _ = min((peak_rss_during(lambda: step(unet, *size)) for _ in range(2)), key=lambda r: r[0])
        rows.append((size, cost.flops, cost.activation_bytes, seconds, rss))
        print(f"F={size[0]} {size[2]}x{size[1]}: {cost.flops / 1e9:8.1f} GFLOP, counted activations "
              f"{cost.activation_bytes / 2**20:7.1f} MiB; measured {seconds:6.2f} s, peak RSS +{rss / 2**20:7.1f} MiB",
              flush=True)
    flops = np.array([r[1] for r in rows[: len(FIT)]])
    secs = np.array([r[3] for r in rows[: len(FIT)]])
    (fixed, per_flop), *_ = np.linalg.lstsq(np.stack([np.ones_like(flops), flops], 1), secs, rcond=None)
    print(f"\nfitted on {len(FIT)} sizes: {fixed:.2f} s fixed + FLOPs / {1 / per_flop / 1e9:.1f} GFLOP/s")
    time_errors, memory_errors = [], []
    print(f"{'size (not fitted)':<22} {'pred s':>8} {'meas s':>8} {'err':>6} {'pred MiB':>9} {'meas MiB':>9} {'err':>6}")
    for size, f, act, seconds, rss in rows[len(FIT):]:
        predicted = fixed + per_flop * f
        time_errors.append(abs(predicted - seconds) / seconds)
        memory_errors.append(abs(act - rss) / max(rss, 1))
        print(f"F={size[0]} {size[2]}x{size[1]:<13} {predicted:>8.2f} {seconds:>8.2f} {time_errors[-1]:>6.0%} "
              f"{act / 2**20:>9.1f} {rss / 2**20:>9.1f} {memory_errors[-1]:>6.0%}")
    print(f"time_error_max={max(time_errors):.0%} memory_error_max={max(memory_errors):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
