"""Log-linear Mamba-2 (Guo et al., 2025, "Log-Linear Attention"): Mamba-2 whose single state becomes a
Fenwick tree of O(log T) states, each level weighted per token."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import log_linear_attention
from recall_lm.layers.mamba2 import Mamba2
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.short_conv import ConvState
from recall_lm.layers.state import MixerState


@dataclass
class LogLinearState(MixerState):
    """S [B, H, S, N, P] (fp32): the Fenwick states of levels 1 … S (slot ℓ − 1; empty where bit ℓ − 1 of
    ``seen`` is clear), conv [B, d_conv − 1, d_inner + 2·G·N] the short convolution's last inputs, ``seen``
    the tokens consumed (every sequence of the batch at the same position)."""

    S: torch.Tensor
    conv: torch.Tensor
    seen: int = 0


@register_mixer("loglinear_mamba2")
class LogLinearMamba2(Mamba2):
    """Mamba-2 (``layers/mamba2.py``: projections, convolution, Δ, A, D, gated norm) with log-linear
    attention as its scan (``recall_lm.kernels.log_linear``, q = C, k = B, v = Δ·x, g = Δ·A, scale 1):

        y_t = Σ_{c ≤ t} exp(Σ_{c < s ≤ t} Δ_s A) λ_t[ℓ(t, c)] (C_t·B_c) Δ_c x_c + D x_t

    with ℓ(t, c) the Fenwick level of token c for query t and λ_t = softplus(L_h ⊙ (W_λ u_t)) ≥ 0 per
    head and level (fla's ``LogLinearMamba2``: its in_proj's last H·``num_levels`` rows are our
    ``level_proj``, its ``L`` ours, initialised to ones). ``num_levels`` (fla: 15) bounds the context:
    a sequence of T tokens needs bit_length(T − 1) + 1 levels, 15 covers 16,384 tokens.

    Decoding state: one [N, P] state per Fenwick level per head, bit_length(T) of them after T tokens (the
    live ones are popcount(T)): ``state_size(seq_len)`` grows as log T.
    x: [B, T, d_model] -> y: [B, T, d_model]."""

    no_weight_decay = ("A_log", "dt_bias", "D", "L")

    def __init__(self, d_model: int, d_state: int = 64, head_dim: int = 64, expand: int = 2, d_conv: int = 4,
                 n_groups: int = 1, norm_eps: float = 1e-5, chunk_size: int = 64, num_levels: int = 15):
        if int(num_levels) != num_levels or num_levels < 1:
            raise ValueError(f"loglinear_mamba2: num_levels must be an integer ≥ 1, got {num_levels}")
        if chunk_size < 1 or chunk_size & (chunk_size - 1):
            raise ValueError(f"loglinear_mamba2: chunk_size must be a power of two, got {chunk_size}")
        super().__init__(d_model, d_state, head_dim, expand, d_conv, n_groups, norm_eps, chunk_size)
        self.num_levels = int(num_levels)
        self.level_proj = nn.Linear(d_model, self.num_heads * self.num_levels, bias=False)
        self.L = nn.Parameter(torch.ones(self.num_heads, self.num_levels))

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        super().reset_mixer_parameters()
        if hasattr(self, "L"):
            self.L.fill_(1.0)

    def forward(self, u: torch.Tensor, state: LogLinearState | None = None, documents=None):
        end = u.shape[1] + (0 if state is None else state.seen)
        needed = max(end - 1, 0).bit_length() + 1
        if documents is None and needed > self.num_levels:
            raise ValueError(f"loglinear_mamba2: num_levels={self.num_levels} covers "
                             f"{2 ** (self.num_levels - 1):,} tokens, this call reaches token {end:,}: set "
                             f"num_levels ≥ {needed}")
        z, x, q, k, v, g, conv_state = self._ssm_inputs(
            u, None if state is None else ConvState(state.conv), documents
        )
        f32 = torch.promote_types(u.dtype, torch.float32)
        dl = self.level_proj(u).unflatten(-1, (self.num_heads, self.num_levels)).to(f32)
        lam = F.softplus(self.L.to(f32) * dl)  # [B, T, H, num_levels]
        if state is None:
            cu = None if documents is None else documents.cu_seqlens
            y, _ = log_linear_attention(q, k, v, g, lam, scale=1.0, cu_seqlens=cu, chunk_size=self.chunk_size)
            return self._ssm_output(y, x, z), None
        y, S = log_linear_attention(q, k, v, g, lam, scale=1.0, initial_state=state.S, start=state.seen,
                                    output_final_state=True)
        return self._ssm_output(y, x, z), LogLinearState(S, conv_state.x, state.seen + u.shape[1])

    def flops_per_token(self, seq_len: int) -> float:
        """The chunked algorithm per token: projections and convolution as Mamba-2; within a chunk of C the
        masked scores and their product with v (2·C·(N + P) per head, halved for causality), across chunks
        one read of each of the ≈ log₂(T / C) level states (2·N·P per head each) and the chunk state's
        write (2·N·P per head)."""
        from recall_lm.layers.flops import linear_flops

        C = min(self.chunk_size, max(seq_len, 1))
        levels = max(seq_len - 1, 0).bit_length() + 1 - (C.bit_length() - 1)
        state_io = 2 * self.d_state * self.head_dim * (max(levels, 0) + 1)
        per_head = C * (self.d_state + self.head_dim) + state_io
        conv = 2.0 * self.conv.kernel_size * self.conv_dim
        projections = sum(linear_flops(p) for p in (self.in_proj, self.out_proj, self.level_proj))
        return projections + conv + self.num_heads * per_head

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> LogLinearState:
        S = torch.zeros(batch_size, self.num_heads, 0, self.d_state, self.head_dim, device=device,
                        dtype=torch.promote_types(dtype, torch.float32))
        return LogLinearState(S, self.conv.init_state(batch_size, device, dtype).x, 0)

    def state_size(self, seq_len: int = 1) -> int:
        """Numbers held after ``seq_len`` tokens: bit_length(seq_len) level states of H·N·P (the Fenwick
        slots up to the highest level reached) and the convolution's window."""
        return seq_len.bit_length() * self.num_heads * self.d_state * self.head_dim + self.conv.state_size()
