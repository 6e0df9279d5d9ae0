"""Kimi Delta Attention's own chunked path in PyTorch: the gated delta rule with a per-key-channel decay.

KDA's transition ``Diag(α_t) − β_t k_t (α_t ⊙ k_t)ᵀ`` is a DPLR transition whose two low-rank vectors
both lie along k_t, so of the DPLR path's four per-channel score matrices
(:mod:`recall_lm.kernels.dplr.chunked_torch`) two are enough, and the state takes one update per chunk
instead of two. Per chunk of C tokens, with G the inclusive in-chunk cumulative log-decay (per key
channel) and S₀ the state at the chunk start (the WY form of Yang et al.'s gated delta rule, with the
scalar decay replaced by per-channel scores ``X_ij = Σ_c x_ic k_jc exp(G_ic − G_jc)``):

    A_kk = scores of (k; k), strictly lower;   A_qk = scores of (q; k), lower
    T = (I + diag(β) A_kk)⁻¹;   W = T diag(β) (k ⊙ e^G);   U = T diag(β) V
    V_new = U − W S₀                                                           (the scan over chunks)
    O = scale [(q ⊙ e^G) S₀ + A_qk V_new]
    S_C = e^{G_C} ⊙ S₀ + (k ⊙ e^{G_C − G})ᵀ V_new                             (the scan)

(V_new_t = β_t (v_t − S_{t−1}ᵀ (α_t ⊙ k_t)) is what token t writes.) The backward reverses the scan by
hand and differentiates the chunk-local maps by autograd, through
:class:`recall_lm.kernels.dplr.chunked_torch.ChunkLocal`, as the DPLR path does.
"""
from __future__ import annotations

import torch

from recall_lm.kernels.dplr.chunked_torch import LocalMaps, run_chunk_local
from recall_lm.kernels.gla.chunked_torch_intra import channel_scores, factored_is_safe
from recall_lm.kernels.triangular import unit_lower_inverse


class _Local(LocalMaps):
    """Chunk-local maps of chunked q, k, gk ``[BH, NT, C, K]``, v ``[BH, NT, C, V]`` and β ``[BH, NT, C]``:
    the solve's matrix diag(β) A_kk and right-hand side [β (k ⊙ e^G) | β V] ``[.., C, K + V]``,
    Qg = q ⊙ e^G, A_qk ``[.., C, C]``, Kd = k ⊙ e^{G_C − G} and the chunk decay e^{G_C} ``[.., K, 1]``
    (``NAMES``); outside any graph T and W, U (T times the right-hand side)."""

    NAMES = ("solve_L", "rhs", "Qg", "A_qk", "Kd", "decay")
    KEPT = ("T", "W", "U")

    def __init__(self, q, k, v, beta, gk):
        G = gk.cumsum(-2)
        last = G[..., -1:, :]
        if factored_is_safe(G):  # both score matrices as one masked matmul of decayed factors each
            e_G = torch.exp(G)
            self.Qg, k_dec = q * e_G, k * e_G
            k_inv = k * torch.exp(-G)
            A_kk = (k_dec @ k_inv.mT).tril(-1)
            self.A_qk = (self.Qg @ k_inv.mT).tril()
            self.Kd = k_inv * torch.exp(last)
        else:
            A_kk = channel_scores(k, k, G, G, strict=True)
            self.A_qk = channel_scores(q, k, G, G, strict=False)
            self.Qg, k_dec = q * torch.exp(G), k * torch.exp(G)
            self.Kd = k * torch.exp(last - G)
        b = beta[..., None]
        self.solve_L = b * A_kk
        self.rhs = torch.cat([b * k_dec, b * v], -1)
        with torch.no_grad():
            self.T = unit_lower_inverse(self.solve_L)  # (I + diag(β) A_kk)⁻¹
            WU = self.T @ self.rhs
        K = q.shape[-1]
        self.W, self.U = WU[..., :K], WU[..., K:]
        self.decay = torch.exp(last).transpose(-1, -2)  # [BH, NT, K, 1]: row scale of the state


class KDA:
    """KDA for :class:`recall_lm.kernels.dplr.chunked_torch.ChunkLocal` (inputs q, k, v, β, gk)."""

    V_INDEX = 2
    Local = _Local

    @staticmethod
    def forward(L: _Local, h, scale):
        NT = L.W.shape[1]
        v_new = torch.empty_like(L.U)
        states = L.U.new_empty(L.U.shape[0], NT, L.W.shape[-1], L.U.shape[-1])
        for c in range(NT):
            states[:, c] = h
            v_c = torch.baddbmm(L.U[:, c], L.W[:, c], h, alpha=-1.0)  # the scan: U − W S₀
            v_new[:, c] = v_c
            h = torch.baddbmm(L.decay[:, c] * h, L.Kd[:, c].mT, v_c)  # the scan: S_C
        return scale * (L.Qg @ states + L.A_qk @ v_new), (states, v_new), h

    @staticmethod
    def backward(L: _Local, saved, do, dh, scale):
        """Gradients w.r.t. the local maps (``_Local.NAMES`` order) and the initial state."""
        states, v_new = saved
        NT = L.W.shape[1]
        dv_new = scale * L.A_qk.mT @ do
        ds_out = scale * L.Qg.mT @ do
        dh_after = torch.empty_like(states)
        for c in range(NT - 1, -1, -1):
            dh_after[:, c] = dh
            dv_c = torch.baddbmm(dv_new[:, c], L.Kd[:, c], dh)
            dv_new[:, c] = dv_c
            dh = torch.baddbmm(ds_out[:, c] + L.decay[:, c] * dh, L.W[:, c].mT, dv_c, alpha=-1.0)
        # V_new = T (rhs_U − rhs_W S₀) with T = (I + solve_L)⁻¹: with Y = Tᵀ dV_new, d(rhs) = [−Y S₀ᵀ | Y]
        # and d(solve_L) = −strictly-lower(Y V_newᵀ)
        Y = L.T.mT @ dv_new
        C = Y.shape[-2]
        minus_strict = -torch.ones(C, C, dtype=Y.dtype, device=Y.device).tril_(-1)
        grads = [
            (Y @ v_new.mT).mul_(minus_strict),  # solve_L
            torch.cat([-(Y @ states.mT), Y], -1),  # rhs
            scale * do @ states.mT,  # Qg
            scale * do @ v_new.mT,  # A_qk
            v_new @ dh_after.mT,  # Kd
            (dh_after * states).sum(-1, keepdim=True),  # decay
        ]
        return grads, dh


def chunk_kda_torch(
    q, k, v, beta, gk, *, scale, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=64
):
    """KDA's chunked backend. Shapes as in :func:`recall_lm.kernels.dplr.kda.kda_delta_rule`; packed
    sequences are scattered into zero-padded batches (zero k, v, β and gk leave the state unchanged)."""
    return run_chunk_local(KDA, (q, k, v, beta, gk), scale=scale, initial_state=initial_state,
                           output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                           chunk_size=chunk_size)
