"""Gated DeltaNet: DeltaNet with Mamba-2's data-dependent decay and an output gate."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.layers.deltanet import DeltaNet
from recall_lm.layers.dt_init import fill_dt_bias_
from recall_lm.layers.registry import register_mixer


@register_mixer("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025, "Gated Delta Networks"), per head:

        S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t / √d_k

    with Mamba-2's decay α_t = exp(g_t), g_t = −exp(A_log) · softplus(W_a x_t + dt_bias): A ~ U(0, 16)
    per head (A_log = log A) and dt_bias = softplus⁻¹(dt), dt log-uniform in [1e-3, 0.1], neither
    weight-decayed (``no_weight_decay``). The output of each head is RMSNorm(o) ⊙ SiLU(W_g x)
    (``output_gate=False``: RMSNorm(o) alone, as Zoology's MQAR configuration runs it).
    Everything else (convolutions, L2-normalised q and k, β, ``allow_neg_eigval``) is DeltaNet's.
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    no_weight_decay = ("A_log", "dt_bias")

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        head_dim: int | None = None,
        use_short_conv: bool = True,
        conv_size: int = 4,
        qk_norm: str = "l2",
        allow_neg_eigval: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        output_gate: bool = True,
        expand_v: float = 1.0,
    ):
        super().__init__(d_model, num_heads, head_dim, use_short_conv, conv_size, qk_norm, allow_neg_eigval,
                         norm_eps, chunk_size, expand_v)
        self.a_proj = nn.Linear(d_model, num_heads, bias=False)
        self.g_proj = nn.Linear(d_model, num_heads * self.value_dim, bias=False) if output_gate else None
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        """A ~ U(0, 16) (A_log = log A), dt ~ log-uniform [1e-3, 0.1] with dt_bias = softplus⁻¹(dt)."""
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(0, 16).clamp_min(1e-4).log())
        fill_dt_bias_(self.dt_bias)

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor:
        f32 = torch.promote_types(x.dtype, torch.float32)  # fp32 at least, fp64 stays fp64
        a = self.a_proj(x).to(f32) + self.dt_bias.to(f32)
        return -self.A_log.to(f32).exp() * F.softplus(a)

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.g_proj is None:
            return self.o_norm(o)
        return self.o_norm(o) * F.silu(self.g_proj(x)).view(*o.shape)
