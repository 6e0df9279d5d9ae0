"""RWKV-7 "Goose" time-mix and channel-mix, on the diagonal-plus-low-rank delta-rule kernel."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import dplr_delta_rule
from recall_lm.layers.contract import Mixer
from recall_lm.layers.mlp import register_mlp
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.rwkv6 import _channel_fraction, _check_layer, _layer_ratios
from recall_lm.layers.state import MixerState
from recall_lm.layers.token_shift import TokenShiftState, token_shift


@dataclass
class RWKV7State(MixerState):
    """The DPLR state S [B, H, N, N] (fp32, key-major) and the last input of the token shift [B, C]."""

    S: torch.Tensor
    last: torch.Tensor


def _lora_rank(d_model: int, factor: float) -> int:
    """RWKV-LM's suggested LoRA width: max(32, round(factor·√C / 32)·32)."""
    return max(32, int(round(factor * d_model**0.5 / 32) * 32))


def _orthogonal(shape, scale: float) -> torch.Tensor:
    """RWKV-LM's ortho_init: orthogonal with gain √(rows/cols) (when rows > cols) times ``scale``."""
    x = torch.empty(shape)
    gain = math.sqrt(shape[0] / shape[1]) if shape[0] > shape[1] else 1.0
    return nn.init.orthogonal_(x, gain=gain * scale)


