"""RetNet's multi-scale retention on the gated linear-attention kernel."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import gated_linear_attention
from recall_lm.layers.contract import Mixer
from recall_lm.layers.flops import chunked_linear_attention_flops, linear_flops
from recall_lm.layers.norms import RMSNorm
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.rotary import RotaryEmbedding
from recall_lm.layers.state import MixerState


@dataclass
class RetentionState(MixerState):
    """S: [B, H, K, V] fp32 retention memory; offset: [B] int64, the number of tokens seen (the rotary
    position of the next one)."""

    S: torch.Tensor
    offset: torch.Tensor


def _scaled_dim(d_model: int, expand: float, name: str, num_heads: int) -> int:
    dim = d_model * expand
    if dim <= 0 or not math.isclose(dim, round(dim)) or round(dim) % num_heads:
        raise ValueError(f"retnet: d_model * {name} = {d_model} * {expand} must be a positive integer "
                         f"divisible by num_heads={num_heads}")
    return round(dim)


@register_mixer("retnet")
class MultiScaleRetention(Mixer):
    """Multi-scale retention (Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large
    Language Models").

    Per head h with decay γ_h = 1 − 2^(−5−h):  o_n = Σ_{m≤n} γ_h^(n−m) (q_n · k_m) v_m · d_k^(−1/2),
    i.e. the parallel form (Q Kᵀ ⊙ D) V with D_nm = γ^(n−m) for n ≥ m (0 otherwise), the recurrence
    S_n = γ S_{n−1} + k_nᵀ v_n, o_n = q_n S_n, or the chunkwise mix of both, which is what runs here:
    the gated linear-attention kernel with the constant log-decay g = log γ_h. q and k are rotated by
    RoPE at absolute positions (the paper's xPos length-extrapolation factor is not applied), v and the
    swish gate have ``expand_v`` × d_model channels (2, as in the paper), the output of each head is
    RMS-normalised (the paper's per-head GroupNorm; it also cancels the paper's optional D / QKᵀ
    normalisations, which are therefore omitted), gated by swish(W_g x) and projected back.

    Decoding state: ``RetentionState`` (S [B, H, d_k, d_v] and the position counter offset [B]), so
    ``state_size() = H · d_k · d_v + 1``. x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("o_proj",)

    def __init__(self, d_model: int, num_heads: int = 1, expand_k: float = 1.0, expand_v: float = 2.0,
                 rotary_base: float = 10000.0, norm_eps: float = 1e-6, chunk_size: int = 64):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"retnet: num_heads={num_heads} must be ≥ 1")
        self.d_model, self.num_heads = d_model, num_heads
        self.key_dim = _scaled_dim(d_model, expand_k, "expand_k", num_heads)
        self.value_dim = _scaled_dim(d_model, expand_v, "expand_v", num_heads)
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        if self.head_k_dim % 2:
            raise ValueError(f"retnet: the key head dimension d_model * expand_k / num_heads = "
                             f"{self.head_k_dim} must be even for rotary positions")
        self.chunk_size = chunk_size
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)
        self.rotary = RotaryEmbedding(self.head_k_dim, base=rotary_base)
        self.head_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        # log γ_h as Python floats, so casting the module (e.g. to bf16) never rounds the decays
        self.log_decays = tuple(math.log1p(-(2.0 ** (-5 - h))) for h in range(num_heads))

    def forward(self, x: torch.Tensor, state: RetentionState | None = None, documents=None):
        B, T, _ = x.shape
        H = self.num_heads
        q = self.q_proj(x).view(B, T, H, self.head_k_dim)
        k = self.k_proj(x).view(B, T, H, self.head_k_dim)
        v = self.v_proj(x).view(B, T, H, self.head_v_dim)
        offset = 0 if state is None else state.offset
        positions = None if documents is None else documents.positions  # packed: rotary restarts per document
        q, k = self.rotary(q, offset, positions), self.rotary(k, offset, positions)
        g_dtype = torch.promote_types(x.dtype, torch.float32)
        g = torch.tensor(self.log_decays, device=x.device, dtype=g_dtype)[None, None].expand(B, T, H)
        o, final = gated_linear_attention(
            q, k, v, g, scale=self.head_k_dim ** -0.5,
            initial_state=None if state is None else state.S,
            output_final_state=state is not None, chunk_size=self.chunk_size,
            cu_seqlens=None if documents is None else documents.cu_seqlens,
        )
        o = self.head_norm(o).reshape(B, T, self.value_dim) * F.silu(self.g_proj(x))
        y = self.o_proj(o)
        return y, (None if state is None else RetentionState(final, state.offset + T))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> RetentionState:
        S = torch.zeros(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim, device=device,
                        dtype=torch.promote_types(dtype, torch.float32))  # fp32, fp64 for fp64
        return RetentionState(S, torch.zeros(batch_size, dtype=torch.long, device=device))

    def state_size(self, seq_len: int = 1) -> int:
        return self.num_heads * self.head_k_dim * self.head_v_dim + 1

    def flops_per_token(self, seq_len: int) -> float:
        projections = sum(
            linear_flops(p) for p in (self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.o_proj)
        )
        core = chunked_linear_attention_flops(
            seq_len, self.chunk_size, self.num_heads, self.head_k_dim, self.head_v_dim
        )
        return projections + core
