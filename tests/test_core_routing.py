"""Token routing: group f drives frame f's spatial cross-attention, group F the temporal one."""

from __future__ import annotations

import pytest
import torch

from mtcore.method.conditioning import first_frame_latent, time_ids, video_latents
from mtcore.method.svd_loss import edm_denoise

F, N = 8, 2


@pytest.fixture(scope="module")
def setup(tiny_model):
    m = tiny_model
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(F, 3, 64, 64, generator=g) * 2 - 1
    x0, cond = video_latents(m, frames), first_frame_latent(m, frames[:1])
    sigma = torch.tensor([2.0])
    noisy = x0 + sigma * torch.randn(x0.shape, generator=g)
    tokens = torch.randn(F + 1, N, m.token_dim, generator=g)

    def run(t):
        with torch.no_grad(), m.routing.route(F, N):
            return edm_denoise(m, noisy, sigma, cond, t.reshape(1, -1, m.token_dim), time_ids(m, 7, 127, 0.02, 1))

    return tokens, run, run(tokens)


def _frame_change(run, base, tokens, group):
    t2 = tokens.clone()
    t2[group] += 3 * torch.randn(N, tokens.shape[-1], generator=torch.Generator().manual_seed(group))
    return (run(t2) - base).abs().flatten(2).mean(2)[0]  # (F,) mean change per frame


@pytest.mark.parametrize("group", [0, 3, 7])
def test_frame_group_changes_its_frame_most(setup, group):
    tokens, run, base = setup
    change = _frame_change(run, base, tokens, group)
    assert int(change.argmax()) == group
    others = torch.cat([change[:group], change[group + 1 :]])
    assert change[group] > 2 * others.mean()


def test_temporal_group_changes_all_frames(setup):
    tokens, run, base = setup
    change = _frame_change(run, base, tokens, F)
    assert (change > 0.2 * change.max()).all(), change
    assert change.min() > 1e-3


def test_multi_token_embedding_outside_route_is_refused(tiny_model, setup):
    m = tiny_model
    tokens, _, _ = setup
    x = torch.zeros(1, F, 8, 8, 8)
    with pytest.raises(RuntimeError, match="outside MotionRouting.route"):
        m.unet(x, torch.tensor([0.1]), encoder_hidden_states=tokens.reshape(1, -1, m.token_dim),
               added_time_ids=time_ids(m, 7, 127, 0.02, 1))


def test_wrong_token_count_is_refused(tiny_model):
    m = tiny_model
    x = torch.zeros(1, F, 8, 8, 8)
    with pytest.raises(ValueError, match="expected"), m.routing.route(F, N), torch.no_grad():
        m.unet(x, torch.tensor([0.1]), encoder_hidden_states=torch.zeros(1, 5, m.token_dim),
               added_time_ids=time_ids(m, 7, 127, 0.02, 1))


def test_routing_finds_every_cross_attention_by_diffusers_names(tiny_model):
    """Routing picks processors by diffusers' module names (pinned version); if an upgrade renamed them,
    the processors found by name would no longer be every cross-attention module: this fails loudly."""
    from diffusers.models.attention_processor import Attention

    from mtcore.method.routing import CROSS_ATTENTION_SUFFIX, TEMPORAL_MARKER, RoutedCrossAttnProcessor

    unet = tiny_model.unet
    by_type = {name for name, module in unet.named_modules()
               if isinstance(module, Attention) and module.is_cross_attention}
    by_name = {name.removesuffix(".processor") for name in unet.attn_processors if name.endswith(CROSS_ATTENTION_SUFFIX)}
    assert by_name == by_type and by_type
    assert any(TEMPORAL_MARKER in n for n in by_name) and not all(TEMPORAL_MARKER in n for n in by_name)
    routed = {name.removesuffix(".processor") for name, proc in unet.attn_processors.items()
              if isinstance(proc, RoutedCrossAttnProcessor)}
    assert routed == by_type


def test_install_refuses_a_unet_it_cannot_route(monkeypatch):
    """Were diffusers to rename its temporal blocks, install would find no temporal cross-attention: refused."""
    import mtcore.method.routing
    from mtcore.method.svd import build_tiny_pipeline

    monkeypatch.setattr(mtcore.method.routing, "TEMPORAL_MARKER", ".renamed_temporal_blocks.")
    with pytest.raises(RuntimeError, match="rename"):
        mtcore.method.routing.MotionRouting.install(build_tiny_pipeline().unet)