@register_mixer("rwkv7")
class RWKV7TimeMix(Mixer):
    """RWKV-7 time-mix (Peng et al., 2025, "RWKV-7 'Goose' with Expressive Dynamic State Evolution";
    RWKV-LM's x070 ``RWKV_Tmix_x070``), per head of ``head_size`` N:

        S_t = S_{t−1} (diag(w_t) − κ̂_tᵀ (κ̂_t ⊙ a_t)) + v_tᵀ k̃_t,   y_t = S_t r_t   (RWKV's value-major S)

    run as ``kernels.dplr_delta_rule`` (key-major) with q = r, k = k̃, a = −κ̂, b = κ̂ ⊙ a, scale 1 and
    the log-decay gk = −e^{−0.5}·σ(w₀ + tanh(x_w W₁) W₂), i.e. w = exp(gk) ∈ (e^{−e^{−0.5}}, 1): RWKV-LM's
    soft clamp. x_r … x_g are token-shift interpolations x + (x_{t−1} − x)·μ; a = σ(a₀ + x_a A₁A₂) is the
    in-context learning rate; κ̂ = L2norm(k ⊙ k_k) per head; k̃ = k ⊙ (1 + (a − 1) ⊙ k_a). Value residual:
    the first RWKV-7 layer of a model stores its v in the forward's ``shared`` dict, and every later one
    (only those have v₀, V₁, V₂, also in hybrids whose first RWKV-7 layer is not layer 0) mixes it in,
    v ← v + (v_first − v)·σ(v₀ + x_v V₁V₂) (decoding recomputes it at each step, so no state carries it).
    The output (GroupNorm per head, eps 64e-5, plus the bonus (Σ r ⊙ k̃ ⊙ r_k)·v per head) is gated by
    σ(x_g G₁)G₂ and projected. Initialisation: RWKV-LM's (``reset_mixer_parameters``: the module's vectors
    and LoRAs, then its training script's orthogonal matrices), which needs ``layer_idx`` / ``n_layers``
    (DecoderLM passes them). Optimiser: as in RWKV-LM, only the four projection matrices are weight-decayed
    (``no_weight_decay`` names the rest) and w₀ learns at twice the learning rate (``lr_scale``).
    Decoding state: ``RWKV7State``. x: [B, T, d_model] -> y: [B, T, d_model].
    """

    uses_shared = True  # DecoderLM passes the forward's shared dict (the first layer's v)

    def __init__(self, d_model: int, head_size: int = 64, layer_idx: int = 0, n_layers: int = 1,
                 chunk_size: int = 64, first_of_its_kind: bool | None = None):
        super().__init__()
        if head_size < 1 or d_model % head_size:
            raise ValueError(f"rwkv7: head_size={head_size} must be ≥ 1 and divide d_model={d_model}")
        _check_layer(layer_idx, n_layers, "rwkv7")
        C = d_model
        self.d_model, self.head_size, self.num_heads = C, head_size, C // head_size
        self.layer_idx, self.n_layers, self.chunk_size = layer_idx, n_layers, chunk_size
        # the value-residual gate (v0, V1, V2) exists in every RWKV-7 layer after the model's first one
        # (DecoderLM says which that is; standalone: layer_idx > 0), as RWKV-LM's layer 0 never uses it
        self.value_residual = layer_idx > 0 if first_of_its_kind is None else not first_of_its_kind
        self.loras = ("w", "a", "v", "g") if self.value_residual else ("w", "a", "g")
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a") + \
                (("v0",) if self.value_residual else ()):
            setattr(self, name, nn.Parameter(torch.empty(C)))
        self.r_k = nn.Parameter(torch.empty(self.num_heads, head_size))
        # RWKV-LM's optimiser: weight decay only on the projection matrices, w0 at twice the learning rate
        vectors = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a", "r_k")
        self.no_weight_decay = vectors + (("v0",) if self.value_residual else ()) + \
            tuple(f"{name}{i}" for name in self.loras for i in (1, 2))
        self.lr_scale = {"w0": 2.0}
        ranks = {
            "w": _lora_rank(C, 2.5),
            "a": _lora_rank(C, 2.5),
            "v": _lora_rank(C, 1.7),
            "g": _lora_rank(C, 5),
        }
        ranks = {name: ranks[name] for name in self.loras}
        for name, rank in ranks.items():
            setattr(self, f"{name}1", nn.Parameter(torch.empty(C, rank)))
            setattr(self, f"{name}2", nn.Parameter(torch.empty(rank, C)))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(self.num_heads, C, eps=64e-5)
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        """RWKV-LM x070 initialisation for layer ``layer_idx`` of ``n_layers``."""
        C, N = self.d_model, self.head_size
        r01, r10 = _layer_ratios(self.layer_idx, self.n_layers)
        ddd = _channel_fraction(C, self.x_r.device)
        for name, power in (
            ("x_r", 0.2),
            ("x_w", 0.9),
            ("x_k", 0.7),
            ("x_v", 0.7),
            ("x_a", 0.9),
            ("x_g", 0.2),
        ):
            getattr(self, name).copy_(1.0 - ddd.pow(power * r10))
        n = torch.arange(C, dtype=torch.float32)
        linear = n / (C - 1) - 0.5 if C > 1 else torch.zeros(C)
        zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2) if N > 1 else torch.zeros(C)
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / max(C - 1, 1)) ** (1 + r01**0.3)
        self.w0.copy_(www + 0.5 + zigzag * 2.5)
        self.a0.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        if self.value_residual:
            self.v0.copy_(0.73 - linear * 0.4)
        self.k_k.copy_(0.71 - linear * 0.1)
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        for name in self.loras:
            first, second = getattr(self, f"{name}1"), getattr(self, f"{name}2")
            first.zero_()
            second.copy_(_orthogonal(second.shape, 0.1))
        # RWKV-LM's training start (generate_init_weight, which overrides the module's uniform init of the
        # matrices): orthogonal r, k (gain 0.1) and v, a zero output, and a GroupNorm gain growing with depth
        for linear, gain in ((self.receptance, 1.0), (self.key, 0.1), (self.value, 1.0)):
            nn.init.orthogonal_(linear.weight, gain=gain)
        self.output.weight.zero_()
        self.ln_x.weight.fill_(((1 + self.layer_idx) / self.n_layers) ** 0.7)
        self.ln_x.bias.zero_()

    def forward(self, x: torch.Tensor, state: RWKV7State | None = None, shared: dict | None = None,
                documents=None):
        B, T, C = x.shape
        H, N = self.num_heads, self.head_size
        delta = token_shift(x, None if state is None else state.last, documents) - x
        xr, xw, xk, xv, xa, xg = (
            x + delta * getattr(self, m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")
        )
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        f32 = torch.promote_types(x.dtype, torch.float32)
        gk = -math.exp(-0.5) * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).to(f32))
        if self.value_residual and shared is not None and "v_first" in shared:  # from the first RWKV-7 layer
            v = v + (shared["v_first"] - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        elif shared is not None and "v_first" not in shared:
            shared["v_first"] = v
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kappa = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, N)

        o, final = dplr_delta_rule(
            heads(r),
            heads(k),
            heads(v),
            -kappa,
            kappa * heads(a),
            heads(gk),
            scale=1.0,
            initial_state=None if state is None else state.S,
            output_final_state=state is not None,
            chunk_size=self.chunk_size,
            cu_seqlens=None if documents is None else documents.cu_seqlens,
        )
        o = self.ln_x(o.reshape(B * T, C)).view(B, T, C)
        bonus = (heads(r) * heads(k) * self.r_k).sum(-1, keepdim=True) * heads(v)
        y = self.output((o + bonus.reshape(B, T, C)) * g)
        return y, (None if state is None else RWKV7State(final, x[:, -1].clone()))

    def flops_per_token(self, seq_len: int) -> float:
        """Analytic forward FLOPs per token: the four projections, the LoRAs, and the chunked DPLR core
        (four decayed C×C score blocks, the blocked triangular inverse and its product, and four state
        products per head)."""
        C, H, N = self.d_model, self.num_heads, self.head_size
        Cc = max(1, min(self.chunk_size, seq_len))
        lora = sum(
            2.0 * getattr(self, f"{n}1").numel() + 2.0 * getattr(self, f"{n}2").numel() for n in self.loras
        )
        core = H * (8.0 * Cc * N + Cc * Cc / 3.0 + 2.0 * Cc * 2 * N + 6.0 * Cc * N + 8.0 * N * N)
        return 8.0 * C * C + lora + core

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> RWKV7State:
        S = torch.zeros(batch_size, self.num_heads, self.head_size, self.head_size, device=device,
                        dtype=torch.promote_types(dtype, torch.float32))  # fp32, fp64 for fp64
        return RWKV7State(S, torch.zeros(batch_size, self.d_model, device=device, dtype=dtype))

    def state_size(self, seq_len: int = 1) -> int:
        return self.num_heads * self.head_size**2 + self.d_model


