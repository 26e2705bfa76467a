"""Motion-textual inversion: optimise only the motion embedding on one reference video.

The loop every model family shares: each reference's frozen inputs and starting tokens come from the
family (`MotionModel.encode_reference`), each step's noise from its own generator (`draw`), the loss from
the family's own objective (`errors`: SVD's EDM loss in `mtcore.method.svd_loss`, Wan's flow matching in
`mtcore.method.wan_inversion`), and AdamW with warm-up optimises the stacked embeddings (`optimise`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from mtcore.errors import InputError
from mtcore.io.videoio import read_video
from mtcore.method.config import InversionConfig, config_to_dict, validate_config
from mtcore.method.embedding import MotionEmbedding

if TYPE_CHECKING:  # annotations only
    from mtcore.method.family import MotionModel

ProgressFn = Callable[[int, int, float], None]  # (step done, total steps, loss of that step)


@dataclass(frozen=True)
class InversionStats:
    """Denoising loss on fixed (sigma, noise) draws before and after, and wall time."""

    loss_before: float
    loss_after: float
    seconds: float


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def autocast(model, config: InversionConfig):
    """bf16 autocast of the denoiser when the config asks for it (the embedding stays float32)."""
    if config.autocast_bf16:
        return torch.autocast(model.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimise(
    param: torch.nn.Parameter,
    config: InversionConfig,
    step_losses: Callable[[int], list[torch.Tensor]],
    denoisers: list[torch.nn.Module],
    progress: ProgressFn | None = None,
    observe: Callable[[int, torch.Tensor], None] | None = None,
) -> None:
    """The optimisation every family shares: AdamW with linear warm-up on the stacked (k, G, N, D) embeddings.

    `step_losses(step)` draws that step's noise and returns the k references' losses (their sum is
    minimised: nothing in a denoiser mixes batch items, so each embedding gets its own gradient). A
    non-finite loss stops the run. `denoisers` get gradient checkpointing while it runs when the config asks.
    """
    opt = torch.optim.AdamW([param], lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, config.warmup_steps))
    switched = [m for m in denoisers if config.gradient_checkpointing and not m.is_gradient_checkpointing]
    for module in switched:
        module.enable_gradient_checkpointing()
    try:
        for step in range(config.steps):
            losses = step_losses(step)
            loss = torch.stack(losses).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            values = [value.item() for value in losses]
            if not all(math.isfinite(v) for v in values):
                raise FloatingPointError(f"inversion diverged at step {step + 1} (losses {values})")
            if progress is not None:
                progress(step + 1, config.steps, sum(values) / len(values))
            if observe is not None:
                observe(step + 1, param.detach())
    finally:
        for module in switched:
            module.disable_gradient_checkpointing()


def read_reference(model: MotionModel, path, config: InversionConfig = InversionConfig()) -> torch.Tensor:
    """The reference video's frames as `invert` takes them with this config: (F, 3, H, W) in [-1, 1].

    Frame count, size and frame sampling come from the config, unset ones from the model.
    """
    full = model.resolve(config)
    return read_video(path, full.num_frames, full.height, full.width, full.frame_sampling)


def invert(
    model: MotionModel,
    frames: torch.Tensor,
    config: InversionConfig = InversionConfig(),
    reference_sha256: str = "",
    progress: ProgressFn | None = None,
    eval_draws: int = 4,
    caption: str | None = None,
) -> tuple[MotionEmbedding, InversionStats]:
    """Optimise a (F + 1) x N motion embedding on reference `frames` (F, 3, H, W) in [-1, 1].

    The frames must have the config's frame count and size (unset ones: the model's defaults), as
    `read_reference` returns them. Only the embedding has gradients; every random draw comes from
    a CPU generator seeded with `config.seed`, so a run is deterministic for a seed on a given device.
    (`invert_batch` with one reference.)
    """
    return invert_batch(model, [frames], config, [reference_sha256], progress, eval_draws,
                        captions=None if caption is None else [caption])[0]


def invert_batch(
    model: MotionModel,
    references: list[torch.Tensor],
    config: InversionConfig = InversionConfig(),
    reference_sha256s: list[str] | None = None,
    progress: ProgressFn | None = None,
    eval_draws: int = 4,
    observe: Callable[[int, torch.Tensor], None] | None = None,
    captions: list[str] | None = None,
) -> list[tuple[MotionEmbedding, InversionStats]]:
    """Invert k references at once: one denoiser forward/backward per step for all of them.

    `captions` (Wan only): the texts the embeddings start from; SVD starts from the reference's frames.

    Each reference keeps its own embedding, its own generator (seeded with `config.seed`, as alone)
    and so its own draws; the k losses are summed, and since nothing in the UNet mixes batch items,
    each embedding gets exactly the gradient it would get alone: a batch gives each reference the
    embedding it would get by itself (up to float rounding of the batched kernels; a test checks).
    AdamW is elementwise, so one optimiser over the stacked (k, F + 1, N, D) parameter is k optimisers.
    `observe(step, tokens)` sees the (k, F + 1, N, D) embeddings after each step (studies of steps).
    """
    validate_config(config, "inversion")
    full = model.resolve(config)
    expected = (full.num_frames, 3, full.height, full.width)
    for frames in references:
        if tuple(frames.shape) != expected:
            raise InputError("reference frames", f"shape {tuple(frames.shape)}, but the inversion config asks for "
                                                 f"(F, 3, H, W) = {expected}; read them with read_reference()")
    t0 = time.perf_counter()
    k, b, n = len(references), config.batch_size, config.tokens_per_frame
    groups = model.embedding_groups(full.num_frames)
    gens = [torch.Generator().manual_seed(config.seed) for _ in references]

    # Frozen inputs and starting tokens, once per reference (the init noise from its own generator).
    refs = [model.encode_reference(frames, config, gen, caption)
            for frames, gen, caption in zip(references, gens, captions or [None] * k)]
    param = torch.nn.Parameter(torch.stack([r.tokens for r in refs]).to(model.device, torch.float32))  # (k, G, N, D)

    draws = model.eval_draws(refs[0], eval_draws, config)  # a fixed yardstick, the same for every reference
    losses_before = [model.eval_loss(ref, param[i].detach(), draws, config) for i, ref in enumerate(refs)]

    def step_losses(step: int) -> list[torch.Tensor]:
        # each reference's draws from its own generator, in the order a lone inversion draws them
        noise = [model.draw(ref, b, config, gen) for ref, gen in zip(refs, gens)]
        tokens = param[:, None].expand(k, b, -1, -1, -1).flatten(0, 1)  # (k*b, G, N, D)
        per_item = model.errors(refs, noise, tokens, config, autocast(model, config))  # (k*b,)
        return [per_item[i * b:(i + 1) * b].mean() for i in range(k)]

    with model.route(groups, n):
        optimise(param, config, step_losses, model.invertible_modules(), progress, observe)

    seconds = time.perf_counter() - t0
    shas = reference_sha256s or [""] * k
    results = []
    for i, ref in enumerate(refs):
        final = param[i].detach().float().cpu()
        emb = MotionEmbedding(tokens=final, model_id=model.model_id, reference_sha256=shas[i],
                              inversion_config=config_to_dict(config), family=model.family,
                              video_frames=full.num_frames)
        stats = InversionStats(losses_before[i], model.eval_loss(ref, final, draws, config), seconds / k)
        results.append((emb, stats))
    return results


def invert_fitting(
    model: MotionModel,
    references: list[torch.Tensor],
    config: InversionConfig = InversionConfig(),
    reference_sha256s: list[str] | None = None,
    free_bytes: float | None = None,
    captions: list[str] | None = None,
) -> list[tuple[MotionEmbedding, InversionStats]]:
    """`invert_batch` over as many references at a time as the device holds; same results, in order.

    On a CUDA device the batch is sized from its free memory and the model's own denoiser (SVD's UNet,
    Wan's transformer) counted on the meta device (mtcore.method.gpuplan.references_that_fit), and halved again if a step still runs out of
    memory; on a CPU (or with no size known) every reference goes in one batch. `free_bytes` overrides
    the device's figure. A batch gives each reference the embedding it would get alone, so how the
    references are cut into batches changes no result.
    """
    shas = list(reference_sha256s or [""] * len(references))
    size = len(references)
    if free_bytes is None and model.device.type == "cuda":
        free_bytes = torch.cuda.mem_get_info(model.device)[0]
    if free_bytes is not None and references:
        from mtcore.method.gpuplan import references_that_fit

        full = model.resolve(config)
        half = config.autocast_bf16 or model.dtype in (torch.float16, torch.bfloat16)
        items = references_that_fit(model.invertible_modules()[0], full.num_frames, full.height, full.width,
                                    config.tokens_per_frame, config.gradient_checkpointing, 2 if half else 4, free_bytes)
        size = min(size, max(1, items // config.batch_size))  # a reference is batch_size items of a step
    results: list[tuple[MotionEmbedding, InversionStats]] = []
    while len(results) < len(references):
        start = len(results)
        try:
            results += invert_batch(model, references[start:start + size], config, shas[start:start + size],
                                    captions=captions[start:start + size] if captions else None)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)  # the count was optimistic for this device: fewer at a time
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
    return results
