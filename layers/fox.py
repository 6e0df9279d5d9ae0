"""The Forgetting Transformer's attention (FoX; Lin et al., ICLR 2025), with the parts of its "Pro" block.

Per head, softmax attention whose scores carry the cumulative log forget gate, and no positions:

    f_t = σ(w_fᵀ x_t + b_f),   c_t = Σ_{l ≤ t} log f_l,
    o_i = Σ_{j ≤ i} softmax_j(q_i·k_j / √D + c_i − c_j) v_j

Pro parts, each an option (fla's ``ForgettingAttention`` has the first two, named as here):
``qk_norm`` (RMSNorm of q and k per head, a weight per channel), ``output_gate`` (o ⊙ σ(W_g x)),
``output_norm`` (RMSNorm of each head's output, before the gate), ``kv_shift`` (the data-dependent token
shift of keys and values: k_t = α_t k̃_{t−1} + (1 − α_t) k̃_t with α_t = σ(w_αᵀ x_t) per head, k̃ = W_k x,
and likewise v with its own α).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import forgetting_attention
from recall_lm.layers.attention import split_heads
from recall_lm.layers.contract import Mixer
from recall_lm.layers.flops import causal_attention_core_flops, linear_flops, window_attention_core_flops
from recall_lm.layers.norms import GroupedRMSNorm
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.state import KVCache


@dataclass
class ForgettingCache(KVCache):
    """A :class:`~recall_lm.layers.state.KVCache` (keys, values ``[B, Hk, capacity, D]`` grown in place, of
    the ``length`` tokens kept: all, or the last ``window_size``) plus bias ``[B, H, length]`` = c_last − c_j
    (fp32, ≤ 0: each key's gate bias for the next query before its own gate), and with ``kv_shift`` the
    last token's unshifted k̃, ṽ ``[B, Hk, D]`` (else empty)."""

    bias: torch.Tensor | None = None
    k_prev: torch.Tensor | None = None
    v_prev: torch.Tensor | None = None

    def numel_per_sequence(self) -> int:
        return 2 * self.length * self.k.shape[1] * self.k.shape[3] + sum(t[0].numel() for t in self._extra())

    def nbytes_per_sequence(self) -> int:
        kv = 2 * self.length * self.k.shape[1] * self.k.shape[3] * self.k.element_size()
        return kv + sum(t[0].numel() * t.element_size() for t in self._extra())

    def _extra(self) -> tuple[torch.Tensor, ...]:
        return self.bias, self.k_prev, self.v_prev


@register_mixer("fox")
class ForgettingAttention(Mixer):
    """FoX attention. x ``[B, T, d_model]`` -> y ``[B, T, d_model]``.

    ``num_kv_heads`` (default ``num_heads``) divides ``num_heads`` (grouped keys and values);
    ``window_size`` limits each query to its last ``window_size`` keys. Parameter names follow fla's
    layer (q_proj, k_proj, v_proj, f_proj, g_proj, o_proj, q_norm, k_norm); the Pro parts fla lacks add
    o_norm and k_shift_proj / v_shift_proj. Decoding state: the keys, values and gate biases of every
    token kept, so it grows with the context (``state_size(seq_len)``)."""

    residual_projections = ("o_proj",)

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        num_kv_heads: int | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        window_size: int | None = None,
        output_gate: bool = False,
        output_norm: bool = False,
        kv_shift: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.head_dim = split_heads(d_model, num_heads, "fox")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"fox: num_kv_heads={num_kv_heads} must be ≥ 1 and divide num_heads={num_heads}")
        if window_size is not None and (isinstance(window_size, bool) or not isinstance(window_size, int)
                                        or window_size < 1):
            raise ValueError(f"fox: window_size must be None or an integer ≥ 1, got {window_size!r}")
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.window_size, self.kv_shift = window_size, kv_shift
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, kv_dim, bias=qkv_bias)
        self.f_proj = nn.Linear(d_model, num_heads, bias=True)
        self.g_proj = nn.Linear(d_model, d_model, bias=False) if output_gate else None
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.q_norm = GroupedRMSNorm(d_model, num_heads, norm_eps) if qk_norm else None
        self.k_norm = GroupedRMSNorm(kv_dim, num_kv_heads, norm_eps) if qk_norm else None
        self.o_norm = GroupedRMSNorm(d_model, num_heads, norm_eps) if output_norm else None
        self.k_shift_proj = nn.Linear(d_model, num_kv_heads, bias=False) if kv_shift else None
        self.v_shift_proj = nn.Linear(d_model, num_kv_heads, bias=False) if kv_shift else None

    def _shift(self, x, raw, proj, prev, documents):
        """α_t x̃_{t−1} + (1 − α_t) x̃_t per head; x̃_{−1} = ``prev`` (zeros at a sequence's or a
        document's start). raw ``[B, T, Hk, D]``, prev ``[B, Hk, D]`` or None."""
        cdt = torch.promote_types(raw.dtype, torch.float32)
        alpha = torch.sigmoid(proj(x).to(cdt))[..., None]  # [B, T, Hk, 1]
        before = torch.cat([raw.new_zeros(raw[:, :1].shape) if prev is None else prev[:, None].to(raw.dtype),
                            raw[:, :-1]], 1)
        if documents is not None:  # no shift across a document boundary
            before = before.masked_fill((documents.positions == 0).view(1, -1, 1, 1), 0.0)
        return (alpha * before.to(cdt) + (1 - alpha) * raw.to(cdt)).to(raw.dtype)

    def forward(self, x: torch.Tensor, state: ForgettingCache | None = None, documents=None):
        B, T, _ = x.shape
        q = self.q_proj(x)
        k_raw = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        v_raw = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        k, v = k_raw, v_raw
        if self.kv_shift:
            k = self._shift(x, k_raw, self.k_shift_proj, None if state is None else state.k_prev, documents)
            v = self._shift(x, v_raw, self.v_shift_proj, None if state is None else state.v_prev, documents)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k.flatten(-2)).unflatten(-1, (self.num_kv_heads, self.head_dim))
        q = q.unflatten(-1, (self.num_heads, self.head_dim))
        log_f = F.logsigmoid(self.f_proj(x).to(torch.promote_types(x.dtype, torch.float32)))  # [B, T, H]
        new_state = None if state is None else self._advance(state, k, v, log_f, k_raw, v_raw)
        if state is None or state.length == 0:
            cu = None if documents is None else documents.cu_seqlens
            o = forgetting_attention(q, k, v, log_f, window_size=self.window_size, cu_seqlens=cu)
        else:
            o = self._continue(q, new_state)
        if new_state is not None:
            new_state = self._trim(new_state)
        o = o.flatten(-2)
        if self.o_norm is not None:
            o = self.o_norm(o)
        if self.g_proj is not None:
            o = o * torch.sigmoid(self.g_proj(x))
        return self.o_proj(o), new_state

    def _continue(self, q, state: ForgettingCache) -> torch.Tensor:
        """New queries ``[B, T, H, D]`` after the tokens before them, against ``state`` already advanced
        over the new tokens: bias c_i − c_j = (c_last − c_j) − (c_last − c_i) from the stored biases, causal
        and windowed by absolute position, one SDPA call on the cache's buffers. Returns ``[B, T, H, D]``."""
        T, L = q.shape[1], state.length
        fdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        bias = state.bias.to(fdt)  # [B, H, L]
        mask = bias[:, :, None, :] - bias[:, :, L - T :, None]  # [B, H, T, L]
        i = torch.arange(L - T, L, device=q.device)[:, None]  # query i sits at cache position L − T + i
        j = torch.arange(L, device=q.device)[None, :]
        hidden = j > i
        if self.window_size is not None:
            hidden |= i - j >= self.window_size
        if T > 1 or self.window_size is not None:
            mask = mask.masked_fill(hidden, float("-inf"))
        keys, values = state.keys().to(fdt), state.values().to(fdt)
        o = F.scaled_dot_product_attention(q.to(fdt).transpose(1, 2), keys, values, attn_mask=mask,
                                           enable_gqa=self.num_heads != self.num_kv_heads)
        return o.transpose(1, 2).to(q.dtype)

    def _advance(self, state: ForgettingCache, k, v, log_f, k_raw, v_raw) -> ForgettingCache:
        """The cache after T new tokens (k, v ``[B, T, Hk, D]``, log_f ``[B, T, H]``), before any window
        trims it: the new queries may look back ``window_size − 1`` tokens past the kept ones."""
        fdt = state.bias.dtype
        cs = log_f.to(fdt).cumsum(1).transpose(1, 2)  # [B, H, T]
        last = cs[..., -1:]
        bias = torch.cat([state.bias + last, last - cs], -1)  # c_new_last − c_j
        kv = state.append(k.transpose(1, 2), v.transpose(1, 2))
        k_prev, v_prev = state.k_prev, state.v_prev
        if self.kv_shift:
            k_prev, v_prev = k_raw[:, -1].to(state.k.dtype), v_raw[:, -1].to(state.v.dtype)
        return ForgettingCache(kv.k, kv.v, kv.length, kv.frontier, bias, k_prev, v_prev)

    def _trim(self, state: ForgettingCache) -> ForgettingCache:
        """With a window, only the last ``window_size`` tokens (copied: O(window) per step); else as is."""
        W = self.window_size
        if W is None or state.length <= W:
            return state
        keys, values = (t[:, :, state.length - W : state.length].clone() for t in (state.k, state.v))
        return ForgettingCache(keys, values, W, [W], state.bias[..., -W:], state.k_prev, state.v_prev)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> ForgettingCache:
        kv = torch.zeros(batch_size, self.num_kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        fdt = torch.float64 if dtype == torch.float64 else torch.float32
        bias = torch.zeros(batch_size, self.num_heads, 0, device=device, dtype=fdt)
        prev_shape = (batch_size, self.num_kv_heads, self.head_dim) if self.kv_shift else (batch_size, 0)
        prev = torch.zeros(*prev_shape, device=device, dtype=dtype)
        return ForgettingCache(kv, kv.clone(), 0, [0], bias, prev, prev.clone())

    def state_size(self, seq_len: int = 1) -> int:
        """Numbers held per sequence after ``seq_len`` tokens: keys, values and one gate bias per query head
        for each token kept (all of them, or the last ``window_size``), plus the last k̃, ṽ with
        ``kv_shift``."""
        kept = seq_len if self.window_size is None else min(seq_len, self.window_size)
        kv_dim = self.num_kv_heads * self.head_dim
        return kept * (2 * kv_dim + self.num_heads) + (2 * kv_dim if self.kv_shift else 0)

    def state_bytes(self, seq_len: int, dtype: torch.dtype) -> int:
        """Bytes per sequence after ``seq_len`` tokens: keys, values (and the shift's k̃, ṽ) in ``dtype``,
        the gate biases in fp32 (fp64 for fp64)."""
        kept = seq_len if self.window_size is None else min(seq_len, self.window_size)
        kv_dim = self.num_kv_heads * self.head_dim
        bias_bytes = 8 if dtype == torch.float64 else 4
        shift = 2 * kv_dim if self.kv_shift else 0
        return (kept * 2 * kv_dim + shift) * dtype.itemsize + kept * self.num_heads * bias_bytes

    def flops_per_token(self, seq_len: int) -> float:
        projections = [self.q_proj, self.k_proj, self.v_proj, self.f_proj, self.o_proj, self.g_proj,
                       self.k_shift_proj, self.v_shift_proj]
        core = (causal_attention_core_flops(seq_len, self.d_model) if self.window_size is None
                else window_attention_core_flops(seq_len, self.d_model, self.window_size))
        return sum(linear_flops(p) for p in projections if p is not None) + core
