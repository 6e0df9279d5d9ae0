"""RWKV-6 ("Finch"): the time-mix mixer ``rwkv6`` on the gated linear-attention kernel, and the
channel-mix ``rwkv6_cmix`` that fills a block's MLP slot. Both follow RWKV-LM's RWKV-v6 model
(parameter names, formulas and initialisation)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import gated_linear_attention
from recall_lm.layers.contract import Mixer
from recall_lm.layers.flops import chunked_linear_attention_flops, linear_flops
from recall_lm.layers.mlp import register_mlp
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.state import MixerState
from recall_lm.layers.token_shift import TokenShiftState, token_shift


@dataclass
class RWKV6State(MixerState):
    """S: [B, H, N, N] fp32 wkv memory; shift: [B, d_model] the previous token's input."""

    S: torch.Tensor
    shift: torch.Tensor


def _check_layer(layer_idx: int, n_layers: int, name: str) -> None:
    if n_layers < 1 or not 0 <= layer_idx < n_layers:
        raise ValueError(f"{name}: need 0 ≤ layer_idx < n_layers, got layer_idx={layer_idx}, "
                         f"n_layers={n_layers}")


def _layer_ratios(layer_idx: int, n_layers: int) -> tuple[float, float]:
    """RWKV-LM's ratio_0_to_1 = l/(L−1) (0 for a single layer) and ratio_1_to_almost0 = 1 − l/L."""
    return (layer_idx / (n_layers - 1) if n_layers > 1 else 0.0), 1.0 - layer_idx / n_layers


def _channel_fraction(d: int, device) -> torch.Tensor:
    """RWKV-LM's ``ddd``: i / d for channel i, [d]."""
    return torch.arange(d, dtype=torch.float32, device=device) / d


