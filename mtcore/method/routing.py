"""Routing of the inflated motion embedding inside SVD's UNet.

The UNet gets `encoder_hidden_states` of shape (B, T, D) with T = (F + 1) * N and, as stock,
repeats it for every frame. Cross-attention processors then pick, per layer:
- spatial cross-attention of frame f (batch row b * F + f) sees only tokens of group f;
- temporal cross-attention (batch rows b * H * W + p) sees only group F, shared by all frames.
With one token (T == 1, stock SVD and its zero unconditional embedding) they do nothing,
so a routed UNet behaves exactly like the stock one.

Processors are selected by diffusers' module names: cross-attention is `...attn2.processor`, and
temporal layers sit under `.temporal_transformer_blocks.` (diffusers 0.42.1, pinned in
pyproject.toml). `install` refuses a UNet where those names find no spatial or no temporal
cross-attention, and tests/test_core_routing.py checks the names, so a diffusers upgrade that
renames them fails loudly instead of silently leaving the motion embedding unrouted.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


# diffusers' module names (see the module docstring): which processors are cross-attention, which temporal.
CROSS_ATTENTION_SUFFIX = "attn2.processor"
TEMPORAL_MARKER = ".temporal_transformer_blocks."


@dataclass
class RoutingState:
    """Frame count F and tokens per group N of the call in progress (None outside a call)."""

    num_frames: int | None = None
    tokens_per_frame: int | None = None


class RoutedCrossAttnProcessor:
    """Wraps a stock attention processor; slices the tokens this layer may see."""

    def __init__(self, inner, temporal: bool, state: RoutingState):
        self.inner = inner
        self.temporal = temporal
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        ehs = encoder_hidden_states
        if ehs is not None and ehs.shape[1] > 1:
            ehs = self._select(ehs)
        return self.inner(attn, hidden_states, ehs, *args, **kwargs)

    def _select(self, ehs: torch.Tensor) -> torch.Tensor:
        f, n = self.state.num_frames, self.state.tokens_per_frame
        if f is None or n is None:
            raise RuntimeError("a multi-token motion embedding was passed outside MotionRouting.route()")
        rows, tokens, dim = ehs.shape
        if tokens != (f + 1) * n:
            raise ValueError(f"embedding has {tokens} tokens, expected (F + 1) x N = ({f} + 1) x {n}")
        if self.temporal:
            return ehs[:, f * n :]  # (B*H*W, N, D): the temporal group
        groups = ehs.view(rows // f, f, f + 1, n, dim)  # (B, F, F+1, N, D); row b*F+f is frame f
        idx = torch.arange(f, device=ehs.device)
        return groups[:, idx, idx].reshape(rows, n, dim)  # frame f keeps group f


class MotionRouting:
    """Installs routed processors on every cross-attention (attn2) of a spatio-temporal UNet."""

    def __init__(self, state: RoutingState):
        self.state = state

    @classmethod
    def install(cls, unet) -> "MotionRouting":
        state = RoutingState()
        procs = {}
        for name, proc in unet.attn_processors.items():
            if name.endswith(CROSS_ATTENTION_SUFFIX):
                proc = RoutedCrossAttnProcessor(proc, TEMPORAL_MARKER in name, state)
            procs[name] = proc
        routed = [p for p in procs.values() if isinstance(p, RoutedCrossAttnProcessor)]
        if not any(p.temporal for p in routed) or all(p.temporal for p in routed):
            raise RuntimeError(
                f"MotionRouting found {sum(not p.temporal for p in routed)} spatial and {sum(p.temporal for p in routed)} "
                f"temporal cross-attention processors by their names ('*{CROSS_ATTENTION_SUFFIX}', "
                f"'{TEMPORAL_MARKER}'); a UNet without both cannot take a motion embedding (did diffusers rename them?)"
            )
        unet.set_attn_processor(procs)
        return cls(state)

    @contextmanager
    def route(self, num_frames: int, tokens_per_frame: int) -> Iterator[None]:
        """UNet calls inside this block read (F + 1) x N-token embeddings as motion embeddings."""
        self.state.num_frames, self.state.tokens_per_frame = num_frames, tokens_per_frame
        try:
            yield
        finally:
            self.state.num_frames = self.state.tokens_per_frame = None
