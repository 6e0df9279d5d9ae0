"""The ``triton`` backend of the gated delta rule: every step a Triton kernel, forward and backward.

Forward: ``local_fwd`` (W, U, K ⊙ e^{γ_C − γ}, e^{γ_C} per chunk) → the forward scan (chunk-start states,
V_new, final state) → ``output``. Backward: ``output_bwd`` (the output's share of the scan gradients) →
``local_fwd`` again (W, K ⊙ e^{γ_C − γ}; nothing chunk-local is kept) → the reverse scan → ``local_bwd``
(the gradients of q, k, v, β, g). Saved for the backward: the fp32 chunked inputs, the chunk states and
V_new. Kernels: :mod:`recall_lm.kernels.delta.triton_local`, :mod:`recall_lm.kernels.delta.triton_scan`.
"""
from __future__ import annotations

import torch
import triton

from recall_lm.kernels.delta import triton_local
from recall_lm.kernels.delta.triton_scan import DOT_PRECISION, _blocks, scan_backward, scan_forward
from recall_lm.kernels.utils import from_chunks, run_padded_varlen, to_chunks


def _local_forward(k, v, beta, g):
    """W, U ``[BH, NT, C, K|V]``, Kd ``[BH, NT, C, K]``, decay ``[BH, NT]`` (None without g)."""
    BH, NT, C, K = k.shape
    V = v.shape[-1]
    BK, BV = _blocks(K, V)
    w, kd, u = torch.empty_like(k), torch.empty_like(k), torch.empty_like(v)
    decay = k.new_empty(BH, NT) if g is not None else None
    triton_local.delta_local_fwd_kernel[(BH * NT,)](
        k, v, beta, k if g is None else g, w, u, kd, k if decay is None else decay,
        K=K, V=V, C=C, BK=BK, BV=BV, HAS_G=g is not None, DOT_PREC=DOT_PRECISION, **triton_local.LAUNCH)
    return w, u, kd, decay


class TritonChunkGatedDeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, scale, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        qc, kc, vc, bc = (to_chunks(x, chunk_size, torch.float32) for x in (q, k, v, beta))
        gc = None if g is None else to_chunks(g, chunk_size, torch.float32)
        BH, NT, C = qc.shape[:3]
        w, u, kd, decay = _local_forward(kc, vc, bc, gc)
        h = qc.new_zeros(BH, K, V) if h0 is None else h0.reshape(BH, K, V).float()
        v_new, states, final = scan_forward(w, u, kd, decay, h)
        BK, BV = _blocks(K, V)
        o = torch.empty_like(vc)
        triton_local.delta_output_kernel[(triton.cdiv(V, BV), BH * NT)](
            qc, kc, qc if gc is None else gc, states, v_new, o, scale, K=K, V=V, C=C, BK=BK, BV=BV,
            HAS_G=gc is not None, DOT_PREC=DOT_PRECISION, **triton_local.LAUNCH)
        ctx.save_for_backward(qc, kc, vc, bc, gc, states, v_new)
        ctx.shape, ctx.dtypes, ctx.scale = (
            (B, T, H),
            (q.dtype, beta.dtype, None if g is None else g.dtype),
            scale,
        )
        ctx.h0_meta = None if h0 is None else (h0.dtype, h0.shape)
        return from_chunks(o, B, T, q.dtype), final.view(B, H, K, V)

    @staticmethod
    def backward(ctx, do, dfinal):
        qc, kc, vc, bc, gc, states, v_new = ctx.saved_tensors
        (B, T, _), (dtype, beta_dtype, g_dtype), scale = ctx.shape, ctx.dtypes, ctx.scale
        BH, NT, C, K = qc.shape
        V = vc.shape[-1]
        BK, BV = _blocks(K, V)
        has_g = gc is not None
        g_arg = qc if gc is None else gc
        do_c = to_chunks(do, C, torch.float32)
        dv_out, ds_out = torch.empty_like(vc), torch.empty_like(states)
        common = dict(K=K, V=V, C=C, BK=BK, BV=BV, HAS_G=has_g, DOT_PREC=DOT_PRECISION)
        triton_local.delta_output_bwd_kernel[(triton.cdiv(V, BV), BH * NT)](
            qc, kc, g_arg, do_c, dv_out, ds_out, scale, **common, **triton_local.LAUNCH)
        w, _, kd, decay = _local_forward(kc, vc, bc, gc)
        dh = qc.new_zeros(BH, K, V) if dfinal is None else dfinal.reshape(BH, K, V).float()
        dv_new, dh_after, dh0 = scan_backward(w, kd, decay, dv_out, ds_out, dh)
        dq, dk, dv, dbeta = (torch.empty_like(x) for x in (qc, kc, vc, bc))
        dg = torch.empty_like(bc) if has_g else None
        triton_local.delta_local_bwd_kernel[(BH * NT,)](
            qc, kc, vc, bc, g_arg, states, v_new, do_c, dv_new, dh_after, dq, dk, dv, dbeta,
            dbeta if dg is None else dg, scale, **{**common, "BV": triton_local.local_bwd_block_v(BK, BV)},
            **triton_local.BWD_LAUNCH)
        grads = [from_chunks(dq, B, T, dtype), from_chunks(dk, B, T, dtype), from_chunks(dv, B, T, dtype),
                 from_chunks(dbeta, B, T, beta_dtype), None if dg is None else from_chunks(dg, B, T, g_dtype)]
        dh0_out = None if ctx.h0_meta is None else dh0.view(ctx.h0_meta[1]).to(ctx.h0_meta[0])
        return (*grads, dh0_out, None, None)


def chunk_gated_delta_rule_triton(
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
    """The triton backend. Shapes as in :func:`kernels.gated_delta_rule`; packed sequences are run as
    zero-padded batches of similar lengths (as the torch backend does)."""
    if cu_seqlens is None:
        o, final = TritonChunkGatedDeltaRule.apply(q, k, v, beta, g, initial_state, scale, chunk_size)
    else:
        o, final = run_padded_varlen(
            lambda padded, h0: TritonChunkGatedDeltaRule.apply(*padded, h0, scale, chunk_size),
            cu_seqlens, (q, k, v, beta, g), initial_state, chunk_size)
    return o, (final if output_final_state else None)
