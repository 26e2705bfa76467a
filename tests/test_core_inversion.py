"""Inversion optimises only the motion embedding, lowers the denoising loss, and is deterministic."""

from __future__ import annotations

import torch

from mtcore.method.config import InversionConfig
from mtcore.method.inversion import invert
from mtcore.method.svd_loss import denoising_loss, fixed_draws
from mtcore.io.videoio import read_video

CFG = InversionConfig(steps=40, tokens_per_frame=2, lr=5e-2, warmup_steps=5, p_mean=0.5, p_std=1.0, seed=3)


def test_inversion_lowers_loss_on_fixed_draws(tiny_model, reference_video):
    m = tiny_model
    frames = read_video(reference_video, 8, 64, 64)
    weights_before = {k: v.clone() for k, v in m.unet.state_dict().items()}
    emb, stats = invert(m, frames, CFG, reference_sha256="abc")
    assert emb.tokens.shape == (9, 2, m.token_dim)
    assert emb.model_id == m.model_id and emb.reference_sha256 == "abc"
    assert emb.inversion_config["steps"] == 40
    # measured independently of the function's own report, on other fixed draws
    draws = fixed_draws((1, 8, 4, 8, 8), 6, seed=123, p_mean=0.5, p_std=1.0)
    start = denoising_loss(m, frames, emb_initial(m, frames), draws, CFG)
    end = denoising_loss(m, frames, emb.tokens, draws, CFG)
    assert end < start * 0.99, (start, end)
    assert stats.loss_after < stats.loss_before
    # the model is frozen: no weight moved
    for k, v in m.unet.state_dict().items():
        assert torch.equal(v, weights_before[k]), k


def emb_initial(m, frames):
    from mtcore.method.conditioning import clip_embed
    from mtcore.io.frames import signed_to_pil
    from mtcore.method.embedding import initial_tokens

    g = torch.Generator().manual_seed(CFG.seed)
    return initial_tokens(clip_embed(m, signed_to_pil(frames)), 2, "reference_frames", CFG.init_noise, g)


def test_inversion_is_deterministic_for_a_seed(tiny_model, reference_video):
    m = tiny_model
    frames = read_video(reference_video, 8, 64, 64)
    cfg = InversionConfig(steps=6, tokens_per_frame=2, warmup_steps=2, seed=9)
    a, _ = invert(m, frames, cfg)
    b, _ = invert(m, frames, cfg)
    c, _ = invert(m, frames, InversionConfig(steps=6, tokens_per_frame=2, warmup_steps=2, seed=10))
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_progress_callback_reports_every_step(tiny_model, reference_video):
    seen = []
    invert(tiny_model, read_video(reference_video, 8, 64, 64), InversionConfig(steps=3, tokens_per_frame=1),
           progress=lambda s, t, loss: seen.append((s, t, loss)))
    assert [s for s, _, _ in seen] == [1, 2, 3] and all(t == 3 for _, t, _ in seen)
    assert all(loss > 0 for _, _, loss in seen)


def test_initial_tokens_follow_reference_frames(tiny_model, reference_video):
    from mtcore.method.conditioning import clip_embed
    from mtcore.io.frames import signed_to_pil
    from mtcore.method.embedding import initial_tokens

    frames = read_video(reference_video, 8, 64, 64)
    e = clip_embed(tiny_model, signed_to_pil(frames))  # (F, D)
    t = initial_tokens(e, 3, "reference_frames", 0.0, torch.Generator())
    assert t.shape == (9, 3, e.shape[1])
    torch.testing.assert_close(t[5, 2], e[5])
    torch.testing.assert_close(t[8, 0], e[0])  # temporal group starts from frame 0


