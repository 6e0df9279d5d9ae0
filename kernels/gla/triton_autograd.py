"""Host side of the Triton backend: buffers, launch grids, and the autograd.Function tying forward and
hand-written backward together. Nothing here loops over time or over sequences."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from recall_lm.kernels.gla import triton_backward as bwd
from recall_lm.kernels.gla import triton_forward as fwd
from recall_lm.kernels.gla.triton_common import DOT_PRECISION, SUB_CHUNK
from recall_lm.kernels.utils import chunk_tables, next_power_of_2


@dataclass
class Launch:
    """Sizes shared by every launch of one call. ``NT`` is chunks per sequence (equal lengths) or the
    total number of chunks (varlen); ``N`` the number of sequences; ``gate`` is None, "head" or "channel"."""

    B: int
    T: int
    H: int
    K: int
    V: int
    N: int
    NT: int
    BT: int
    BC: int
    BK: int
    BV: int
    gate: str | None
    use_u: bool
    cu_seqlens: torch.Tensor | None
    chunk_indices: torch.Tensor | None
    chunk_offsets: torch.Tensor | None

    @property
    def varlen(self) -> bool:
        return self.cu_seqlens is not None

    def common(self) -> dict:
        """Keyword arguments every kernel takes."""
        return dict(H=self.H, BT=self.BT, IS_VARLEN=self.varlen)

    def chunk_args(self) -> tuple:
        return (self.T, self.NT, self.cu_seqlens, self.chunk_indices)

    def chunk_grid(self) -> tuple[int, int]:
        """(chunks on grid axis, batch factor folded with heads)."""
        return self.NT, self.B * self.H


def plan(q, v, g, u, cu_seqlens, chunk_size) -> Launch:
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    BK = min(64, max(16, next_power_of_2(K)))
    BV = min(64, max(16, next_power_of_2(V)))
    gate = None if g is None else ("head" if g.ndim == 3 else "channel")
    if cu_seqlens is None:
        return Launch(B, T, H, K, V, B, triton.cdiv(T, BT), BT, min(SUB_CHUNK, BT), BK, BV, gate,
                      u is not None, None, None, None)
    offsets = [int(x) for x in cu_seqlens.tolist()]
    indices, starts, nt = chunk_tables(offsets, BT, q.device)
    return Launch(B, T, H, K, V, len(offsets) - 1, nt, BT, min(SUB_CHUNK, BT), BK, BV, gate, u is not None,
                  cu_seqlens.to(device=q.device, dtype=torch.int32).contiguous(), indices, starts)


def gate_cumsums(g, L: Launch):
    """fp32 ``G`` (inclusive chunk cumsum) and ``Gq`` (what queries see: G, or G - g with u),
    both ``[B, T, H, GK]``."""
    if g is None:
        return None, None
    g4 = g if g.ndim == 4 else g.unsqueeze(-1)
    GK = g4.shape[-1]
    G = torch.empty(g4.shape, dtype=torch.float32, device=g.device)
    Gq = torch.empty_like(G) if L.use_u else G
    BKg = min(64, max(16, next_power_of_2(GK)))
    nt, bh = L.chunk_grid()
    fwd.gate_cumsum_kernel[(triton.cdiv(GK, BKg), nt, bh)](
        g4, G, Gq, *L.chunk_args(), GK=GK, BK=BKg, STORE_GQ=L.use_u, **L.common())
    return G, Gq


def _gate_flags(L: Launch) -> dict:
    return dict(HAS_G=L.gate is not None, HEAD_G=L.gate == "head")


def states_forward(k, v, G, h0, L: Launch, store_final: bool):
    h = torch.empty(L.B * L.NT if not L.varlen else L.NT, L.H, L.K, L.V, dtype=torch.float32, device=k.device)
    ht = torch.empty(L.N, L.H, L.K, L.V, dtype=torch.float32, device=k.device) if store_final else None
    grid = (triton.cdiv(L.K, L.BK), triton.cdiv(L.V, L.BV), L.N * L.H)
    fwd.state_fwd_kernel[grid](
        k, v, G if G is not None else k, h, h0 if h0 is not None else k, ht if ht is not None else h, L.T,
        L.cu_seqlens, L.chunk_offsets, K=L.K, V=L.V, BK=L.BK, BV=L.BV, USE_H0=h0 is not None,
        STORE_FINAL=store_final, DOT_PREC=DOT_PRECISION, **_gate_flags(L), **L.common())
    return h, ht


def scores_forward(q, k, u, G, Gq, scale, L: Launch):
    """Intra-chunk score matrix ``A`` fp32 ``[B, T, H, BT]``, scale and bonus included."""
    nt, bh = L.chunk_grid()
    dummy = q
    if L.gate == "channel":
        A = torch.zeros(L.B, L.T, L.H, L.BT, dtype=torch.float32, device=q.device)
        nc = L.BT // L.BC
        fwd.scores_fwd_channel_kernel[(nt, nc * nc, bh)](
            q, k, u if u is not None else dummy, G, Gq, A, scale, *L.chunk_args(), K=L.K, BC=L.BC, BK=L.BK,
            USE_U=L.use_u, DOT_PREC=DOT_PRECISION, **L.common())
    else:
        A = torch.empty(L.B, L.T, L.H, L.BT, dtype=torch.float32, device=q.device)
        fwd.scores_fwd_scalar_kernel[(nt, bh)](
            q, k, u if u is not None else dummy, G if G is not None else dummy,
            Gq if Gq is not None else dummy, A, scale, *L.chunk_args(), K=L.K, BK=L.BK,
            HAS_G=L.gate is not None, USE_U=L.use_u, DOT_PREC=DOT_PRECISION, **L.common())
    return A


def forward(q, k, v, g, u, scale, h0, store_final, L: Launch):
    G, Gq = gate_cumsums(g, L)
    h, ht = states_forward(k, v, G, h0, L, store_final)
    A = scores_forward(q, k, u, G, Gq, scale, L)
    o = torch.empty_like(v, dtype=q.dtype)
    nt, bh = L.chunk_grid()
    fwd.output_fwd_kernel[(triton.cdiv(L.V, L.BV), nt, bh)](
        q, v, Gq if Gq is not None else q, h, A, o, scale, *L.chunk_args(), K=L.K, V=L.V, BK=L.BK, BV=L.BV,
        DOT_PREC=DOT_PRECISION, **_gate_flags(L), **L.common())
    return o, ht, G, Gq, A


def backward(q, k, v, g, u, h0, G, Gq, A, do, dht, scale, L: Launch, need_dg: bool = True):
    """Gradients (dq, dk, dv, dg, du, dh0) from ``do`` and ``dht`` (the final state's gradient or None)."""
    has_g = g is not None
    h, ht = states_forward(k, v, G, h0, L, store_final=has_g and dht is not None)
    nt, bh = L.chunk_grid()
    flags = dict(DOT_PREC=DOT_PRECISION, **L.common())
    dummy = q

    dh = torch.empty_like(h)
    dh0 = torch.empty(L.N, L.H, L.K, L.V, dtype=torch.float32, device=q.device) if h0 is not None else None
    bwd.state_bwd_kernel[(triton.cdiv(L.K, L.BK), triton.cdiv(L.V, L.BV), L.N * L.H)](
        q, do, Gq if has_g else dummy, G if has_g else dummy, dh, dht if dht is not None else dummy,
        dh0 if dh0 is not None else dummy, scale, L.T, L.cu_seqlens, L.chunk_offsets, K=L.K, V=L.V, BK=L.BK,
        BV=L.BV, USE_DHT=dht is not None, STORE_DH0=h0 is not None, **_gate_flags(L), **flags)

    dA = torch.empty(L.B, L.T, L.H, L.BT, dtype=torch.float32, device=q.device)
    bwd.scores_bwd_kernel[(nt, bh)](do, v, dA, scale, *L.chunk_args(), V=L.V, BV=L.BV, **flags)

    dv = torch.empty_like(v)
    bwd.dv_kernel[(triton.cdiv(L.V, L.BV), nt, bh)](
        k, G if has_g else dummy, A, do, dh, dv, *L.chunk_args(), K=L.K, V=L.V, BK=L.BK, BV=L.BV,
        **_gate_flags(L), **flags)

    dq_intra = dk_intra = None
    if L.gate == "channel":
        dq_intra = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        dk_intra = torch.empty_like(dq_intra)
        bwd.dqk_intra_channel_kernel[(triton.cdiv(L.K, L.BK), nt * (L.BT // L.BC), bh)](
            q, k, G, Gq, dA, dq_intra, dk_intra, *L.chunk_args(), K=L.K, BC=L.BC, BK=L.BK, USE_U=L.use_u,
            **flags)

    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dgq = torch.empty(q.shape, dtype=torch.float32, device=q.device) if has_g else None
    dgk = torch.empty_like(dgq) if has_g else None
    du_part = torch.empty(nt * (L.B if not L.varlen else 1), L.H, L.K, dtype=torch.float32,
                          device=q.device) if L.use_u else None
    bwd.dqk_kernel[(triton.cdiv(L.K, L.BK), nt, bh)](
        q, k, v, u if u is not None else dummy, G if has_g else dummy, Gq if has_g else dummy, h, do, dh, dA,
        dq_intra if dq_intra is not None else dummy, dk_intra if dk_intra is not None else dummy, dq, dk,
        dgq if has_g else dummy, dgk if has_g else dummy, du_part if du_part is not None else dummy, scale,
        *L.chunk_args(), K=L.K, V=L.V, BK=L.BK, BV=L.BV, CHANNEL_G=L.gate == "channel", USE_U=L.use_u,
        **_gate_flags(L), **flags)

    dg = None
    if has_g and need_dg:
        dg_final = (ht * dht.float()).sum(-1).contiguous() if dht is not None else None
        dg_full = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        bwd.gate_grad_kernel[(triton.cdiv(L.K, L.BK), L.N * L.H)](
            dgq, dgk, dg_final if dg_final is not None else dgq, dg_full, L.T, L.cu_seqlens, H=L.H, K=L.K,
            BT=L.BT, BK=L.BK, USE_FINAL=dg_final is not None, USE_U=L.use_u, IS_VARLEN=L.varlen)
        dg = (dg_full.sum(-1) if L.gate == "head" else dg_full).to(g.dtype)
    du = du_part.sum(0).to(u.dtype) if L.use_u else None
    return dq, dk, dv, dg, du, (dh0.to(h0.dtype) if h0 is not None else None)


class ChunkGLATriton(torch.autograd.Function):
    """Chunked forward; hand-written chunked backward. Chunk states are recomputed in the backward
    (``[NT, H, K, V]`` is the big one); the gate cumsums and the intra-chunk scores ``A`` are saved."""

    @staticmethod
    def forward(ctx, q, k, v, g, u, h0, scale, store_final, cu_seqlens, chunk_size):
        L = plan(q, v, g, u, cu_seqlens, chunk_size)
        o, ht, G, Gq, A = forward(q, k, v, g, u, scale, h0, store_final, L)
        ctx.save_for_backward(q, k, v, g, u, h0, G, Gq, A)
        ctx.launch, ctx.scale = L, scale
        ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, u, h0, G, Gq, A = ctx.saved_tensors
        if do is None:
            do = torch.zeros(v.shape, dtype=q.dtype, device=q.device)
        grads = backward(q, k, v, g, u, h0, G, Gq, A, do.contiguous(),
                         None if dht is None else dht.contiguous(),
                         ctx.scale, ctx.launch, need_dg=ctx.needs_input_grad[3])
        return (*grads, None, None, None, None)


def chunk_gla_triton(q, k, v, g=None, u=None, *, scale, initial_state=None, output_final_state=False,
                     cu_seqlens=None, chunk_size=64):
    """Triton backend. Shapes as in :func:`kernels.gated_linear_attention`."""
    args = [None if x is None else x.contiguous() for x in (q, k, v, g, u, initial_state)]
    o, ht = ChunkGLATriton.apply(*args, scale, output_final_state, cu_seqlens, chunk_size)
    if not output_final_state:
        return o, None
    return o, (ht.double() if q.dtype == torch.float64 else ht)