@register_mixer("rwkv6")
class RWKV6TimeMix(Mixer):
    """RWKV-6 time-mix (Peng et al., 2024, "Eagle and Finch: RWKV with Matrix-Valued States and Dynamic
    Recurrence").

    With x' the previous token's input (0 before the first) and Δ = x' − x, the data-dependent lerp
    gives x_* = x + Δ ⊙ (μ_* + m_*) for * in {w, k, v, r, g}, where m = tanh((x + Δ ⊙ μ_x) A) B (LoRA of
    rank ``mix_lora_rank``). Then r, k, v = W_r x_r, W_k x_k, W_v x_v; the per-channel decay is
    w_t = time_decay + tanh(x_w A_w) B_w (rank ``decay_lora_rank``), and per head of size N
    S_t = diag(exp(−exp(w_t))) S_{t−1} + k_tᵀ v_t,  o_t = r_t (S_{t−1} + diag(u) k_tᵀ v_t)
    with the per-channel bonus u (``time_faaaa``) and no 1/√N scaling: the kernel's u path with
    g = −exp(w), scale 1. The output is GroupNorm'd per head (eps 64e-5 = 1e-5 · head_size_divisor², as
    in RWKV-LM), multiplied by silu(W_g x_g) and projected. Initialisation follows RWKV-LM's v6 model
    and depends on ``layer_idx`` / ``n_layers`` (DecoderLM passes them); see ``reset_mixer_parameters``.

    Decoding state: ``RWKV6State`` (S [B, H, N, N], shift [B, d_model]), so
    ``state_size() = H · N² + d_model``. x: [B, T, d_model] -> y: [B, T, d_model].
    """

    keep_fp32_under_fsdp = True  # its log-decays / bonus would lose precision in bf16

    def __init__(self, d_model: int, head_size: int = 64, mix_lora_rank: int = 32, decay_lora_rank: int = 64,
                 norm_eps: float = 64e-5, layer_idx: int = 0, n_layers: int = 1, chunk_size: int = 64):
        super().__init__()
        if head_size < 1 or d_model % head_size:
            raise ValueError(f"rwkv6: head_size={head_size} must be ≥ 1 and divide d_model={d_model}")
        for name, rank in (("mix_lora_rank", mix_lora_rank), ("decay_lora_rank", decay_lora_rank)):
            if rank < 1:
                raise ValueError(f"rwkv6: {name}={rank} must be ≥ 1")
        _check_layer(layer_idx, n_layers, "rwkv6")
        C = d_model
        self.d_model, self.head_size, self.num_heads = C, head_size, C // head_size
        self.mix_lora_rank, self.chunk_size = mix_lora_rank, chunk_size
        self.layer_idx, self.n_layers = layer_idx, n_layers
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.zeros(C)))
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, 5 * mix_lora_rank))
        self.time_maa_w2 = nn.Parameter(torch.zeros(5, mix_lora_rank, C))
        self.time_decay = nn.Parameter(torch.zeros(C))
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, decay_lora_rank))
        self.time_decay_w2 = nn.Parameter(torch.zeros(decay_lora_rank, C))
        self.time_faaaa = nn.Parameter(torch.zeros(self.num_heads, head_size))
        # RWKV-LM's optimiser (layerwise_lr): no weight decay but on the projections, time_decay at 2× the lr
        self.no_weight_decay = tuple(name for name, _ in self.named_parameters(recurse=False))
        self.lr_scale = {"time_decay": 2.0}
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(self.num_heads, C, eps=norm_eps)
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        """RWKV-LM v6 initialisation for layer ``layer_idx`` of ``n_layers``."""
        C, dev = self.d_model, self.time_decay.device
        r01, r10 = _layer_ratios(self.layer_idx, self.n_layers)
        ddd = _channel_fraction(C, dev)
        self.time_maa_x.copy_(1.0 - ddd.pow(r10))
        self.time_maa_w.copy_(1.0 - ddd.pow(r10))
        self.time_maa_k.copy_(1.0 - ddd.pow(r10))
        self.time_maa_v.copy_(1.0 - (ddd.pow(r10) + 0.3 * r01))
        self.time_maa_r.copy_(1.0 - ddd.pow(0.5 * r10))
        self.time_maa_g.copy_(1.0 - ddd.pow(0.5 * r10))
        self.time_maa_w1.zero_()
        self.time_maa_w2.uniform_(-0.01, 0.01)
        n = torch.arange(C, dtype=torch.float32, device=dev) / max(C - 1, 1)
        self.time_decay.copy_(-6.0 + 5.0 * n.pow(0.7 + 1.3 * r01))
        self.time_decay_w1.zero_()
        self.time_decay_w2.uniform_(-0.01, 0.01)
        zigzag = ((torch.arange(C, device=dev) + 1) % 3 - 1).float() * 0.1
        self.time_faaaa.copy_((r01 * (1.0 - n) + zigzag).view(self.num_heads, self.head_size))
        for linear, gain in ((self.receptance, 1.0), (self.key, 0.1), (self.value, 1.0), (self.gate, 0.1)):
            nn.init.orthogonal_(linear.weight, gain=gain)
        self.output.weight.zero_()
        self.ln_x.weight.fill_(((1 + self.layer_idx) / self.n_layers) ** 0.7)
        self.ln_x.bias.zero_()

    def forward(self, x: torch.Tensor, state: RWKV6State | None = None, documents=None):
        B, T, C = x.shape
        H, N = self.num_heads, self.head_size
        delta = token_shift(x, None if state is None else state.shift, documents) - x
        lora = torch.tanh((x + delta * self.time_maa_x) @ self.time_maa_w1).view(B, T, 5, self.mix_lora_rank)
        mw, mk, mv, mr, mg = torch.einsum("btfr,frc->fbtc", lora, self.time_maa_w2).unbind(0)
        xw = x + delta * (self.time_maa_w + mw)
        xk = x + delta * (self.time_maa_k + mk)
        xv = x + delta * (self.time_maa_v + mv)
        xr = x + delta * (self.time_maa_r + mr)
        xg = x + delta * (self.time_maa_g + mg)
        r = self.receptance(xr).view(B, T, H, N)
        k = self.key(xk).view(B, T, H, N)
        v = self.value(xv).view(B, T, H, N)
        gate = F.silu(self.gate(xg))
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        log_decay = -torch.exp(w.to(torch.promote_types(w.dtype, torch.float32))).view(B, T, H, N)
        o, final = gated_linear_attention(
            r, k, v, log_decay, self.time_faaaa, scale=1.0,
            initial_state=None if state is None else state.S,
            output_final_state=state is not None, chunk_size=self.chunk_size,
            cu_seqlens=None if documents is None else documents.cu_seqlens,
        )
        o = self.ln_x(o.reshape(B * T, C)).view(B, T, C)
        y = self.output(o * gate)
        return y, (None if state is None else RWKV6State(final, x[:, -1].clone()))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> RWKV6State:
        S = torch.zeros(batch_size, self.num_heads, self.head_size, self.head_size, device=device,
                        dtype=torch.promote_types(dtype, torch.float32))  # fp32, fp64 for fp64
        return RWKV6State(S, torch.zeros(batch_size, self.d_model, device=device, dtype=dtype))

    def state_size(self, seq_len: int = 1) -> int:
        return self.num_heads * self.head_size ** 2 + self.d_model

    def flops_per_token(self, seq_len: int) -> float:
        projections = sum(
            linear_flops(p) for p in (self.receptance, self.key, self.value, self.gate, self.output)
        )
        lora = (
            2.0 * self.time_maa_w1.numel() + 2.0 * self.time_maa_w2.numel()
        )  # x·W1 [C, 5r], then 5 × (r → C)
        decay_lora = 2.0 * self.time_decay_w1.numel() + 2.0 * self.time_decay_w2.numel()
        core = chunked_linear_attention_flops(
            seq_len, self.chunk_size, self.num_heads, self.head_size, self.head_size
        )
        return projections + lora + decay_lora + core


