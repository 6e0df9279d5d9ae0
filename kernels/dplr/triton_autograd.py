"""The ``triton`` backend of the DPLR delta rule: every chunk-local step and both scans as Triton kernels.

Forward: the four per-channel decayed score matrices (gated linear attention's sub-chunked score kernel
on the chunked layout, one head) → ``solve_fwd`` (w, u, Kd, Bd, e^{G_C}) → the forward scan →
``output``. Backward: ``output_bwd`` → the reverse scan → ``local_bwd`` (the score gradients, dV, and the
direct parts of the other gradients) → gated linear attention's intra-chunk score backward for each
score → the decay gradients assembled (batched elementwise ops and one reverse cumsum per chunk).
Saved for the backward: the fp32 chunked inputs, G, G⁻, the four score matrices, the chunk states, v₂.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import triton

from recall_lm.kernels.delta.triton_scan import DOT_PRECISION, _blocks
from recall_lm.kernels.dplr import triton_local
from recall_lm.kernels.dplr.triton_scan import scan_backward, scan_forward
from recall_lm.kernels.gla import triton_backward as gla_bwd
from recall_lm.kernels.gla import triton_forward as gla_fwd
from recall_lm.kernels.gla.triton_common import SUB_CHUNK
from recall_lm.kernels.utils import from_chunks, next_power_of_2, run_padded_varlen, to_chunks

# (x, y, x's cumsum, strict) of A = Σ_k x_ik y_jk exp(Gx_ik − G_jk): x's cumsum is G⁻ ("x") or G ("g")
SCORES = {"ab": ("a", "b", "x", True), "ak": ("a", "k", "x", True), "qk": ("q", "k", "g", False),
          "qb": ("q", "b", "g", False)}


def _score_launch(NT, C, K):
    """Arguments shared by the gated-linear-attention score kernels on the chunked layout [BH, NT·C, 1, K]."""
    BC = min(SUB_CHUNK, C)
    return dict(grid_chunks=NT, BC=BC, NC=C // BC, BK=min(64, max(16, next_power_of_2(K))),
                args=(NT * C, NT, None, None), common=dict(H=1, BT=C, IS_VARLEN=False))


def _scores(t: dict, G, Gx, BH, NT, C, K):
    """The four score matrices ``[BH, NT, C, C]`` (each on its triangle, zero elsewhere)."""
    s = _score_launch(NT, C, K)
    zeros_u = G.new_zeros(1, K)
    out = {}
    for name, (x, y, gx, strict) in SCORES.items():
        A = G.new_zeros(BH, NT, C, C)
        gla_fwd.scores_fwd_channel_kernel[(s["grid_chunks"], s["NC"] * s["NC"], BH)](
            t[x], t[y], zeros_u, G, Gx if gx == "x" else G, A, 1.0, *s["args"], K=K, BC=s["BC"], BK=s["BK"],
            USE_U=strict, DOT_PREC=DOT_PRECISION, **s["common"])
        out[name] = A
    return out


def _score_grads(t: dict, G, Gx, dA: dict, BH, NT, C, K):
    """Gradients through the four scores: {input name: gradient} and the G / G⁻ gradients they give
    (∂A/∂Gx_ik = x_ik ∂A/∂x_ik, ∂A/∂G_jk = −y_jk ∂A/∂y_jk)."""
    s = _score_launch(NT, C, K)
    grads = {n: torch.zeros_like(t[n]) for n in ("q", "k", "a", "b")}
    dG, dGx = torch.zeros_like(G), torch.zeros_like(G)
    for name, (x, y, gx, strict) in SCORES.items():
        dx, dy = torch.empty_like(G), torch.empty_like(G)
        gla_bwd.dqk_intra_channel_kernel[(triton.cdiv(K, s["BK"]), NT * s["NC"], BH)](
            t[x], t[y], G, Gx if gx == "x" else G, dA[name], dx, dy, *s["args"], K=K, BC=s["BC"], BK=s["BK"],
            USE_U=strict, DOT_PREC=DOT_PRECISION, **s["common"])
        grads[x] += dx
        grads[y] += dy
        (dGx if gx == "x" else dG).add_(t[x] * dx)
        dG.sub_(t[y] * dy)
    return grads, dG, dGx


class TritonChunkDPLR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, a, b, gk, h0, scale, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        t = {n: to_chunks(x, chunk_size, torch.float32) for n, x in zip("qkvab", (q, k, v, a, b))}
        gkc = to_chunks(gk, chunk_size, torch.float32)
        BH, NT, C = gkc.shape[:3]
        G = gkc.cumsum(2)
        Gx = G - gkc
        A = _scores(t, G, Gx, BH, NT, C, K)
        BK, BV = _blocks(K, V)
        L = SimpleNamespace(
            w=torch.empty_like(t["k"]),
            u=torch.empty_like(t["v"]),
            Kd=torch.empty_like(t["k"]),
            Bd=torch.empty_like(t["k"]),
            v=t["v"],
            decay=G.new_empty(BH, NT, K),
        )
        common = dict(K=K, V=V, C=C, BK=BK, BV=BV, DOT_PREC=DOT_PRECISION)
        triton_local.dplr_solve_fwd_kernel[(BH * NT,)](
            t["k"], t["v"], t["a"], t["b"], G, Gx, A["ab"], A["ak"], L.w, L.u, L.Kd, L.Bd, L.decay, **common,
            **triton_local.LAUNCH)
        h = G.new_zeros(BH, K, V) if h0 is None else h0.reshape(BH, K, V).float()
        v2, states, final = scan_forward(L, h)
        o = torch.empty_like(t["v"])
        triton_local.dplr_output_kernel[(triton.cdiv(V, BV), BH * NT)](
            t["q"], G, t["v"], A["qk"], A["qb"], states, v2, o, scale, **common, **triton_local.LAUNCH)
        ctx.save_for_backward(*t.values(), G, Gx, *A.values(), states, v2, L.w, L.Bd, L.decay)
        ctx.meta = (B, T, H, scale, q.dtype, gk.dtype, None if h0 is None else (h0.dtype, h0.shape))
        return from_chunks(o, B, T, q.dtype), final.view(B, H, K, V)

    @staticmethod
    def backward(ctx, do, dfinal):
        qc, kc, vc, ac, bc, G, Gx, A_ab, A_ak, A_qk, A_qb, states, v2, w, Bd, decay = ctx.saved_tensors
        B, T, H, scale, dtype, g_dtype, h0_meta = ctx.meta
        t = dict(q=qc, k=kc, v=vc, a=ac, b=bc)
        BH, NT, C, K = qc.shape
        V = vc.shape[-1]
        BK, BV = _blocks(K, V)
        common = dict(K=K, V=V, C=C, BK=BK, BV=BV, DOT_PREC=DOT_PRECISION)
        do_c = to_chunks(do, C, torch.float32)
        dv2_out, ds_out, dv_out = torch.empty_like(vc), torch.empty_like(states), torch.empty_like(vc)
        triton_local.dplr_output_bwd_kernel[(triton.cdiv(V, BV), BH * NT)](
            qc, G, A_qk, A_qb, do_c, dv2_out, ds_out, dv_out, scale, **common, **triton_local.LAUNCH)
        dh = G.new_zeros(BH, K, V) if dfinal is None else dfinal.reshape(BH, K, V).float()
        dv2, dh_after, dh0 = scan_backward(SimpleNamespace(w=w, Bd=Bd, decay=decay), dv2_out, ds_out, dh)
        dA = {n: torch.empty_like(A_ab) for n in SCORES}
        dv = torch.empty_like(vc)
        direct = {n: torch.empty_like(qc) for n in ("q", "k", "a", "b", "G", "Gx")}
        triton_local.dplr_local_bwd_kernel[(BH * NT,)](
            qc, kc, vc, ac, bc, G, Gx, A_ab, A_ak, states, v2, do_c, dv2, dh_after, dv_out,
            dA["ab"], dA["ak"], dA["qk"], dA["qb"], dv, direct["q"], direct["k"], direct["a"], direct["b"],
            direct["G"], direct["Gx"], scale, **common, **triton_local.BWD_LAUNCH)
        grads, dG, dGx = _score_grads(t, G, Gx, dA, BH, NT, C, K)
        dGx += direct["Gx"]
        dG += direct["G"] + dGx  # G⁻ = G − gk
        dgk = dG.flip(2).cumsum(2).flip(2) - dGx  # G = cumsum(gk) inside each chunk
        out = [from_chunks(grads[n] + direct[n], B, T, dtype) for n in ("q", "k")]
        out.append(from_chunks(dv, B, T, dtype))
        out += [from_chunks(grads[n] + direct[n], B, T, dtype) for n in ("a", "b")]
        out.append(from_chunks(dgk, B, T, g_dtype))
        dh0_out = None if h0_meta is None else dh0.view(h0_meta[1]).to(h0_meta[0])
        return (*out, dh0_out, None, None)


def chunk_dplr_triton(
    q, k, v, a, b, gk, *, scale, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=64
):
    """The triton backend. Shapes as in :func:`kernels.dplr_delta_rule`; packed sequences run as zero-padded
    batches of similar lengths (as the torch backend does)."""
    if cu_seqlens is None:
        o, final = TritonChunkDPLR.apply(q, k, v, a, b, gk, initial_state, scale, chunk_size)
    else:
        o, final = run_padded_varlen(lambda padded, h0: TritonChunkDPLR.apply(*padded, h0, scale, chunk_size),
                                     cu_seqlens, (q, k, v, a, b, gk), initial_state, chunk_size)
    return o, (final if output_final_state else None)
