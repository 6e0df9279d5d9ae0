"""Causal multi-head softmax attention with rotary positions: the baseline mixer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.layers.contract import Mixer
from recall_lm.layers.flops import causal_attention_core_flops, linear_flops
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.rotary import RotaryEmbedding
from recall_lm.layers.state import KVCache


def split_heads(d_model: int, num_heads: int, mixer: str) -> int:
    """Head dimension of ``d_model`` over ``num_heads``; a clear error when they do not divide."""
    if num_heads < 1 or d_model % num_heads:
        raise ValueError(f"{mixer}: num_heads={num_heads} must be ≥ 1 and divide d_model={d_model}")
    return d_model // num_heads


@register_mixer("attention")
class Attention(Mixer):
    """softmax(q kᵀ / √D + causal mask) v per head, q and k rotated by RoPE, via SDPA.

    ``rotary=False`` leaves q and k unrotated (no positional encoding: Zoology's MQAR attention, which
    gets its positions from the BaseConv layer before it); ``dropout`` drops attention probabilities
    while training (Zoology: 0.1); ``bias`` adds biases to the qkv and output projections (Zoology: True).
    ``hard_alibi_heads`` = m (Jelassi et al., 2024, "Repeat After Me", whose copying length generalisation
    uses it with ``rotary=False``): head h < m attends only to its last h + 1 keys (itself included), the
    other heads to every earlier key.

    Decoding state: a KV cache (``recall_lm.layers.state.KVCache``: buffers [B, H, capacity, D] grown in
    place), so the state grows with the context: ``state_size(seq_len) = 2 · seq_len · d_model``.
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("out",)  # the output projection (ModelConfig.scaled_residual_init)

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        rotary_base: float = 10000.0,
        bias: bool = False,
        rotary: bool = True,
        dropout: float = 0.0,
        hard_alibi_heads: int = 0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention: dropout must be in [0, 1), got {dropout}")
        if int(hard_alibi_heads) != hard_alibi_heads or not 0 <= hard_alibi_heads <= num_heads:
            raise ValueError(
                f"attention: hard_alibi_heads must be an integer in [0, num_heads={num_heads}], "
                f"got {hard_alibi_heads}"
            )
        self.hard_alibi_heads = int(hard_alibi_heads)
        self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
        self.head_dim = split_heads(d_model, num_heads, "attention")
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = RotaryEmbedding(self.head_dim, base=rotary_base) if rotary else None

    def forward(
        self, x: torch.Tensor, state: KVCache | None = None, documents=None
    ) -> tuple[torch.Tensor, KVCache | None]:
        """``documents`` (packed, no state): causal attention within each document, rotary from 0 in each."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).unbind(2)
        if documents is not None:
            return self._per_document(q, k, v, documents), None
        past = 0 if state is None else state.length
        if self.rotary is not None:
            q, k = self.rotary(q, offset=past), self.rotary(k, offset=past)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        new_state = None
        if state is not None:
            new_state = state.append(k, v)
            k, v = new_state.keys().to(q.dtype), new_state.values().to(q.dtype)  # [B, H, past + T, D]
        if self.hard_alibi_heads:
            p = self.dropout if self.training else 0.0
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=self._allowed(T, past, x.device), dropout_p=p
            )
        elif past == 0:
            p = self.dropout if self.training else 0.0
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        elif T == 1:
            o = F.scaled_dot_product_attention(q, k, v)
        else:  # new queries sit at absolute positions past..past+T-1 and see every key up to their own
            allowed = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        y = self.out(o.transpose(1, 2).reshape(B, T, self.d_model))
        return y, new_state

    def _per_document(self, q, k, v, documents) -> torch.Tensor:
        """q, k, v [1, T, H, D] of packed documents -> y [1, T, d_model]: one causal SDPA per document, so
        no key of another document is ever scored (Σ L_i² work, no T × T mask)."""
        if self.rotary is not None:
            q, k = (self.rotary(t, positions=documents.positions) for t in (q, k))
        p = self.dropout if self.training else 0.0

        def attend(q, k, v):
            if self.hard_alibi_heads:
                mask = self._allowed(q.shape[2], 0, q.device)
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)

        outs = [
            attend(*(t.transpose(1, 2) for t in qkv)) for qkv in zip(*(documents.split(t) for t in (q, k, v)))
        ]
        o = torch.cat(outs, dim=2).transpose(1, 2)  # [1, T, H, D]
        return self.out(o.reshape(1, q.shape[1], self.d_model))

    def _allowed(self, T: int, past: int, device) -> torch.Tensor:
        """[H, T, past + T] bool: query i (absolute position past + i) sees key j when j ≤ past + i, and, in
        the first ``hard_alibi_heads`` heads h, when past + i − j ≤ h."""
        distance = (past + torch.arange(T, device=device))[:, None] - torch.arange(past + T, device=device)
        reach = torch.full((self.num_heads,), past + T, device=device)
        reach[: self.hard_alibi_heads] = torch.arange(self.hard_alibi_heads, device=device)
        return (distance >= 0) & (distance <= reach[:, None, None])

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> KVCache:
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty.clone(), 0)

    def state_size(self, seq_len: int = 1) -> int:
        """Numbers held per sequence after ``seq_len`` tokens (the KV cache grows linearly)."""
        return 2 * seq_len * self.d_model

    def flops_per_token(self, seq_len: int) -> float:
        return (
            linear_flops(self.qkv)
            + linear_flops(self.out)
            + causal_attention_core_flops(seq_len, self.d_model)
        )
