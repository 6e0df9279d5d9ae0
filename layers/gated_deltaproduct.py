"""Gated DeltaProduct: several delta-rule steps per token, a product of generalised Householders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import gated_delta_rule
from recall_lm.layers.deltanet import DeltaNet, DeltaState
from recall_lm.layers.dt_init import fill_dt_bias_
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.short_conv import ShortConvolution


@register_mixer("gated_deltaproduct")
class GatedDeltaProduct(DeltaNet):
    """Gated DeltaProduct (Siems et al., 2025, "DeltaProduct: Improving State-Tracking in Linear RNNs via
    Householder Products"), per head, with n_h = ``num_householder`` keys, values and βs per token:

        S_{t,0} = α_t S_{t−1},  S_{t,j} = (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S_{t,j−1} + β_{t,j} k_{t,j} v_{t,j}ᵀ
        S_t = S_{t,n_h}

    (the transition is a product of n_h generalised Householders times the gate);
    o_t = S_tᵀ q_t / √d_k read once, after the last step. It runs on the gated delta-rule op
    over n_h·T interleaved steps (the gate on each token's first step, q on its last, the output of the
    last kept). ``use_forget_gate`` (default True): Gated DeltaNet's α_t = exp(−exp(A_log)·softplus(W_a x
    + dt_bias)) and its init (A ~ U(0, 16), dt log-uniform in [1e-3, 0.1]); False: α_t = 1 (DeltaProduct).
    ``allow_neg_eigval`` (default True, as fla): β = 2·sigmoid, each Householder's eigenvalue 1 − β‖k‖²
    in (−1, 1]. ``output_gate`` (default True): RMSNorm(o) ⊙ SiLU(W_g x). Projections of k, v, β are
    n_h times as wide, laid out (step, head, channel) as fla's; everything else is DeltaNet's.
    Decoding state: ``DeltaState`` (S [B, H, d_k, d_v] and the convolutions' last inputs; the k and v
    histories are n_h times as wide). x: [B, T, d_model] -> y: [B, T, d_model].
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        head_dim: int | None = None,
        num_householder: int = 2,
        use_forget_gate: bool = True,
        allow_neg_eigval: bool = True,
        output_gate: bool = True,
        use_short_conv: bool = True,
        conv_size: int = 4,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        expand_v: float = 1.0,
    ):
        if int(num_householder) != num_householder or num_householder < 1:
            raise ValueError(
                f"gated_deltaproduct: num_householder must be an integer ≥ 1, got {num_householder}"
            )
        super().__init__(
            d_model,
            num_heads,
            head_dim,
            use_short_conv,
            conv_size,
            "l2",
            allow_neg_eigval,
            norm_eps,
            chunk_size,
            expand_v,
        )
        n = self.num_householder = int(num_householder)
        inner, value_inner = self.num_heads * self.head_dim, self.num_heads * self.value_dim
        self.k_proj = nn.Linear(d_model, n * inner, bias=False)
        self.v_proj = nn.Linear(d_model, n * value_inner, bias=False)
        self.b_proj = nn.Linear(d_model, n * self.num_heads, bias=False)
        if use_short_conv:
            self.k_conv = ShortConvolution(n * inner, int(conv_size), activation="silu")
            self.v_conv = ShortConvolution(n * value_inner, int(conv_size), activation="silu")
        self.use_forget_gate = use_forget_gate
        if use_forget_gate:
            self.a_proj = nn.Linear(d_model, self.num_heads, bias=False)
            self.A_log = nn.Parameter(torch.empty(self.num_heads))
            self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
            self.no_weight_decay = ("A_log", "dt_bias")
        self.g_proj = nn.Linear(d_model, value_inner, bias=False) if output_gate else None
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        """With the forget gate: A ~ U(0, 16) (A_log = log A), dt_bias = softplus⁻¹(dt), dt log-uniform in
        [1e-3, 0.1] and at least 1e-4."""
        if self.use_forget_gate:
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(0, 16).clamp_min(1e-4).log())
            fill_dt_bias_(self.dt_bias)

    def _interleaved(self, x: torch.Tensor, state: DeltaState | None, documents):
        """The n_h·T steps: q, k [B, n_h·T, H, d_k], v [B, n_h·T, H, d_v], β and g [B, n_h·T, H] (g None
        without the forget gate), and the new convolution histories."""
        B, T, _ = x.shape
        n, H = self.num_householder, self.num_heads
        (q, k, v), histories = self._convolved(x, state, documents)
        q = F.normalize(q.view(B, T, 1, H, -1), dim=-1)
        q = torch.cat([q.new_zeros(B, T, n - 1, H, self.head_dim), q], 2)  # read after the last step
        k = F.normalize(k.view(B, T, n, H, -1), dim=-1)
        beta = self._beta(x).view(B, T, n, H)
        g = None
        if self.use_forget_gate:
            f32 = torch.promote_types(x.dtype, torch.float32)
            g1 = -self.A_log.to(f32).exp() * F.softplus(self.a_proj(x).to(f32) + self.dt_bias.to(f32))
            g = torch.cat([g1[:, :, None], g1.new_zeros(B, T, n - 1, H)], 2)  # the gate before step 1
        steps = (q, k, v.view(B, T, n, H, -1), beta, g)
        return (*(None if s is None else s.flatten(1, 2) for s in steps), histories)

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.g_proj is None:
            return self.o_norm(o)
        return self.o_norm(o) * F.silu(self.g_proj(x)).view(*o.shape)

    def forward(self, x: torch.Tensor, state: DeltaState | None = None, documents=None):
        B, T, _ = x.shape
        n = self.num_householder
        q, k, v, beta, g, histories = self._interleaved(x, state, documents)
        o, final = gated_delta_rule(
            q,
            k,
            v,
            beta.to(q.dtype),
            g,
            initial_state=None if state is None else state.S,
            output_final_state=state is not None,
            chunk_size=self.chunk_size,
            cu_seqlens=None if documents is None else documents.cu_seqlens * n,
            backend="recurrent" if T == 1 else "auto",  # one token's n_h steps: no chunk to pad
        )
        o = o.unflatten(1, (T, n))[:, :, -1]
        y = self.o_proj(self._output(o, x).reshape(B, T, -1))
        return y, (None if state is None else DeltaState(final, *histories))

    def flops_per_token(self, seq_len: int) -> float:
        """Projections, convolutions and n_h steps of the chunked delta rule per token."""
        from recall_lm.layers.flops import chunked_delta_rule_flops, linear_flops, short_conv_flops

        n = self.num_householder
        total = sum(
            linear_flops(getattr(self, name, None))
            for name in ("q_proj", "k_proj", "v_proj", "b_proj", "o_proj", "a_proj", "g_proj")
        )
        if self.use_short_conv:
            total += sum(short_conv_flops(c) for c in (self.q_conv, self.k_conv, self.v_conv))
        core = chunked_delta_rule_flops(
            n * seq_len, self.chunk_size, self.num_heads, self.head_dim, self.value_dim
        )
        return total + n * core
