"""DeltaNet: linear attention whose state is written with the delta rule, on the gated delta-rule kernel."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import gated_delta_rule
from recall_lm.layers.contract import Mixer
from recall_lm.layers.norms import RMSNorm
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.short_conv import ConvState, ShortConvolution
from recall_lm.layers.state import MixerState

QK_NORMS = ("l2", "none")


@dataclass
class DeltaState(MixerState):
    """The delta-rule memory S [B, H, K, V] (fp32) and, with short convolutions, the last W-1 inputs of
    the q, k and v convolutions ([B, W-1, H·K], [B, W-1, H·K], [B, W-1, H·V]; None without)."""

    S: torch.Tensor
    q_conv: torch.Tensor | None = None
    k_conv: torch.Tensor | None = None
    v_conv: torch.Tensor | None = None


@register_mixer("deltanet")
class DeltaNet(Mixer):
    """DeltaNet (Schlag et al., 2021; Yang et al., 2024, "Parallelizing Linear Transformers with the
    Delta Rule over Sequence Length"), per head:

        S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t / √d_k

    q, k, v = SiLU(short_conv(W x)) (kernel ``conv_size``, 4; without ``use_short_conv``: SiLU(W x));
    q and k L2-normalised per head (``qk_norm="l2"``; "none" leaves them); β_t = sigmoid(W_β x_t) per
    head, or 2·sigmoid with ``allow_neg_eigval`` (eigenvalues of I − β k kᵀ in (−1, 1]); the output of
    each head RMS-normalised, then projected back. ``head_dim`` (d_k) defaults to d_model / num_heads; the
    value heads are ``expand_v`` times as wide (d_v; default 1, where fla's Gated DeltaNet uses 2).
    Decoding state: ``DeltaState`` (S [B, H, d_k, d_v] and the convolutions' last inputs).
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("o_proj",)

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
        expand_v: float = 1.0,
    ):
        super().__init__()
        name = self.mixer_name
        if num_heads < 1:
            raise ValueError(f"{name}: num_heads must be ≥ 1, got {num_heads}")
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(
                    f"{name}: num_heads={num_heads} must divide d_model={d_model} (or give head_dim)"
                )
            head_dim = d_model // num_heads
        if head_dim < 1:
            raise ValueError(f"{name}: head_dim must be ≥ 1, got {head_dim}")
        if qk_norm not in QK_NORMS:
            raise ValueError(f"{name}: qk_norm must be one of {QK_NORMS}, got {qk_norm!r}")
        if use_short_conv and (int(conv_size) != conv_size or conv_size < 2):
            raise ValueError(f"{name}: conv_size must be an integer ≥ 2, got {conv_size}")
        self.value_dim = round(expand_v * head_dim)
        if expand_v <= 0 or self.value_dim != expand_v * head_dim:
            raise ValueError(
                f"{name}: expand_v={expand_v} times head_dim={head_dim} must be a positive integer"
            )
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.qk_norm, self.allow_neg_eigval, self.chunk_size = qk_norm, allow_neg_eigval, chunk_size
        inner, value_inner = num_heads * head_dim, num_heads * self.value_dim
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, value_inner, bias=False)
        self.b_proj = nn.Linear(d_model, num_heads, bias=False)
        self.use_short_conv = use_short_conv
        if use_short_conv:
            self.q_conv, self.k_conv, self.v_conv = (ShortConvolution(n, int(conv_size), activation="silu")
                                                     for n in (inner, inner, value_inner))
        self.o_norm = RMSNorm(self.value_dim, norm_eps)
        self.o_proj = nn.Linear(value_inner, d_model, bias=False)

    def _convolved(self, x: torch.Tensor, state: DeltaState | None, documents=None):
        """The q, k, v projections after the short convolutions and SiLU, flat ([B, T, width] each), and
        the convolutions' new histories (None without them or without a state)."""
        projected = (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        if not self.use_short_conv:
            return tuple(F.silu(p) for p in projected), [None, None, None]
        convs = (self.q_conv, self.k_conv, self.v_conv)
        olds = (None, None, None) if state is None else (state.q_conv, state.k_conv, state.v_conv)
        outs = [conv(p, None if old is None else ConvState(old), documents)
                for conv, p, old in zip(convs, projected, olds)]
        return tuple(o for o, _ in outs), [None if h is None else h.x for _, h in outs]

    def _qkv(self, x: torch.Tensor, state: DeltaState | None, documents=None):
        """q, k, v [B, T, H, D] after the convolutions, SiLU and the q/k norm; the new conv histories."""
        B, T, _ = x.shape
        projected, histories = self._convolved(x, state, documents)
        q, k, v = (p.view(B, T, self.num_heads, -1) for p in projected)
        if self.qk_norm == "l2":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return q, k, v, histories

    def _beta(self, x: torch.Tensor) -> torch.Tensor:
        beta = torch.sigmoid(self.b_proj(x).to(torch.promote_types(x.dtype, torch.float32)))
        return 2 * beta if self.allow_neg_eigval else beta

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        return None  # DeltaNet does not forget; Gated DeltaNet overrides this

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.o_norm(o)

    def forward(self, x: torch.Tensor, state: DeltaState | None = None, documents=None):
        B, T, _ = x.shape
        q, k, v, histories = self._qkv(x, state, documents)
        o, final = gated_delta_rule(
            q, k, v, self._beta(x).to(q.dtype), self._log_decay(x),
            initial_state=None if state is None else state.S, output_final_state=state is not None,
            chunk_size=self.chunk_size, cu_seqlens=None if documents is None else documents.cu_seqlens,
        )
        y = self.o_proj(self._output(o, x).reshape(B, T, -1))
        return y, (None if state is None else DeltaState(final, *histories))

    def flops_per_token(self, seq_len: int) -> float:
        """Analytic forward FLOPs per token (models/flops.py conventions)."""
        from recall_lm.layers.flops import chunked_delta_rule_flops, linear_flops

        H, D = self.num_heads, self.head_dim
        total = sum(
            linear_flops(getattr(self, n, None))
            for n in ("q_proj", "k_proj", "v_proj", "b_proj", "o_proj", "a_proj", "g_proj")
        )
        if self.use_short_conv:
            total += sum(2.0 * c.kernel_size * c.dim for c in (self.q_conv, self.k_conv, self.v_conv))
        return total + chunked_delta_rule_flops(seq_len, self.chunk_size, H, D, self.value_dim)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> DeltaState:
        H, D = self.num_heads, self.head_dim
        S = torch.zeros(batch_size, H, D, self.value_dim, device=device,
                        dtype=torch.promote_types(dtype, torch.float32))  # fp32, fp64 for fp64
        state = DeltaState(S)
        if self.use_short_conv:
            state.q_conv, state.k_conv, state.v_conv = (
                conv.init_state(batch_size, device, dtype).x
                for conv in (self.q_conv, self.k_conv, self.v_conv)
            )
        return state

    def state_size(self, seq_len: int = 1) -> int:
        convs = (
            sum(c.state_size() for c in (self.q_conv, self.k_conv, self.v_conv)) if self.use_short_conv else 0
        )
        return self.num_heads * self.head_dim * self.value_dim + convs
