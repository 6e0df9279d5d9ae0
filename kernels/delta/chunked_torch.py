"""Chunked gated delta rule in PyTorch (WY / UT transform): the CPU fast path, with its own backward.

Per chunk of C tokens, with γ the chunk-local cumulative log-decay, Γ_ij = exp(γ_i − γ_j) and S₀ the
state at the chunk start (Yang et al., 2024; Gated DeltaNet, Yang et al., 2025):

    A = strictly-lower(diag(β) (K Kᵀ ⊙ Γ)),   T = (I + A)⁻¹        (a unit-triangular solve)
    W = T diag(β e^γ) K,   U = T diag(β) V                          ("local" to the chunk: batched)
    V_new = U − W S₀                                                (the scan over chunks)
    O = scale [(Q ⊙ e^γ) S₀ + tril(Q Kᵀ ⊙ Γ) V_new],   S_C = e^{γ_C} S₀ + (K ⊙ e^{γ_C − γ})ᵀ V_new

Everything but the two lines marked "the scan" is batched over all chunks at once (the ``triton``
backend, :mod:`kernels.delta.triton_autograd`, runs the same steps as Triton kernels). Decays appear only
as exp of non-positive differences. The backward is a custom autograd Function: the reverse scan over
chunks (the state and V_new gradients) is written by hand; the chunk-local maps (q, k, v, β, g) →
(W, U, Q ⊙ e^γ, the masked score matrix, K ⊙ e^{γ_C − γ}, e^{γ_C}) are built under autograd in the
forward and differentiated as batched tensor expressions (no autograd through a loop).
"""
from __future__ import annotations

import torch

from kernels.triangular import unit_lower_solve
from kernels.utils import from_chunks, run_padded_varlen, to_chunks


class _Local:
    """The chunk-local quantities of chunked inputs q, k ``[BH, NT, C, K]``, v ``[BH, NT, C, V]``,
    beta / g ``[BH, NT, C]`` (g may be None): W, U, Qg = q ⊙ e^γ, P = tril(q kᵀ ⊙ Γ) (diagonal
    included), Kd = k ⊙ e^{γ_C − γ} and the chunk decay e^{γ_C} ``[BH, NT, 1, 1]`` (None without g)."""

    def __init__(self, q, k, v, beta, g):
        C = q.shape[2]
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(0)
        kk = k @ k.transpose(-1, -2)
        qk = q @ k.transpose(-1, -2)
        # A's diagonal and upper triangle are never read: the solve below is unit lower-triangular (its
        # backward keeps only the strictly lower part), so A needs no mask of its own.
        if g is None:
            A = beta[..., :, None] * kk
            self.P = qk.masked_fill(~causal, 0.0)
            rhs_w = beta[..., None] * k
            self.Qg, self.Kd, self.decay = q, k, None
        else:
            G = g.cumsum(-1)
            diff = G[..., :, None] - G[..., None, :]  # γ_i − γ_j ≤ 0 on and below the diagonal
            gamma = torch.exp(diff.masked_fill(~causal, float("-inf")))
            A = beta[..., :, None] * kk * gamma
            self.P = qk * gamma
            rhs_w = (beta * torch.exp(G))[..., None] * k
            last = G[..., -1:]
            self.Qg = q * torch.exp(G)[..., None]
            self.Kd = k * torch.exp(last - G)[..., None]
            self.decay = torch.exp(last)[..., None]  # [BH, NT, 1, 1]
        K = k.shape[-1]
        WU = unit_lower_solve(A, torch.cat([rhs_w, beta[..., None] * v], -1))
        self.W, self.U = WU[..., :K], WU[..., K:]

    def tensors(self):
        return [t for t in (self.W, self.U, self.Qg, self.P, self.Kd, self.decay) if t is not None]


def _scan(local: _Local, h: torch.Tensor):
    """The forward scan. Returns V_new ``[BH, NT, C, V]``, the chunk-start states ``[BH, NT, K, V]``
    and the final state ``[BH, K, V]``."""
    W, U, Kd, decay = local.W, local.U, local.Kd, local.decay
    NT = W.shape[1]
    v_new = torch.empty_like(U)
    states = U.new_empty(U.shape[0], NT, W.shape[-1], U.shape[-1])
    for c in range(NT):
        states[:, c] = h
        v_new[:, c] = torch.baddbmm(U[:, c], W[:, c], h, alpha=-1.0)  # the scan: U − W S₀
        update = Kd[:, c].transpose(-1, -2) @ v_new[:, c]
        h = update + (h if decay is None else decay[:, c] * h)  # the scan: S_C
    return v_new, states, h


