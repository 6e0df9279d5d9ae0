"""Mamba-2 (SSD) on the gated linear-attention kernel, with a per-head scalar decay."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import gated_linear_attention, signed_gated_linear_attention
from recall_lm.layers.contract import Mixer
from recall_lm.layers.dt_init import fill_dt_bias_
from recall_lm.layers.norms import GroupedRMSNorm
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.short_conv import ConvState, ShortConvolution
from recall_lm.layers.state import MixerState


@dataclass
class Mamba2State(MixerState):
    """S [B, H, N, P] (fp32): per head, the SSM state with d_state N rows and head_dim P columns; conv
    [B, d_conv - 1, d_inner + 2·G·N] the last inputs of the short convolution over (x, B, C)."""

    S: torch.Tensor
    conv: torch.Tensor


@register_mixer("mamba2")
class Mamba2(Mixer):
    """Mamba-2 (Dao & Gu, 2024, "Transformers are SSMs"), per head h (of group G(h) for B and C):

        h_t = exp(Δ_t A_h) h_{t−1} + Δ_t B_t x_tᵀ,   y_t = h_tᵀ C_t + D_h x_t

    with [z, x, B, C, Δ] = W_in u (B and C: ``n_groups`` groups of d_state, each shared by
    H / n_groups heads); (x, B, C) through a causal depthwise convolution (kernel ``d_conv``, bias) and
    SiLU; Δ = softplus(Δ + dt_bias); A_h = −exp(A_log_h). Then y = RMSNorm(y ⊙ SiLU(z)) (the reference's
    gated norm with its default ``norm_before_gate=False``, per group of d_inner / n_groups channels)
    and W_out. The SSD scan is ``gated_linear_attention`` with
    q = C, k = B, v = Δ·x, g = Δ·A per head and scale 1 (state [N, P] per head). Initialisation as in
    the reference: A ~ U(1, 16), Δ ~ log-uniform [1e-3, 0.1] (dt_bias = softplus⁻¹(Δ)), D = 1; A_log,
    dt_bias and D are never weight-decayed. d_inner = expand · d_model in heads of ``head_dim``.
    ``allow_neg_eigval`` (Grazzi et al., ICLR 2025): the transition exp(Δ_t A_h) becomes 2·exp(Δ_t A_h) − 1
    ∈ (−1, 1) (signed_gated_linear_attention), which lets a diagonal model count modulo 2.
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("out_proj",)
    no_weight_decay = ("A_log", "dt_bias", "D")

    def __init__(self, d_model: int, d_state: int = 64, head_dim: int = 64, expand: int = 2, d_conv: int = 4,
                 n_groups: int = 1, norm_eps: float = 1e-5, chunk_size: int = 64,
                 allow_neg_eigval: bool = False):
        super().__init__()
        d_inner = expand * d_model
        if d_state < 1 or head_dim < 1 or expand < 1:
            raise ValueError(
                f"mamba2: d_state, head_dim and expand must be ≥ 1, got {d_state}, {head_dim}, {expand}"
            )
        if d_inner % head_dim:
            raise ValueError(f"mamba2: head_dim={head_dim} must divide d_inner = expand·d_model = {d_inner}")
        if int(d_conv) != d_conv or d_conv < 2:
            raise ValueError(f"mamba2: d_conv must be an integer ≥ 2, got {d_conv}")
        if n_groups < 1 or (d_inner // head_dim) % n_groups:
            raise ValueError(
                f"mamba2: n_groups={n_groups} must be ≥ 1 and divide the {d_inner // head_dim} heads"
            )
        self.d_model, self.d_state, self.head_dim, self.d_inner = d_model, d_state, head_dim, d_inner
        self.num_heads, self.n_groups, self.chunk_size = d_inner // head_dim, n_groups, chunk_size
        self.allow_neg_eigval = allow_neg_eigval
        self.conv_dim = d_inner + 2 * n_groups * d_state
        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + self.num_heads, bias=False)
        self.conv = ShortConvolution(self.conv_dim, int(d_conv), bias=True, activation="silu")
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.D = nn.Parameter(torch.empty(self.num_heads))
        self.norm = GroupedRMSNorm(d_inner, n_groups, norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1, 16).log())
        fill_dt_bias_(self.dt_bias)
        self.D.fill_(1.0)

    def _ssm_inputs(self, u: torch.Tensor, conv_state, documents):
        """u [B, T, d_model] -> z [B, T, d_inner], x [B, T, H, P], the SSD's q = C, k = B ([B, T, H, N]),
        v = Δ·x [B, T, H, P], g = Δ·A [B, T, H] (fp32), and the convolution's new state."""
        Bsz, T, _ = u.shape
        H, P, N, G = self.num_heads, self.head_dim, self.d_state, self.n_groups
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, H], -1)
        xbc, conv_state = self.conv(xbc, conv_state, documents)
        x, Bm, Cm = xbc.split([self.d_inner, G * N, G * N], -1)
        f32 = torch.promote_types(u.dtype, torch.float32)
        dt = F.softplus(dt.to(f32) + self.dt_bias.to(f32))  # [B, T, H]
        g = -torch.exp(self.A_log.to(f32)) * dt
        x = x.view(Bsz, T, H, P)
        v = (x.to(f32) * dt[..., None]).to(x.dtype)
        # head h reads group h // (H / G): [B, T, G, N] -> [B, T, H, N]
        q = Cm.view(Bsz, T, G, 1, N).expand(Bsz, T, G, H // G, N).reshape(Bsz, T, H, N)
        k = Bm.view(Bsz, T, G, 1, N).expand(Bsz, T, G, H // G, N).reshape(Bsz, T, H, N)
        return z, x, q, k, v, g, conv_state

    def _ssm_output(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The SSD's y [B, T, H, P] -> the layer's output: D skip, gated RMSNorm, out_proj."""
        y = y + self.D.to(y.dtype)[:, None] * x
        y = self.norm(y.reshape(*y.shape[:2], self.d_inner) * F.silu(z))
        return self.out_proj(y)

    def forward(self, u: torch.Tensor, state: Mamba2State | None = None, documents=None):
        z, x, q, k, v, g, conv_state = self._ssm_inputs(
            u, None if state is None else ConvState(state.conv), documents
        )
        common = dict(scale=1.0, initial_state=None if state is None else state.S,
                      output_final_state=state is not None, chunk_size=self.chunk_size,
                      cu_seqlens=None if documents is None else documents.cu_seqlens)
        if self.allow_neg_eigval:
            y, final = signed_gated_linear_attention(q, k, v, 2 * torch.exp(g) - 1, **common)
        else:
            y, final = gated_linear_attention(q, k, v, g, **common)
        out = self._ssm_output(y, x, z)
        return out, (None if state is None else Mamba2State(final, conv_state.x))

    def flops_per_token(self, seq_len: int) -> float:
        """Analytic forward FLOPs per token (models/flops.py conventions)."""
        from recall_lm.layers.flops import chunked_linear_attention_flops, linear_flops

        conv = 2.0 * self.conv.kernel_size * self.conv_dim
        core = chunked_linear_attention_flops(
            seq_len, self.chunk_size, self.num_heads, self.d_state, self.head_dim
        )
        return linear_flops(self.in_proj) + linear_flops(self.out_proj) + conv + core

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> Mamba2State:
        S = torch.zeros(batch_size, self.num_heads, self.d_state, self.head_dim, device=device,
                        dtype=torch.promote_types(dtype, torch.float32))  # fp32, fp64 for fp64
        return Mamba2State(S, self.conv.init_state(batch_size, device, dtype).x)

    def state_size(self, seq_len: int = 1) -> int:
        return self.num_heads * self.d_state * self.head_dim + self.conv.state_size()
