"""Kimi Delta Attention: the gated delta rule with a per-key-channel decay (Kimi Linear, 2025)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import kda_delta_rule
from recall_lm.layers.deltanet import DeltaNet, DeltaState
from recall_lm.layers.dt_init import fill_dt_bias_
from recall_lm.layers.registry import register_mixer

GATES = ("softplus", "sigmoid")


@register_mixer("kda")
class KimiDeltaAttention(DeltaNet):
    """Kimi Delta Attention (Moonshot AI, 2025, "Kimi Linear: An Expressive, Efficient Attention
    Architecture"), per head:

        S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t / √d_k

    with one decay per key channel, α_t = exp(g_t), g_t ∈ R^{d_k}:

    * ``gate="softplus"`` (default): g_t = −exp(A_log) · softplus(W_f x_t + dt_bias), A ~ U(1, 16) per
      head (A_log = log A), dt_bias one per head and channel = softplus⁻¹(dt), dt log-uniform in
      [1e-3, 0.1] (fla's default);
    * ``gate="sigmoid"``: g_t = lower_bound · sigmoid(exp(A_log) · (W_f x_t + dt_bias)), so every log-decay
      lies in (lower_bound, 0) (``lower_bound`` < 0, default −5; fla's ``lower_bound`` / ``safe_gate``
      gate, A_log initialised to 0 as fla does there).

    W_f is low rank (d_model → d_v → H·d_k, fla's ``f_proj``); the output gate too (d_model → d_v →
    H·d_v with a bias): each head's output is RMSNorm(o) ⊙ sigmoid(W_g x). q, k, v, the short
    convolutions, L2-normalised q and k, β = sigmoid(W_β x) (2·sigmoid with ``allow_neg_eigval``) are
    DeltaNet's. The op is the DPLR delta rule (recall_lm.kernels.dplr.kda). fla's layer also offers
    grouped value heads (``num_v_heads`` > ``num_heads``); this one does not.
    Decoding state: ``DeltaState`` (S [B, H, d_k, d_v] and the convolutions' last inputs).
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
        allow_neg_eigval: bool = False,
        gate: str = "softplus",
        lower_bound: float = -5.0,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        expand_v: float = 1.0,
    ):
        if gate not in GATES:
            raise ValueError(f"kda: gate must be one of {GATES}, got {gate!r}")
        if gate == "sigmoid" and not lower_bound < 0:
            raise ValueError(f"kda: lower_bound must be < 0 (a log-decay), got {lower_bound}")
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
        self.gate, self.lower_bound = gate, float(lower_bound)
        H, K, V = self.num_heads, self.head_dim, self.value_dim
        self.f_proj = nn.Sequential(nn.Linear(d_model, V, bias=False), nn.Linear(V, H * K, bias=False))
        self.g_proj = nn.Sequential(nn.Linear(d_model, V, bias=False), nn.Linear(V, H * V, bias=True))
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H * K))
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        """A_log = log U(1, 16) (0 for the sigmoid gate); dt_bias = softplus⁻¹(dt), dt log-uniform in
        [1e-3, 0.1] and at least 1e-4."""
        if self.gate == "sigmoid":
            self.A_log.zero_()
        else:
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1, 16).log())
        fill_dt_bias_(self.dt_bias)

    def _channel_log_decay(self, x: torch.Tensor) -> torch.Tensor:
        """g [B, T, H, d_k] in fp32 at least."""
        f32 = torch.promote_types(x.dtype, torch.float32)
        f = (self.f_proj(x).to(f32) + self.dt_bias.to(f32)).unflatten(-1, (self.num_heads, self.head_dim))
        A = self.A_log.to(f32).exp()[:, None]
        if self.gate == "sigmoid":
            return self.lower_bound * torch.sigmoid(A * f)
        return -A * F.softplus(f)

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.o_norm(o) * torch.sigmoid(self.g_proj(x)).view(*o.shape)

    def forward(self, x: torch.Tensor, state: DeltaState | None = None, documents=None):
        B, T, _ = x.shape
        q, k, v, histories = self._qkv(x, state, documents)
        o, final = kda_delta_rule(
            q,
            k,
            v,
            self._beta(x).to(q.dtype),
            self._channel_log_decay(x),
            initial_state=None if state is None else state.S,
            output_final_state=state is not None,
            chunk_size=self.chunk_size,
            cu_seqlens=None if documents is None else documents.cu_seqlens,
        )
        y = self.o_proj(self._output(o, x).reshape(B, T, -1))
        return y, (None if state is None else DeltaState(final, *histories))

    def flops_per_token(self, seq_len: int) -> float:
        """Projections (incl. the low-rank gates), convolutions, and the chunked DPLR core counted as
        twice the delta rule's (four score matrices where the delta rule has two)."""
        from recall_lm.layers.flops import chunked_delta_rule_flops, linear_flops, short_conv_flops

        total = sum(
            linear_flops(m)
            for m in (
                self.q_proj,
                self.k_proj,
                self.v_proj,
                self.b_proj,
                self.o_proj,
                *self.f_proj,
                *self.g_proj,
            )
        )
        if self.use_short_conv:
            total += sum(short_conv_flops(c) for c in (self.q_conv, self.k_conv, self.v_conv))
        core = chunked_delta_rule_flops(
            seq_len, self.chunk_size, self.num_heads, self.head_dim, self.value_dim
        )
        return total + 2 * core