def _scan_backward(local: _Local, states, v_new, do, dh, scale):
    """Gradients of the loss w.r.t. the local quantities and the initial state, given do ``[BH, NT, C, V]``
    and dh ``[BH, K, V]`` (the final state's gradient). Returns (grads matching ``local.tensors()``, dh₀)."""
    W, Kd, decay = local.W, local.Kd, local.decay
    NT = W.shape[1]
    dv_new = scale * local.P.transpose(-1, -2) @ do  # the output's part; the state's is added below
    ds_out = scale * local.Qg.transpose(-1, -2) @ do  # [BH, NT, K, V]
    dh_after = torch.empty_like(states)  # gradient of the state at the end of each chunk
    for c in range(NT - 1, -1, -1):
        dh_after[:, c] = dh
        dv_c = torch.baddbmm(dv_new[:, c], Kd[:, c], dh)  # out of place: one batched call, not one per row
        dv_new[:, c] = dv_c
        ds = torch.baddbmm(ds_out[:, c], W[:, c].transpose(-1, -2), dv_c, alpha=-1.0)
        dh = ds + (dh if decay is None else decay[:, c] * dh)
    grads = {
        "W": -(dv_new @ states.transpose(-1, -2)),
        "U": dv_new,
        "Qg": scale * do @ states.transpose(-1, -2),
        "P": scale * do @ v_new.transpose(-1, -2),
        "Kd": v_new @ dh_after.transpose(-1, -2),
        "decay": None if decay is None else (dh_after * states).sum((-1, -2), keepdim=True),
    }
    order = ["W", "U", "Qg", "P", "Kd"] + (["decay"] if decay is not None else [])
    return [grads[name] for name in order], dh


class ChunkGatedDeltaRule(torch.autograd.Function):
    """With ``keep_graph`` (set when a backward can follow) the forward builds the chunk-local maps under
    autograd and keeps that graph for the backward, instead of recomputing them there: one fewer pass of
    the two score matmuls and the solve, for the memory of their intermediates (≈ 6 tensors of
    [B·H, T/C, C, C]). A second backward through the same graph (``retain_graph``) rebuilds them."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, scale, chunk_size, keep_graph):
        B, T, H, K = q.shape
        V = v.shape[-1]
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        chunked = [None if x is None else to_chunks(x, chunk_size, cdt) for x in (q, k, v, beta, g)]
        if keep_graph:
            chunked = [None if x is None else x.requires_grad_() for x in chunked]
            with torch.enable_grad():
                ctx.local, ctx.leaves = _Local(*chunked), chunked
            local = _detached(ctx.local)
        else:
            local, ctx.local = _Local(*chunked), None
        h = q.new_zeros(B * H, K, V, dtype=cdt) if h0 is None else h0.reshape(B * H, K, V).to(cdt, copy=True)
        v_new, states, final = _scan(local, h)
        o = scale * (local.Qg @ states + local.P @ v_new)
        ctx.save_for_backward(q, k, v, beta, g, states, v_new)
        ctx.scale, ctx.chunk_size, ctx.h0_meta = scale, chunk_size, None if h0 is None else (h0.dtype, h0.shape)
        return from_chunks(o, B, T, q.dtype), final.view(B, H, K, V)

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, beta, g, states, v_new = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        cdt = states.dtype
        local, inputs = ctx.local, ctx.leaves
        ctx.local = ctx.leaves = None  # the kept graph goes with the first backward
        if local is None:  # a second backward through the same graph (retain_graph=True): build it again
            inputs = [None if x is None else to_chunks(x, ctx.chunk_size, cdt).requires_grad_()
                      for x in (q, k, v, beta, g)]
            with torch.enable_grad():
                local = _Local(*inputs)
        do_c = to_chunks(do, ctx.chunk_size, cdt)
        dh = torch.zeros_like(states[:, 0]) if dfinal is None else dfinal.reshape(B * H, K, V).to(cdt)
        with torch.no_grad():
            grads, dh0 = _scan_backward(_detached(local), states, v_new, do_c, dh, ctx.scale)
        wanted = [x for x in inputs if x is not None]
        got = iter(torch.autograd.grad(local.tensors(), wanted, grads, allow_unused=True))
        out = []
        for x, original in zip(inputs, (q, k, v, beta, g)):
            if x is None:
                out.append(None)
                continue
            grad = next(got)
            grad = torch.zeros_like(x) if grad is None else grad
            out.append(from_chunks(grad.contiguous(), B, T, original.dtype))
        dh0_out = None if ctx.h0_meta is None else dh0.view(ctx.h0_meta[1]).to(ctx.h0_meta[0])
        return (*out, dh0_out, None, None, None)


def _detached(local: _Local) -> _Local:
    view = object.__new__(_Local)
    for name in ("W", "U", "Qg", "P", "Kd", "decay"):
        value = getattr(local, name)
        setattr(view, name, None if value is None else value.detach())
    return view


def chunk_gated_delta_rule_torch(q, k, v, beta, g=None, *, scale, initial_state=None, output_final_state=False,
                                 cu_seqlens=None, chunk_size=64):
    """Chunked backend. Shapes as in :func:`kernels.gated_delta_rule`; packed sequences are scattered into
    zero-padded batches of similar lengths (zero k, β and g leave the state unchanged)."""
    keep_graph = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, g, initial_state))
    if cu_seqlens is None:
        o, final = ChunkGatedDeltaRule.apply(q, k, v, beta, g, initial_state, scale, chunk_size, keep_graph)
        return o, (final if output_final_state else None)
    o, final = run_padded_varlen(
        lambda padded, h0: ChunkGatedDeltaRule.apply(*padded, h0, scale, chunk_size, keep_graph),
        cu_seqlens, (q, k, v, beta, g), initial_state, chunk_size)
    return o, (final if output_final_state else None)