@register_mlp("rwkv7_cmix")
class RWKV7ChannelMix(nn.Module):
    """RWKV-7 channel-mix (RWKV-LM's ``RWKV_CMix_x070``), the MLP slot of an RWKV-7 block:
    y = W_v relu(W_k (x + Δ ⊙ μ_k))², Δ = previous token's input − x, hidden 4·d_model. Initialisation as in
    RWKV-LM (μ_k = 1 − (i/C)^{(1 − l/L)⁴}, W_k orthogonal, W_v zero). Stateful (token shift):
    ``TokenShiftState`` (last [B, d_model]). x: [B, T, d_model] -> y: [B, T, d_model]."""

    def __init__(self, d_model: int, hidden_size: int | None = None, layer_idx: int = 0, n_layers: int = 1):
        super().__init__()
        _check_layer(layer_idx, n_layers, "rwkv7_cmix")
        self.d_model, self.hidden_size = d_model, hidden_size or 4 * d_model
        self.layer_idx, self.n_layers = layer_idx, n_layers
        self.x_k = nn.Parameter(torch.empty(d_model))
        self.key = nn.Linear(d_model, self.hidden_size, bias=False)
        self.value = nn.Linear(self.hidden_size, d_model, bias=False)
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        _, r10 = _layer_ratios(self.layer_idx, self.n_layers)
        self.x_k.copy_(1.0 - _channel_fraction(self.d_model, self.x_k.device).pow(r10**4))
        nn.init.orthogonal_(self.key.weight, gain=1.0)  # RWKV-LM's generate_init_weight
        self.value.weight.zero_()

    def forward(self, x: torch.Tensor, state: TokenShiftState | None = None, documents=None):
        delta = token_shift(x, None if state is None else state.last, documents) - x
        y = self.value(torch.relu(self.key(x + delta * self.x_k)).square())
        return y, (None if state is None else TokenShiftState(x[:, -1].clone()))

    def flops_per_token(self, seq_len: int) -> float:
        return 2.0 * (self.key.weight.numel() + self.value.weight.numel())

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> TokenShiftState:
        return TokenShiftState(torch.zeros(batch_size, self.d_model, device=device, dtype=dtype))

    def state_size(self, seq_len: int = 1) -> int:
        return self.d_model
