"""Mamba-3: Mamba-2's SSD with a trapezoidal update, data-dependent rotations and an optional MIMO form,
on the gated linear-attention kernel."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import gated_linear_attention
from recall_lm.layers.contract import Mixer
from recall_lm.layers.dt_init import fill_dt_bias_
from recall_lm.layers.norms import GroupedRMSNorm, RMSNorm
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.state import MixerState

ROPE_FRACTIONS = (0.5, 1.0)


def trapezoidal_scan(
    q, k, v, log_alpha, lam, dt, *, previous=None, output_final_state=False, documents=None, chunk_size=64
):
    """Mamba-3's state-space core, S_t = α_t S_{t−1} + β_t Σ_r k_{t−1,r} v_{t−1,r}ᵀ + γ_t Σ_r k_{t,r} v_{t,r}ᵀ
    and y_{t,r} = S_tᵀ q_{t,r}, with α = exp(log_alpha), β = (1 − λ)Δα, γ = λΔ, on the gated linear
    attention op.

    S_t = H_t + γ_t Σ_r k_{t,r} v_{t,r}ᵀ where H_t (every token before t) is a gated linear attention over
    the keys and values shifted by one token, H_t = α_t H_{t−1} + w_t Σ_r k_{t−1,r} v_{t−1,r}ᵀ with
    w_t = α_t γ_{t−1} + β_t, all terms positive. The R ranks run as R interleaved steps per token (the decay
    on the first, rank r's query on step r), and rank r adds what its step has not seen: its own token's
    writes, γ_t (q_{t,r}·k_{t,r'}) v_{t,r'}, and the previous token's ranks r' > r, w_t (q_{t,r}·k_{t−1,r'})
    v_{t−1,r'}.

    Args:
        q, k: ``[B, T, R, H, N]`` (rotated, biased); v: ``[B, T, R, H, P]``; log_alpha, lam, dt ``[B, T, H]``.
        previous: None (nothing before the first token), or (k ``[B, R, H, N]``, v ``[B, R, H, P]``, S
            ``[B, H, N, P]``): the last token before this call and the state after it.
        documents: packed documents of one row (recall_lm.layers.documents.Documents): each starts afresh.
    Returns:
        y ``[B, T, R, H, P]`` in fp32 (fp64 for fp64 inputs), and S_T ``[B, H, N, P]`` or None.
    """
    B, T, R, H, N = q.shape
    f32 = torch.promote_types(q.dtype, torch.float32)
    alpha, gamma = log_alpha.exp(), lam * dt
    w = alpha * F.pad(gamma, (0, 0, 1, 0))[:, :-1] + alpha * (1 - lam) * dt  # γ_{−1}: already in the state
    if documents is not None:  # a document's first token has no previous token
        w = w.masked_fill(F.pad(documents.starts[1:], (1, 0))[None, :, None], 0.0)
    if previous is None:
        k_before, v_before, h0 = k.new_zeros(B, 1, R, H, N), v.new_zeros(B, 1, R, H, v.shape[-1]), None
    else:
        k_before, v_before, h0 = (
            previous[0][:, None].to(k.dtype),
            previous[1][:, None].to(v.dtype),
            previous[2],
        )
    k_shift, v_shift = torch.cat([k_before, k[:, :-1]], 1), torch.cat([v_before, v[:, :-1]], 1)
    g = torch.cat([log_alpha[:, :, None], log_alpha.new_zeros(B, T, R - 1, H)], 2)  # the decay on rank 0
    o, final = gated_linear_attention(
        q.flatten(1, 2),
        (k_shift * w[:, :, None, :, None].to(k.dtype)).flatten(1, 2),
        v_shift.flatten(1, 2),
        g.flatten(1, 2),
        scale=1.0,
        initial_state=h0,
        output_final_state=output_final_state,
        chunk_size=chunk_size,
        cu_seqlens=None if documents is None else documents.cu_seqlens * R,
    )
    own = torch.einsum("btrhn,btshn->bthrs", q.to(f32), k.to(f32)) * gamma[..., None, None]
    later = torch.ones(R, R, dtype=torch.bool, device=q.device).triu(1)
    missed = torch.einsum("btrhn,btshn->bthrs", q.to(f32), k_shift.to(f32)) * (w[..., None, None] * later)
    y = (
        o.unflatten(1, (T, R)).to(f32)
        + torch.einsum("bthrs,btshp->btrhp", own, v.to(f32))
        + torch.einsum("bthrs,btshp->btrhp", missed, v_shift.to(f32))
    )
    if not output_final_state:
        return y, None
    last = torch.einsum("brhn,brhp->bhnp", k[:, -1].to(f32), v[:, -1].to(f32))
    return y, final + gamma[:, -1, :, None, None] * last  # S_T = H_T + γ_T Σ_r k_T,r v_T,rᵀ


@dataclass
class Mamba3State(MixerState):
    """theta [B, H, A] (fp32): each head's accumulated rotation angles; S [B, H, N, P] (fp32): the SSM
    state, key-major; k_prev [B, R, H, N]: the last token's keys (normalised, biased, rotated); x_prev
    [B, H, P]: its x. The trapezoidal update writes the last token once more at the next step."""

    theta: torch.Tensor
    S: torch.Tensor
    k_prev: torch.Tensor
    x_prev: torch.Tensor


@register_mixer("mamba3")
class Mamba3(Mixer):
    """Mamba-3 (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao & Gu, 2026, "Mamba-3: Improved Sequence
    Modeling using State Space Principles", arXiv 2603.15569), as fla's ``Mamba3`` layer computes it.
    Per head h (B and C of group h // (H / G)), with R = ``mimo_rank`` (1 without ``mimo``):

        S_t = α_t S_{t−1} + β_t Σ_r k_{t−1,r} v_{t−1,r}ᵀ + γ_t Σ_r k_{t,r} v_{t,r}ᵀ
        y_{t,r} = S_tᵀ q_{t,r} + D_h v_{t,r}

    α_t = exp(Δ_t A_t), β_t = (1 − λ_t) Δ_t α_t, γ_t = λ_t Δ_t (the exponential-trapezoidal rule), with
    [z, x, B, C, Δ, A, λ, φ] = W_in u, Δ = softplus(Δ + dt_bias), A = min(−softplus(A), −A_floor) per
    token and head, λ = sigmoid(λ). k = rotate(RMSNorm(B) + B_bias), q = rotate(RMSNorm(C) + C_bias) (the
    "complex" state): the first A = ⌊N · ``rope_fraction`` / 2⌋ pairs of state channels are rotated by
    θ_t = Σ_{s ≤ t} π·tanh(φ_s)·Δ_s (per head, one angle per pair), pairs (2i, 2i + 1) in SISO and
    (i, i + N/2) in MIMO, as the reference kernels pair them. v = x (SISO) or x ⊙ mimo_x_r (MIMO). No
    short convolution. Output: y ⊙ SiLU(z) (SISO), Σ_r mimo_o_r ⊙ y_r ⊙ SiLU(z ⊙ mimo_z_r) (MIMO); with
    ``outproj_norm`` each head's y is RMS-normalised first; then W_out.

    Kernel: :func:`trapezoidal_scan`, the gated linear-attention op over the keys and values shifted by
    one token plus a per-token correction (exact; the states are the paper's).

    Init as fla's: dt as Mamba-2's (dt_bias = softplus⁻¹ of log-uniform [1e-3, 0.1]), B_bias = C_bias = 1,
    D = 1, mimo_x = mimo_o = 1/R, mimo_z = 1; dt_bias and D are not weight-decayed. Decoding state:
    ``Mamba3State``. x: [B, T, d_model] -> y: [B, T, d_model].
    """

    residual_projections = ("out_proj",)
    no_weight_decay = ("dt_bias", "D")

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        head_dim: int = 64,
        expand: int = 2,
        n_groups: int = 1,
        rope_fraction: float = 0.5,
        mimo: bool = False,
        mimo_rank: int = 4,
        outproj_norm: bool = False,
        A_floor: float = 1e-4,
        bias: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
    ):
        super().__init__()
        d_inner = int(expand * d_model)
        if d_state < 2 or head_dim < 1 or expand <= 0:
            raise ValueError(
                f"mamba3: d_state must be ≥ 2, head_dim ≥ 1 and expand > 0, got {d_state}, "
                f"{head_dim}, {expand}"
            )
        if d_inner != expand * d_model or d_inner % head_dim:
            raise ValueError(f"mamba3: head_dim={head_dim} must divide expand·d_model = {expand * d_model}")
        H = d_inner // head_dim
        if int(n_groups) != n_groups or n_groups < 1 or H % n_groups:
            raise ValueError(f"mamba3: n_groups={n_groups} must be ≥ 1 and divide the {H} heads")
        if rope_fraction not in ROPE_FRACTIONS:
            raise ValueError(f"mamba3: rope_fraction must be 0.5 or 1, got {rope_fraction}")
        if mimo and (int(mimo_rank) != mimo_rank or mimo_rank < 1):
            raise ValueError(f"mamba3: mimo_rank must be an integer ≥ 1, got {mimo_rank}")
        rotated = int(d_state * rope_fraction)
        self.num_angles = (rotated - rotated % 2) // 2
        if self.num_angles < 1:
            raise ValueError(
                f"mamba3: d_state={d_state} × rope_fraction={rope_fraction} rotates no pair of state channels"
            )
        self.d_model, self.d_state, self.head_dim, self.d_inner = d_model, d_state, head_dim, d_inner
        self.num_heads, self.n_groups, self.chunk_size = H, int(n_groups), chunk_size
        self.mimo, self.rank = mimo, int(mimo_rank) if mimo else 1
        self.rope_fraction, self.A_floor, self.outproj_norm = rope_fraction, A_floor, outproj_norm
        R, N, G = self.rank, d_state, self.n_groups
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * N * G * R + 3 * H + self.num_angles, bias=bias)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.B_bias = nn.Parameter(torch.empty(H, R, N))
        self.C_bias = nn.Parameter(torch.empty(H, R, N))
        self.B_norm, self.C_norm = RMSNorm(N, norm_eps), RMSNorm(N, norm_eps)
        if mimo:
            self.mimo_x, self.mimo_z, self.mimo_o = (
                nn.Parameter(torch.empty(H, R, head_dim)) for _ in range(3)
            )
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GroupedRMSNorm(d_inner, H, norm_eps) if outproj_norm else None
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self) -> None:
        fill_dt_bias_(self.dt_bias)
        for p in (self.B_bias, self.C_bias, self.D):
            p.fill_(1.0)
        if self.mimo:
            self.mimo_x.fill_(1.0 / self.rank)
            self.mimo_z.fill_(1.0)
            self.mimo_o.fill_(1.0 / self.rank)

    def _rotate(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate the first A pairs of the last dim of t [..., N] by the angles whose cos, sin are [..., A]
        (SISO pairs (2i, 2i+1), MIMO pairs (i, i + N/2)); the other channels pass unchanged."""
        A, N = self.num_angles, self.d_state
        if self.mimo:
            a, b = t[..., :A], t[..., N // 2 : N // 2 + A]
            return torch.cat(
                [a * cos - b * sin, t[..., A : N // 2], a * sin + b * cos, t[..., N // 2 + A :]], -1
            )
        pairs = t[..., : 2 * A].unflatten(-1, (A, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.cat(
            [torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2), t[..., 2 * A :]], -1
        )

    def _angles(
        self, phi: torch.Tensor, dt: torch.Tensor, theta0: torch.Tensor | None, documents
    ) -> torch.Tensor:
        """θ [B, T, H, A] = θ0 + Σ_{s ≤ t} π·tanh(φ_s)·Δ_s within each document, reduced mod 2π; summed in
        fp64 so that long sequences keep their precision."""
        steps = (math.pi * torch.tanh(phi.double()))[:, :, None, :] * dt.double()[..., None]  # [B, T, H, A]
        theta = steps.cumsum(1)
        if documents is not None:  # restart at each document: subtract the sum before its first token
            before = (theta - steps)[:, documents.cu_seqlens[:-1].long()]  # [B, docs, H, A]
            theta = theta - before[:, documents.index]
        if theta0 is not None:
            theta = theta + theta0.double()[:, None]
        return torch.remainder(theta, 2 * math.pi).to(dt.dtype)

    def forward(self, u: torch.Tensor, state: Mamba3State | None = None, documents=None):
        Bsz, T, _ = u.shape
        H, P, N, G, R, A = (
            self.num_heads,
            self.head_dim,
            self.d_state,
            self.n_groups,
            self.rank,
            self.num_angles,
        )
        z, x, Bm, Cm, dd_dt, dd_A, trap, phi = self.in_proj(u).split(
            [self.d_inner, self.d_inner, N * G * R, N * G * R, H, H, H, A], -1
        )
        f32 = torch.promote_types(u.dtype, torch.float32)
        dt = F.softplus(dd_dt.to(f32) + self.dt_bias.to(f32))  # Δ [B, T, H]
        log_alpha = (-F.softplus(dd_A.to(f32))).clamp(max=-self.A_floor) * dt
        theta = self._angles(phi.to(f32), dt, None if state is None else state.theta, documents)
        cos, sin = theta.cos()[:, :, None], theta.sin()[:, :, None]  # [B, T, 1, H, A]
        heads = torch.arange(H, device=u.device) // (H // G)
        k = self.B_norm(Bm.view(Bsz, T, R, G, N))[:, :, :, heads] + self.B_bias.transpose(0, 1).to(u.dtype)
        q = self.C_norm(Cm.view(Bsz, T, R, G, N))[:, :, :, heads] + self.C_bias.transpose(0, 1).to(u.dtype)
        k, q = (
            self._rotate(k, cos.to(k.dtype), sin.to(k.dtype)),
            self._rotate(q, cos.to(q.dtype), sin.to(q.dtype)),
        )
        x = x.view(Bsz, T, H, P)
        mimo_x = self.mimo_x.transpose(0, 1) if self.mimo else None  # [R, H, P]
        v = x[:, :, None] * mimo_x.to(x.dtype) if self.mimo else x[:, :, None]  # [B, T, R, H, P]
        previous = None
        if state is not None:
            previous = (state.k_prev, state.x_prev[:, None] * (mimo_x if self.mimo else 1.0), state.S)
        y, S = trapezoidal_scan(
            q,
            k,
            v,
            log_alpha,
            torch.sigmoid(trap.to(f32)),
            dt,
            previous=previous,
            output_final_state=state is not None,
            documents=documents,
            chunk_size=self.chunk_size,
        )
        y = y + self.D.to(f32)[:, None] * v.to(f32)  # in fp32 (at least) up to the output projection
        y = self._gate(y, z.view(Bsz, T, H, P).to(f32)).to(u.dtype)
        out = self.out_proj(y.reshape(Bsz, T, self.d_inner))
        return out, (None if state is None else Mamba3State(theta[:, -1], S, k[:, -1], x[:, -1]))

    def _gate(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y [B, T, R, H, P], z [B, T, H, P] -> [B, T, H, P]: optional per-head RMSNorm, the SiLU(z) gate
        and (MIMO) the mimo_o-weighted sum over ranks."""
        if self.norm is not None:
            y = self.norm(y.flatten(-2)).unflatten(-1, (self.num_heads, self.head_dim))
        if not self.mimo:
            return y[:, :, 0] * F.silu(z)
        zr = z[:, :, None] * self.mimo_z.transpose(0, 1).to(z.dtype)
        return (y * F.silu(zr) * self.mimo_o.transpose(0, 1).to(y.dtype)).sum(2)

    def flops_per_token(self, seq_len: int) -> float:
        """Projections, the chunked linear-attention core over R steps per token, the R × R rank scores."""
        from recall_lm.layers.flops import chunked_linear_attention_flops, linear_flops

        H, N, P, R = self.num_heads, self.d_state, self.head_dim, self.rank
        core = R * chunked_linear_attention_flops(R * seq_len, self.chunk_size, H, N, P)
        return linear_flops(self.in_proj) + linear_flops(self.out_proj) + core + H * R * R * 2.0 * (N + P)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> Mamba3State:
        f32 = torch.promote_types(dtype, torch.float32)
        H, N, P, R = self.num_heads, self.d_state, self.head_dim, self.rank
        return Mamba3State(
            torch.zeros(batch_size, H, self.num_angles, device=device, dtype=f32),
            torch.zeros(batch_size, H, N, P, device=device, dtype=f32),
            torch.zeros(batch_size, R, H, N, device=device, dtype=dtype),
            torch.zeros(batch_size, H, P, device=device, dtype=dtype),
        )

    def state_size(self, seq_len: int = 1) -> int:
        H, N, P, R = self.num_heads, self.d_state, self.head_dim, self.rank
        return H * N * P + H * self.num_angles + R * H * N + H * P
