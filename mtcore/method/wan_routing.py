"""Routing of the inflated motion embedding inside Wan's transformer (WanTransformer3DModel).

Wan's blocks cross-attend (`attn2`) to [CLIP image tokens, umT5 text tokens]; stock, the text is 512
tokens: a prompt's tokens, then zero padding (no mask: the padding is attended to). The motion
embedding takes the text's place: G = F' + 1 groups of N tokens of width `text_dim`, F' the latent
frames. The transformer gets them flattened with ONE zero token appended, (B, G * N + 1, text_dim); its
text projection is tokenwise, so that token's projection is what every padding token projects to.
Each block's routed processor then gives the video tokens of latent frame f the text context
  [group f, group G - 1 (shared), padding x (512 - 2N)]
and with G = 1, [group 0, padding x (512 - N)]: for a prompt's own tokens that is the stock context, so
one group reproduces the stock transformer (the oracle test). The padding repeated K times is one key
with log(K) added to its logit (softmax over K equal keys), so no 512-token context is materialised.
The CLIP image tokens are attended to as stock by every query.

A forward pre-hook on the transformer records each call's text token count and latent frame count, so
a call routes only when its text is a motion embedding of the expected shape; the unconditional branch
of guidance (the stock negative prompt, 512 tokens) passes through the stock processor untouched.
Processors are selected by diffusers' module names (`...attn2.processor`, diffusers 0.42.1, pinned).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

TEXT_LENGTH = 512
"""Tokens of Wan's text context (the pipelines' max_sequence_length; the stock processor assumes it)."""
CROSS_ATTENTION_SUFFIX = "attn2.processor"


@dataclass
class WanRoutingState:
    groups: int | None = None
    """G of the embedding being routed (None outside `route`)."""
    tokens_per_group: int | None = None
    """N."""
    text_tokens: int | None = None
    """Text tokens of the transformer call in progress (set by the pre-hook)."""
    latent_frames: int | None = None
    """F' of the call in progress (set by the pre-hook)."""

    @property
    def active(self) -> bool:
        return self.groups is not None and self.text_tokens == self.groups * self.tokens_per_group + 1


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(2, (heads, -1))  # (B, L, H, d)


class WanRoutedCrossAttn:
    """Wraps Wan's stock attention processor; routes the text part of a motion-embedding call."""

    def __init__(self, inner, state: WanRoutingState):
        self.inner = inner
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is None or not self.state.active:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections

        st = self.state
        g, n, frames = st.groups, st.tokens_per_group, st.latent_frames
        b, s, _ = hidden_states.shape
        text = encoder_hidden_states[:, -st.text_tokens:]  # (B, G*N + 1, dim)
        image = encoder_hidden_states[:, : encoder_hidden_states.shape[1] - st.text_tokens]
        query, key, value = _get_qkv_projections(attn, hidden_states, text)
        query, key = attn.norm_q(query), attn.norm_k(key)  # both per token (RMS norm across heads)
        query, key, value = _heads(query, attn.heads), _heads(key, attn.heads), _heads(value, attn.heads)

        # Per latent frame f: keys [group f, shared group, padding]; queries of frame f are rows f*S/F'..
        idx = torch.arange(frames, device=key.device)
        if g == 1:
            visible = torch.zeros(frames, 1, dtype=torch.long, device=key.device)
        else:
            visible = torch.stack([idx, torch.full_like(idx, g - 1)], dim=1)  # (F', 2)
        tok = (visible[:, :, None] * n + torch.arange(n, device=key.device)).flatten(1)  # (F', V*N)
        tok = torch.cat([tok, torch.full((frames, 1), g * n, device=key.device, dtype=torch.long)], dim=1)
        k = key[:, tok].flatten(0, 1)  # (B*F', V*N + 1, H, d)
        v = value[:, tok].flatten(0, 1)
        q = query.reshape(b * frames, s // frames, *query.shape[2:])  # (B*F', S/F', H, d)
        pads = TEXT_LENGTH - (tok.shape[1] - 1)
        bias = torch.zeros(tok.shape[1], dtype=q.dtype, device=q.device)
        bias[-1] = math.log(pads) if pads > 0 else float("-inf")
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias.view(1, 1, 1, -1)
        ).transpose(1, 2)  # (B*F', S/F', H, d)
        out = out.reshape(b, s, -1).type_as(query)

        if image.shape[1] and attn.add_k_proj is None:  # stock would mix them into the text's softmax
            raise RuntimeError("CLIP image tokens reach a cross-attention without added K/V projections "
                               "(added_kv_proj_dim unset): not a Wan I2V transformer configuration")
        if image.shape[1]:  # CLIP image tokens, as stock, for every query
            key_img, value_img = _get_added_kv_projections(attn, image)
            key_img = _heads(attn.norm_added_k(key_img), attn.heads)
            value_img = _heads(value_img, attn.heads)
            out_img = dispatch_attention_fn(query, key_img, value_img, attn_mask=None, dropout_p=0.0, is_causal=False)
            out = out + out_img.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class WanMotionRouting:
    """Installs routed processors on every `attn2` of one or more Wan transformers (Wan 2.2 has two)."""

    def __init__(self, state: WanRoutingState):
        self.state = state

    @classmethod
    def install(cls, *transformers) -> "WanMotionRouting":
        state = WanRoutingState()
        for transformer in transformers:
            procs, routed = {}, 0
            for name, proc in transformer.attn_processors.items():
                if name.endswith(CROSS_ATTENTION_SUFFIX):
                    proc, routed = WanRoutedCrossAttn(proc, state), routed + 1
                procs[name] = proc
            if not routed:
                raise RuntimeError(f"WanMotionRouting found no cross-attention processor named '*{CROSS_ATTENTION_SUFFIX}' "
                                   "(did diffusers rename them?)")
            transformer.set_attn_processor(procs)
            transformer.register_forward_pre_hook(cls._hook(state), with_kwargs=True)
        return cls(state)

    @staticmethod
    def _hook(state: WanRoutingState):
        def record(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            state.latent_frames = int(hidden.shape[2])  # (B, C, F', H, W)
            state.text_tokens = int(text.shape[1])
            if state.groups is not None and state.active and state.groups not in (1, state.latent_frames + 1):
                raise ValueError(f"motion embedding has {state.groups} groups; {state.latent_frames} latent frames "
                                 f"need {state.latent_frames + 1}")
        return record

    @contextmanager
    def route(self, groups: int, tokens_per_group: int) -> Iterator[None]:
        """Transformer calls inside this block whose text is (G * N + 1) tokens are routed."""
        if 2 * tokens_per_group > TEXT_LENGTH or groups * tokens_per_group + 1 == TEXT_LENGTH:
            raise ValueError(f"N={tokens_per_group} tokens per group cannot be routed in a {TEXT_LENGTH}-token context")
        self.state.groups, self.state.tokens_per_group = groups, tokens_per_group
        try:
            yield
        finally:
            self.state.groups = self.state.tokens_per_group = None
