"""Chunked gated delta rule in PyTorch (WY / UT transform): the CPU fast path, with its own backward.

Per chunk of C tokens, with γ the chunk-local cumulative log-decay, Γ_ij = exp(γ_i − γ_j) and S₀ the
state at the chunk start (Yang et al., 2024; Gated DeltaNet, Yang et al., 2025):

    A = strictly-lower(diag(β) (K Kᵀ ⊙ Γ)),   T = (I + A)⁻¹        (a unit-triangular inverse)
    W = T diag(β e^γ) K,   U = T diag(β) V                          ("local" to the chunk: batched)
    V_new = U − W S₀                                                (the scan over chunks)
    O = scale [(Q ⊙ e^γ) S₀ + tril(Q Kᵀ ⊙ Γ) V_new],   S_C = e^{γ_C} S₀ + (K ⊙ e^{γ_C − γ})ᵀ V_new

Everything but the two lines marked "the scan" is batched over all chunks at once (the ``triton``
backend, :mod:`recall_lm.kernels.delta.triton_autograd`, runs the same steps as Triton kernels). Decays
appear only as exp of non-positive differences. The backward is written out: the reverse scan over chunks
gives dV_new (the output's share plus the state's) and the state gradients; then, with Y = Tᵀ dV_new, the
solve's gradients collapse to d(diag(β) V) = Y, d(diag(β e^γ) K) = −Y S₀ᵀ and dA = −strictly-lower(Y V_newᵀ)
(since dW = −dV_new S₀ᵀ, dU = dV_new and U − W S₀ = V_new), and the rest is elementwise.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from recall_lm.kernels.triangular import unit_lower_inverse
from recall_lm.kernels.utils import from_chunks, run_padded_varlen, to_chunks


def _masks(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(causal, −strictly-lower) ``[C, C]`` masks of ones (minus ones) in like's dtype, for chunked
    ``like`` ``[BH, NT, C, *]``: multiplying by them is several times cheaper than a boolean masked_fill."""
    causal = torch.ones(like.shape[2], like.shape[2], dtype=like.dtype, device=like.device).tril_(0)
    return causal, causal.tril(-1).neg_()


class _Local:
    """The chunk-local quantities of chunked inputs q (already times the scale), k ``[BH, NT, C, K]``,
    v ``[BH, NT, C, V]``, beta / g ``[BH, NT, C]`` (g may be None).

    Kept: the inverse T and B = K Kᵀ ⊙ Γ ``[BH, NT, C, C]`` (A = diag(β) B, read below the diagonal
    only), P = tril(q kᵀ ⊙ Γ), W and U, Qg = q ⊙ e^γ, Kd = k ⊙ e^{γ_C − γ}; with g also Γ (zero above
    the diagonal), e^γ and e^{γ_C − γ} ``[BH, NT, C]`` and the chunk decay e^{γ_C} ``[BH, NT, 1, 1]``."""

    NAMES = ("T", "B", "P", "W", "U", "Qg", "Kd", "gamma", "e_g", "e_tail", "decay")

    def __init__(self, q, k, v, beta, g):
        causal, _ = _masks(q)
        self.B = k @ k.transpose(-1, -2)
        self.P = q @ k.transpose(-1, -2)
        if g is None:
            self.P.mul_(causal)
            w_factor = beta
            self.Qg, self.Kd = q, k
            self.gamma = self.e_g = self.e_tail = self.decay = None
        else:
            G = g.cumsum(-1)
            diff = G[..., :, None] - G[..., None, :]  # γ_i − γ_j ≤ 0 on and below the diagonal
            self.gamma = torch.exp(diff.clamp_max_(0.0)).mul_(causal)  # clamped: no inf above it
            self.B.mul_(self.gamma)
            self.P.mul_(self.gamma)
            last = G[..., -1:]
            self.e_g, self.e_tail = torch.exp(G), torch.exp(last - G)
            w_factor = beta * self.e_g
            self.Qg = q * self.e_g[..., None]
            self.Kd = k * self.e_tail[..., None]
            self.decay = torch.exp(last)[..., None]  # [BH, NT, 1, 1]
        # A's diagonal and upper triangle are never read by the inverse.
        self.T = unit_lower_inverse(beta[..., :, None] * self.B)
        K = k.shape[-1]
        rhs = k.new_empty(k.shape[:-1] + (K + v.shape[-1],))
        torch.mul(w_factor[..., None], k, out=rhs[..., :K])  # diag(β e^γ) K
        torch.mul(beta[..., None], v, out=rhs[..., K:])  # diag(β) V
        WU = self.T @ rhs
        self.W, self.U = WU[..., :K], WU[..., K:]

    def tensors(self) -> list:
        return [getattr(self, name) for name in self.NAMES]

    @classmethod
    def from_tensors(cls, tensors) -> "_Local":
        local = object.__new__(cls)
        for name, value in zip(cls.NAMES, tensors):
            setattr(local, name, value)
        return local