def test_gpu_memory_options_run_and_agree(tiny_model, reference_video):
    """Gradient checkpointing changes memory, not results; bf16 autocast runs (CPU autocast here)."""
    frames = read_video(reference_video, 8, 64, 64)
    base = InversionConfig(steps=3, tokens_per_frame=2, warmup_steps=1, seed=4)
    plain, _ = invert(tiny_model, frames, base)
    ckpt, _ = invert(tiny_model, frames, InversionConfig(**{**base.__dict__, "gradient_checkpointing": True}))
    torch.testing.assert_close(ckpt.tokens, plain.tokens, rtol=1e-4, atol=1e-5)
    assert not tiny_model.unet.is_gradient_checkpointing  # restored afterwards
    bf16, stats = invert(tiny_model, frames, InversionConfig(**{**base.__dict__, "autocast_bf16": True}))
    assert bf16.tokens.dtype == torch.float32 and torch.isfinite(bf16.tokens).all()
    assert not torch.equal(bf16.tokens, plain.tokens)  # autocast really changed the arithmetic


def test_a_batch_gives_each_reference_the_embedding_it_would_get_alone(tiny_model):
    from mtcore.method.inversion import invert_batch

    g = torch.Generator().manual_seed(0)
    references = [torch.rand(8, 3, 64, 64, generator=g) * 2 - 1 for _ in range(3)]
    cfg = InversionConfig(steps=12, tokens_per_frame=2, warmup_steps=3, seed=4, batch_size=2)
    alone = [invert(tiny_model, r, cfg)[0].tokens for r in references]
    batched = invert_batch(tiny_model, references, cfg, ["a", "b", "c"])
    for single, (emb, stats) in zip(alone, batched):
        assert torch.allclose(single, emb.tokens, atol=1e-4), (single - emb.tokens).abs().max()
        assert stats.loss_after < stats.loss_before
    assert [emb.reference_sha256 for emb, _ in batched] == ["a", "b", "c"]
    # they are three different embeddings, not one broadcast
    assert not torch.allclose(batched[0][0].tokens, batched[1][0].tokens, atol=1e-3)


def test_batches_are_sized_to_free_memory_and_halved_when_it_runs_out(tiny_model, monkeypatch):
    import mtcore.method.inversion as inversion
    from mtcore.method.gpuplan import references_that_fit

    g = torch.Generator().manual_seed(1)
    references = [torch.rand(8, 3, 64, 64, generator=g) * 2 - 1 for _ in range(4)]
    cfg = InversionConfig(steps=3, tokens_per_frame=1, warmup_steps=1)
    # the count holds for this model's own UNet: room for 2.5 references fits 2
    one = references_that_fit(tiny_model.unet, 8, 64, 64, 1, False, 4, free_bytes=1e15)
    per_reference = 0.85 * 1e15 / one
    assert references_that_fit(tiny_model.unet, 8, 64, 64, 1, False, 4, 2.5 * per_reference / 0.85) == 2
    assert references_that_fit(tiny_model.unet, 8, 64, 64, 1, False, 4, 1.0) == 1  # never less than one

    sizes, real = [], inversion.invert_batch

    def out_of_memory_above_one(model, refs, *args, **kwargs):
        sizes.append(len(refs))
        if len(refs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, refs, *args, **kwargs)

    alone = [inversion.invert(tiny_model, r, cfg)[0].tokens for r in references]
    monkeypatch.setattr(inversion, "invert_batch", out_of_memory_above_one)
    results = inversion.invert_fitting(tiny_model, references, cfg, ["a", "b", "c", "d"], free_bytes=1e15)
    assert sizes == [4, 2, 1, 1, 1, 1]  # all four fit on paper; out of memory: halved until it ran
    assert [emb.reference_sha256 for emb, _ in results] == ["a", "b", "c", "d"]
    for single, (emb, _) in zip(alone, results):
        assert torch.allclose(single, emb.tokens, atol=1e-5)
    sizes.clear()
    inversion.invert_fitting(tiny_model, references[:2], cfg, free_bytes=1.0)  # room for one: one at a time
    assert sizes == [1, 1]
