"""Multi-head linear attention with a selectable feature map, on the gated linear-attention kernel."""
from __future__ import annotations

import torch
from torch import nn

from recall_lm.kernels.ops import gated_linear_attention
from recall_lm.layers.attention import split_heads
from recall_lm.layers.contract import Mixer
from recall_lm.layers.feature_maps import build_feature_map
from recall_lm.layers.flops import chunked_linear_attention_flops, default_chunk_size, linear_flops
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.state import RecurrentState


@register_mixer("linear_attention")
class LinearAttention(Mixer):
    """o_t = φ(q_t) S_t, S_t = Σ_{s≤t} φ(k_s)ᵀ v_s per head (Katharopoulos et al., 2020).

    With ``normalize`` the output is divided by φ(q_t)·Σ_{s≤t} φ(k_s) + eps; the sum rides in the
    same kernel pass as an extra value column of ones, so the state is [B, H, F, D_v + 1] with
    F = feature_map.output_dim(feature_dim). q and k are projected to ``feature_dim`` per head before
    the map; values keep ``d_model / num_heads`` per head. No positional encoding (the recurrence
    orders the tokens). x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("out",)

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        feature_map: str = "elu",
        feature_dim: int | None = None,
        normalize: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim = split_heads(d_model, num_heads, "linear_attention")
        if feature_dim is not None and (int(feature_dim) != feature_dim or feature_dim < 1):
            raise ValueError(
                f"linear_attention: feature_dim must be an integer ≥ 1 (or unset: the head dim), "
                f"got {feature_dim}"
            )
        self.feature_dim = feature_dim or self.head_dim
        self.feature_map = build_feature_map(feature_map)
        self.expanded_dim = self.feature_map.output_dim(self.feature_dim)
        self.normalize, self.eps = normalize, eps
        self.qk = nn.Linear(d_model, 2 * num_heads * self.feature_dim, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None, documents=None):
        B, T, _ = x.shape
        q, k = self.qk(x).view(B, T, 2, self.num_heads, self.feature_dim).unbind(2)
        q, k = self.feature_map(q), self.feature_map(k)
        v = self.v(x).view(B, T, self.num_heads, self.head_dim)
        if self.normalize:
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        o, final = gated_linear_attention(
            q, k, v, scale=1.0,
            initial_state=None if state is None else state.S,
            output_final_state=state is not None,
            cu_seqlens=None if documents is None else documents.cu_seqlens,
        )
        if self.normalize:
            o = o[..., :-1] / (o[..., -1:] + self.eps)
        y = self.out(o.reshape(B, T, self.d_model))
        return y, (None if state is None else RecurrentState(final))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> RecurrentState:
        v_dim = self.head_dim + int(self.normalize)
        return RecurrentState(
            torch.zeros(batch_size, self.num_heads, self.expanded_dim, v_dim, device=device)
        )

    def state_size(self, seq_len: int = 1) -> int:
        return self.num_heads * self.expanded_dim * (self.head_dim + int(self.normalize))

    def flops_per_token(self, seq_len: int) -> float:
        chunk = default_chunk_size(gated_linear_attention)
        value_dim = self.head_dim + int(self.normalize)
        core = chunked_linear_attention_flops(seq_len, chunk, self.num_heads, self.expanded_dim, value_dim)
        return linear_flops(self.qk) + linear_flops(self.v) + linear_flops(self.out) + core