def _scan(local: _Local, h: torch.Tensor):
    """The forward scan. Returns V_new ``[BH, NT, C, V]``, the chunk-start states ``[BH, NT, K, V]``
    and the final state ``[BH, K, V]``."""
    W, U, Kd, decay = local.W, local.U, local.Kd, local.decay
    NT = W.shape[1]
    v_new = torch.empty_like(U)
    states = U.new_empty(U.shape[0], NT, W.shape[-1], U.shape[-1])
    for c in range(NT):
        states[:, c] = h
        v_c = torch.baddbmm(U[:, c], W[:, c], h, alpha=-1.0)  # the scan: U − W S₀
        v_new[:, c] = v_c
        h = torch.baddbmm(h if decay is None else decay[:, c] * h, Kd[:, c].transpose(-1, -2), v_c)  # S_C
    return v_new, states, h


def _scan_backward(local: _Local, states, v_new, do, dh):
    """The reverse scan, given do ``[BH, NT, C, V]`` and dh ``[BH, K, V]`` (the final state's gradient).
    Returns dV_new ``[BH, NT, C, V]`` (every path), the gradient of each chunk's end state
    ``[BH, NT, K, V]`` and dh₀."""
    W, Kd, decay = local.W, local.Kd, local.decay
    NT = W.shape[1]
    dv_new = local.P.transpose(-1, -2) @ do  # the output's part; the state's is added below
    ds_out = local.Qg.transpose(-1, -2) @ do  # [BH, NT, K, V]
    dh_after = torch.empty_like(states)
    for c in range(NT - 1, -1, -1):
        dh_after[:, c] = dh
        dv_c = torch.baddbmm(dv_new[:, c], Kd[:, c], dh)  # out of place: one batched call, not one per row
        dv_new[:, c] = dv_c
        carried = ds_out[:, c] + dh if decay is None else torch.addcmul(ds_out[:, c], decay[:, c], dh)
        dh = torch.baddbmm(carried, W[:, c].transpose(-1, -2), dv_c, alpha=-1.0)
    return dv_new, dh_after, dh


def _local_backward(local: _Local, q, k, v, beta, states, v_new, do, dv_new, dh_after):
    """The gradients of the chunked q (times the scale), k, v, β and g (None without g) from the output
    gradient do and the reverse scan's dV_new and end-state gradients dh_after."""
    causal, minus_strict = _masks(q)
    Y = local.T.transpose(-1, -2) @ dv_new  # d(diag(β) V)
    minus_d_rhs_w = Y @ states.transpose(-1, -2)  # −d(diag(β e^γ) K)
    dA = (Y @ v_new.transpose(-1, -2)).mul_(minus_strict)
    dP = do @ v_new.transpose(-1, -2)
    dQg = do @ states.transpose(-1, -2)
    dKd = v_new @ dh_after.transpose(-1, -2)
    E = dA * local.B
    r = (minus_d_rhs_w * k).sum(-1).neg_()
    dbeta = (Y * v).sum(-1) + E.sum(-1)
    dv = beta[..., None] * Y
    dkk = beta[..., :, None] * dA
    if local.gamma is None:
        dqk = dP.mul_(causal)
        dq_local, w_factor, dk_tail, dg = dQg, beta, dKd, None
        dbeta += r
    else:
        M = E.mul_(beta[..., :, None]).addcmul_(dP, local.P)  # ∂/∂(γ_i − γ_j) through A and P
        dkk.mul_(local.gamma)
        dqk = dP.mul_(local.gamma)  # Γ is zero above the diagonal: no mask needed
        e_g = local.e_g
        dq_local = dQg * e_g[..., None]
        w_factor = beta * e_g
        dbeta += e_g * r
        dk_tail = dKd * local.e_tail[..., None]
        s_kd = (dKd * local.Kd).sum(-1)
        dG = M.sum(-1) - M.sum(-2) + w_factor * r + (dQg * local.Qg).sum(-1) - s_kd
        # γ_C also enters Kd (through e^{γ_C − γ}) and the chunk decay e^{γ_C}
        d_decay = torch.linalg.vecdot(dh_after.flatten(-2), states.flatten(-2))
        dG[..., -1] += s_kd.sum(-1) + d_decay * local.decay[..., 0, 0]
        dg = dG.flip(-1).cumsum(-1).flip(-1)  # γ = cumsum g
    flat = lambda x: x.flatten(0, 1)  # noqa: E731  [BH, NT, ...] -> [BH·NT, ...] for the batched calls
    dq = torch.baddbmm(flat(dq_local), flat(dqk), flat(k)).view_as(q)
    dk = torch.addcmul(dk_tail, minus_d_rhs_w, w_factor[..., None], value=-1.0)
    dk_flat = flat(dk)  # kk = k kᵀ is symmetric: both factors' gradients in one product
    dk_flat.baddbmm_(flat(dkk + dkk.transpose(-1, -2)), flat(k))
    dk_flat.baddbmm_(flat(dqk).transpose(-1, -2), flat(q))
    return dq, dk, dv, dbeta, dg


