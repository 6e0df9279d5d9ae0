"""Sliding-window softmax attention with rotary positions and a ring-buffer decoding cache."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import sliding_window_attention
from recall_lm.layers.attention import split_heads
from recall_lm.layers.contract import Mixer
from recall_lm.layers.flops import linear_flops, window_attention_core_flops
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.rotary import RotaryEmbedding
from recall_lm.layers.state import MixerState


@dataclass
class SlidingWindowCache(MixerState):
    """Ring buffers of the last w keys (already rotated) and values: k, v [B, w, H, D].

    The token at absolute position p sits in slot p % w. ``seen`` [B] int64 counts the tokens seen so
    far (every sequence of the batch has seen the same number; a tensor, so that a decode step is the
    same computation at every position); slot s holds a token iff s < seen, so the validity mask needs
    no storage. The buffers are allocated at full size from the start: the state holds 2·w·H·D
    numbers (and the counter) per sequence at every length.
    """

    k: torch.Tensor
    v: torch.Tensor
    seen: torch.Tensor

    @property
    def window_size(self) -> int:
        return self.k.shape[1]

    def valid(self) -> torch.Tensor:
        """[w] bool: the slots that hold a token."""
        return torch.arange(self.window_size, device=self.k.device) < self.seen[0]


@register_mixer("swa")
class SlidingWindowAttention(Mixer):
    """o_i = Σ_{i-w<j≤i} softmax_j(q_i·k_j / √D) v_j per head, q and k rotated by RoPE at absolute positions.

    Local softmax attention as in Longformer/Mistral and in the BASED hybrid (Arora et al., 2024),
    where a small window (64) gives exact local recall at a state of 2·w·d_model numbers, constant in
    the sequence length. Training runs ``kernels.sliding_window_attention`` (O(T·w)). Decoding keeps a
    ``SlidingWindowCache``: one token writes its slot, then attends over the buffer's valid slots (in
    slot order); a chunk of T > 1 tokens given a cache attends over the buffer's valid keys
    (chronological order) followed by its own keys, under the window and causal constraints: a masked
    softmax of O(T·(w + T)) for T ≤ w, the banded kernel over [buffer, chunk] for longer chunks.
    ``rotary=False`` drops the positional rotation (Zoology's ``SlidingAttn``, whose window of
    ``block_size`` past keys plus the current one is ``window_size = block_size + 1`` here).
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("out",)

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        window_size: int = 64,
        rotary_base: float = 10000.0,
        bias: bool = False,
        rotary: bool = True,
    ):
        super().__init__()
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"swa: window_size must be an int ≥ 1, got {window_size!r}")
        self.d_model, self.num_heads, self.window_size = d_model, num_heads, window_size
        self.head_dim = split_heads(d_model, num_heads, "swa")
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = RotaryEmbedding(self.head_dim, base=rotary_base) if rotary else None

    def forward(self, x: torch.Tensor, state: SlidingWindowCache | None = None, documents=None):
        """``documents`` (packed, no state): windows never reach into an earlier document; rotary
        positions restart at each."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).unbind(2)
        past = 0 if state is None else state.seen
        if self.rotary is not None:
            positions = None if documents is None else documents.positions
            q, k = (
                self.rotary(q, offset=past, positions=positions),
                self.rotary(k, offset=past, positions=positions),
            )
        if state is None:
            o = sliding_window_attention(q, k, v, self.window_size,
                                         cu_seqlens=None if documents is None else documents.cu_seqlens)
            new_state = None
        elif T == 1:
            new_state = self._write_token(state, k, v)
            o = self._attend_to_buffer(q, new_state)
        else:
            o = self._attend_with_cache(q, k, v, state)
            new_state = self._write(state, k, v)
        return self.out(o.reshape(B, T, self.d_model)), new_state

    def _write_token(self, state: SlidingWindowCache, k: torch.Tensor, v: torch.Tensor) -> SlidingWindowCache:
        """One token (k, v [B, 1, H, D]) into slot seen % w, out of place: it replaces the one token that
        falls out of its window."""
        slot = state.seen[:1] % self.window_size
        new_k = state.k.index_copy(1, slot, k.to(state.k.dtype))
        new_v = state.v.index_copy(1, slot, v.to(state.v.dtype))
        return SlidingWindowCache(new_k, new_v, state.seen + 1)

    def _attend_to_buffer(self, q: torch.Tensor, state: SlidingWindowCache) -> torch.Tensor:
        """q [B, 1, H, D] of the token just written -> o [B, 1, H, D]: attention over the buffer's valid
        slots, which hold exactly its window. The slots are not in time order, which softmax attention
        does not see (the keys carry their rotation); no Python number depends on the position."""
        allowed = (torch.arange(self.window_size, device=q.device) < state.seen[:, None])[:, None, None, :]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), state.k.to(q.dtype).transpose(1, 2),
                                           state.v.to(q.dtype).transpose(1, 2), attn_mask=allowed)
        return o.transpose(1, 2)

    def _attend_with_cache(self, q, k, v, state: SlidingWindowCache) -> torch.Tensor:
        """q, k, v: [B, T, H, D] of the tokens at positions seen .. seen + T - 1 -> o [B, T, H, D]."""
        B, T, H, D = q.shape
        w, seen = self.window_size, int(state.seen[0])
        n = min(seen, w)
        order = torch.arange(seen - n, seen, device=q.device) % w  # valid slots, oldest first
        keys = torch.cat([state.k[:, order].to(q.dtype), k], dim=1)  # positions seen - n .. seen + T - 1
        values = torch.cat([state.v[:, order].to(q.dtype), v], dim=1)
        if T > w:  # long chunk: the banded kernel over [buffer, chunk]; the buffer rows' outputs are dropped
            queries = torch.cat([q.new_zeros(B, n, H, D), q], dim=1)
            return sliding_window_attention(queries, keys, values, w)[:, n:]
        i = torch.arange(n, n + T, device=q.device)[:, None]
        j = torch.arange(n + T, device=q.device)[None, :]
        allowed = (j <= i) & (i - j < w)  # [T, n + T]
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=allowed
        )
        return o.transpose(1, 2)

    def _write(self, state: SlidingWindowCache, k: torch.Tensor, v: torch.Tensor) -> SlidingWindowCache:
        """Store the last min(T, w) keys and values in their slots (out of place: the old state stays
        valid)."""
        T, w = k.shape[1], self.window_size
        m = min(T, w)
        seen = int(state.seen[0])
        slots = torch.arange(seen + T - m, seen + T, device=k.device) % w
        new_k = state.k.index_copy(1, slots, k[:, T - m :].to(state.k.dtype))
        new_v = state.v.index_copy(1, slots, v[:, T - m :].to(state.v.dtype))
        return SlidingWindowCache(new_k, new_v, state.seen + T)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> SlidingWindowCache:
        empty = torch.zeros(
            batch_size, self.window_size, self.num_heads, self.head_dim, device=device, dtype=dtype
        )
        return SlidingWindowCache(
            empty, empty.clone(), torch.zeros(batch_size, dtype=torch.long, device=device)
        )

    def state_size(self, seq_len: int = 1) -> int:
        """2·w·d_model numbers per sequence and the position counter, whatever the length (the ring
        buffer is allocated in full)."""
        return 2 * self.window_size * self.d_model + 1

    def flops_per_token(self, seq_len: int) -> float:
        core = window_attention_core_flops(seq_len, self.d_model, self.window_size)
        return linear_flops(self.qkv) + linear_flops(self.out) + core