@register_mlp("rwkv6_cmix")
class RWKV6ChannelMix(nn.Module):
    """RWKV-6 channel-mix (Peng et al., 2024), the MLP slot of an RWKV block:
    x_k = x + Δ ⊙ μ_k, x_r = x + Δ ⊙ μ_r (Δ = previous token's input − x, 0 before the first),
    y = sigmoid(W_r x_r) ⊙ W_v relu(W_k x_k)². Hidden size 3.5 · d_model rounded down to a multiple of 32
    (RWKV-LM's default dim_ffn). Initialisation as in RWKV-LM (μ from ``layer_idx`` / ``n_layers``, W_k
    orthogonal, W_r and W_v zero).

    Stateful (carries the token shift): forward(x, state=None) -> (y, state) with ``TokenShiftState``
    (last [B, d_model]), ``state_size() = d_model``. x: [B, T, d_model] -> y: [B, T, d_model].
    """

    def __init__(self, d_model: int, hidden_size: int | None = None, layer_idx: int = 0, n_layers: int = 1):
        super().__init__()
        if hidden_size is None:
            hidden_size = max(32, int(d_model * 3.5) // 32 * 32)
        if hidden_size < 1:
            raise ValueError(f"rwkv6_cmix: hidden_size={hidden_size} must be ≥ 1")
        _check_layer(layer_idx, n_layers, "rwkv6_cmix")
        self.d_model, self.hidden_size = d_model, hidden_size
        self.layer_idx, self.n_layers = layer_idx, n_layers
        self.time_maa_k = nn.Parameter(torch.zeros(d_model))
        self.time_maa_r = nn.Parameter(torch.zeros(d_model))
        self.key = nn.Linear(d_model, hidden_size, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(hidden_size, d_model, bias=False)
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        """RWKV-LM v6 initialisation for layer ``layer_idx`` of ``n_layers``."""
        _, r10 = _layer_ratios(self.layer_idx, self.n_layers)
        ddd = _channel_fraction(self.d_model, self.time_maa_k.device)
        self.time_maa_k.copy_(1.0 - ddd.pow(r10))
        self.time_maa_r.copy_(1.0 - ddd.pow(r10))
        nn.init.orthogonal_(self.key.weight)
        self.receptance.weight.zero_()
        self.value.weight.zero_()

    def forward(self, x: torch.Tensor, state: TokenShiftState | None = None, documents=None):
        delta = token_shift(x, None if state is None else state.last, documents) - x
        k = torch.relu(self.key(x + delta * self.time_maa_k)).square()
        y = torch.sigmoid(self.receptance(x + delta * self.time_maa_r)) * self.value(k)
        return y, (None if state is None else TokenShiftState(x[:, -1].clone()))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> TokenShiftState:
        return TokenShiftState(torch.zeros(batch_size, self.d_model, device=device, dtype=dtype))

    def state_size(self, seq_len: int = 1) -> int:
        return self.d_model

    def flops_per_token(self, seq_len: int) -> float:
        return linear_flops(self.key) + linear_flops(self.value) + linear_flops(self.receptance)