class ChunkGatedDeltaRule(torch.autograd.Function):
    """Saved for the backward (when one can follow): the chunked inputs, the chunk-local quantities of
    :class:`_Local`, the chunk-start states and V_new."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, scale, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        qc = to_chunks(q, chunk_size, cdt, None if scale == 1 else scale)
        kc, vc, bc = (to_chunks(x, chunk_size, cdt) for x in (k, v, beta))
        gc = None if g is None else to_chunks(g, chunk_size, cdt)
        local = _Local(qc, kc, vc, bc, gc)
        h = q.new_zeros(B * H, K, V, dtype=cdt) if h0 is None else h0.reshape(B * H, K, V).to(cdt, copy=True)
        v_new, states, final = _scan(local, h)
        o = local.Qg @ states
        o.flatten(0, 1).baddbmm_(local.P.flatten(0, 1), v_new.flatten(0, 1))
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(qc, kc, vc, bc, states, v_new, *local.tensors())
        ctx.meta = (B, T, scale, chunk_size, q.dtype, beta.dtype, None if g is None else g.dtype,
                    None if h0 is None else (h0.dtype, h0.shape))
        return from_chunks(o, B, T, q.dtype), final.view(B, H, K, V)

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dfinal):
        qc, kc, vc, bc, states, v_new, *rest = ctx.saved_tensors
        local = _Local.from_tensors(rest)
        B, T, scale, chunk_size, q_dtype, beta_dtype, g_dtype, h0_meta = ctx.meta
        BH, _, K, V = states.shape
        do_c = to_chunks(do, chunk_size, states.dtype)
        dh = torch.zeros_like(states[:, 0]) if dfinal is None else dfinal.reshape(BH, K, V).to(states.dtype)
        dv_new, dh_after, dh0 = _scan_backward(local, states, v_new, do_c, dh)
        dq, dk, dv, dbeta, dg = _local_backward(local, qc, kc, vc, bc, states, v_new, do_c, dv_new, dh_after)
        grads = (from_chunks(dq, B, T, q_dtype, None if scale == 1 else scale),
                 from_chunks(dk, B, T, q_dtype), from_chunks(dv, B, T, q_dtype),
                 from_chunks(dbeta, B, T, beta_dtype),
                 None if dg is None else from_chunks(dg, B, T, g_dtype))
        dh0_out = None if h0_meta is None else dh0.view(h0_meta[1]).to(h0_meta[0])
        return (*grads, dh0_out, None, None)


def chunk_gated_delta_rule_torch(
    q,
    k,
    v,
    beta,
    g=None,
    *,
    scale,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    chunk_size=64,
):
    """Chunked backend. Shapes as in :func:`kernels.gated_delta_rule`; packed sequences are scattered into
    zero-padded batches of similar lengths (zero k, β and g leave the state unchanged)."""
    if cu_seqlens is None:
        o, final = ChunkGatedDeltaRule.apply(q, k, v, beta, g, initial_state, scale, chunk_size)
        return o, (final if output_final_state else None)
    o, final = run_padded_varlen(
        lambda padded, h0: ChunkGatedDeltaRule.apply(*padded, h0, scale, chunk_size),
        cu_seqlens, (q, k, v, beta, g), initial_state, chunk_size)
    return o, (final if output_final_state else None)
