"""Chunked gated linear attention in PyTorch: the CPU fast path, with a hand-written backward.

Inputs are laid out as chunks ``[BH, NT, C, D]`` (BH = B*H). Inside a chunk ``G`` is the inclusive cumsum
of g and ``Gq`` what the queries see (G, or G - g with the bonus u). The intra-chunk part is one batched
matmul over every chunk at once (score matrix ``A``); the inter-chunk state recurrence is a loop over
chunks of one fused multiply-add each (:mod:`recall_lm.kernels.gla.chunked_torch_scan`). Decays enter
only as differences with a non-positive exponent. The backward follows the same maths as the Triton
kernels (see :mod:`recall_lm.kernels.gla.triton_backward`); the autograd Function saves the chunked
inputs (or, for bf16/fp16, the inputs themselves, re-chunked in the backward), ``A`` and the chunk states.
"""
from __future__ import annotations

import torch

from recall_lm.kernels.gla.chunked_torch_intra import (
    apply_scalar_decay_,
    channel_scores,
    channel_scores_backward,
    factored_is_safe,
)
from recall_lm.kernels.gla.chunked_torch_scan import scan_states, scan_states_reverse
from recall_lm.kernels.utils import from_chunks, run_padded_varlen, to_chunks


class _Chunked:
    """Chunked inputs of one call and their gate cumsums. Shapes: q, k ``[BH, NT, C, K]``,
    v ``[BH, NT, C, V]``, g/G/Gq ``[BH, NT, C]`` (per head) or ``[BH, NT, C, K]`` (per channel)."""

    def __init__(self, q, k, v, g, u, scale, factored: bool | None = None):
        self.q, self.k, self.v, self.u, self.scale = q, k, v, u, scale
        self.strict = u is not None
        self.gate = None if g is None else ("head" if g.ndim == 3 else "channel")
        self._factors = None
        if self.gate is None:
            self.G = self.Gq = None
            self.factored = False
            return
        self.G = g.cumsum(2)
        self.Gq = self.G - g if self.strict else self.G
        # |G| within the span: scores and gradients from shared e^{±G} factors (any gate)
        self.factored = factored_is_safe(self.G) if factored is None else factored

    def factors(self):
        """Factored case: (e^Gq, e^-G, e^(G_last - G)), ``[BH, NT, C, K]`` per channel or ``[BH, NT, C, 1]``
        per head, computed once (each within e^±40 of 1, so the products with them are as accurate as
        exact exponents)."""
        if self._factors is None:
            G, Gq = (self.G, self.Gq) if self.gate == "channel" else (self.G[..., None], self.Gq[..., None])
            eq, en = torch.exp(Gq), torch.exp(-G)
            self._factors = eq, en, en * torch.exp(G[:, :, -1:, :])
        return self._factors

    def decays(self, in_place: bool = False):
        """(q * exp(Gq), k * exp(G_last - G), exp(G_last) as a row scale of the state, or None).
        ``in_place`` overwrites the chunked q and k."""
        q, k = self.q, self.k
        if self.gate is None:
            return q, k, None
        if self.gate == "head":
            Gl = self.G[:, :, -1:]
            decay = torch.exp(Gl)[..., None]  # [BH, NT, 1, 1]
            if not self.factored:
                eq, ek = torch.exp(self.Gq)[..., None], torch.exp(Gl - self.G)[..., None]
        else:
            Gl = self.G[:, :, -1:, :]
            decay = torch.exp(Gl).transpose(-1, -2)
            if not self.factored:
                eq, ek = torch.exp(self.Gq), torch.exp(Gl - self.G)
        if self.factored:
            eq, _, ek = self.factors()
        if in_place:
            return q.mul_(eq), k.mul_(ek), decay
        return q * eq, k * ek, decay

    def apply_scalar_decay_(self, A):
        """In place on ``[BH, NT, C, C]``: times exp(Gq_i - G_j) under the causal mask, zero above it."""
        if self.gate is None:
            return A.tril_(-1 if self.strict else 0)  # (tril_ is ~10x cheaper than a boolean masked_fill_)
        return apply_scalar_decay_(A, self.G, self.Gq, self.strict)

    def bonus_u(self):
        """u as ``[BH, 1, 1, K]`` (u is per head; BH = B*H with the head fastest)."""
        BH, K = self.q.shape[0], self.q.shape[-1]
        H = self.u.shape[0]
        return self.u.to(self.q.dtype).repeat(BH // H, 1).view(BH, 1, 1, K)


def _forward(ch: _Chunked, h0, keep_inputs: bool):
    """Returns o ``[BH, NT, C, V]``, A ``[BH, NT, C, C]`` (scaled, with bonus), chunk-start states
    ``[BH, NT, K, V]`` and the final state ``[BH, K, V]``. Unless ``keep_inputs``, the chunked q and k
    are overwritten (they become q * exp(Gq) and k * exp(G_last - G)): large fresh buffers cost page
    faults on CPU, so the forward allocates as little as it can."""
    q, k, v = ch.q, ch.k, ch.v
    BH, NT, C, K = q.shape
    V = v.shape[-1]
    bonus = (q * ch.bonus_u() * k).sum(-1) if ch.strict else None  # before q and k may be overwritten
    if ch.factored:  # one masked matmul of q e^Gq and k e^-G; q e^Gq is reused for the states below
        k_en = k * ch.factors()[1]
        qd, kd, decay = ch.decays(in_place=not keep_inputs)
        A = (qd @ k_en.transpose(-1, -2)).tril_(-1 if ch.strict else 0)
    elif ch.gate == "channel":
        A = channel_scores(q, k, ch.G, ch.Gq, ch.strict)
    else:
        A = ch.apply_scalar_decay_(q @ k.transpose(-1, -2))
    if ch.strict:
        A.diagonal(dim1=-2, dim2=-1).add_(bonus)
    if ch.scale != 1.0:
        A.mul_(ch.scale)
    o = A @ v
    if not ch.factored:
        qd, kd, decay = ch.decays(in_place=not keep_inputs)
    states = kd.transpose(-1, -2) @ v  # [BH, NT, K, V]: chunk contributions, then chunk-start states
    h = q.new_zeros(BH, K, V) if h0 is None else h0.to(q.dtype)
    states, final = scan_states(states, decay, h)
    o.view(BH * NT, C, V).baddbmm_(qd.reshape(BH * NT, C, K), states.view(BH * NT, K, V), alpha=ch.scale)
    return o, A, states, final


def _backward(ch: _Chunked, A, states, final, do, dht, need_dh0: bool, need_dg: bool = True):
    """Gradients (dq, dk, dv, dg, du, dh0) in chunk layout from do ``[BH, NT, C, V]``, dht ``[BH, K, V]``."""
    q, k, v, scale = ch.q, ch.k, ch.v, ch.scale
    BH, NT, C, K = q.shape
    V = v.shape[-1]
    qd, kd, decay = ch.decays()
    # gradient of the state at each chunk end, in reverse: dh <- exp(G_last) dh + scale (q exp(Gq))^T do
    U = qd.transpose(-1, -2) @ do  # [BH, NT, K, V], times scale below
    if scale != 1.0:
        U.mul_(scale)
    dh = q.new_zeros(BH, K, V) if dht is None else dht.to(q.dtype)
    dh_end, dh0 = scan_states_reverse(U, decay, dh)
    dA = (do @ v.transpose(-1, -2)).tril_()
    if scale != 1.0:
        dA.mul_(scale)
    d_bonus = dA.diagonal(dim1=-2, dim2=-1).clone() if ch.strict else None  # the bonus u's share
    dv = A.transpose(-1, -2) @ do
    dv.view(BH * NT, C, V).baddbmm_(kd.reshape(BH * NT, C, K), dh_end.view(BH * NT, K, V))
    dq = do @ states.transpose(-1, -2)  # [BH, NT, C, K]
    if ch.factored and ch.gate == "channel":  # (per head, decaying dA in place is cheaper: C x C scalars)
        # dq = e^Gq ⊙ (scale · do Sᵀ + dA (k e^-G)),  dk = e^(G_last - G) ⊙ (v dhᵀ) + e^-G ⊙ (dAᵀ (q e^Gq))
        eq, en, ek = ch.factors()
        if ch.strict:
            dA.diagonal(dim1=-2, dim2=-1).zero_()  # the diagonal is the bonus's, not a decayed score
        if scale != 1.0:
            dq.mul_(scale)
        dq.view(BH * NT, C, K).baddbmm_(dA.view(BH * NT, C, C), (k * en).view(BH * NT, C, K))
        dq.mul_(eq)
        dk = (dA.transpose(-1, -2) @ qd).mul_(en)
        dk.addcmul_(v @ dh_end.transpose(-1, -2), ek)
    else:
        dk = v @ dh_end.transpose(-1, -2)
        if ch.gate is not None:
            Gl = ch.G[:, :, -1:] if ch.gate == "channel" else ch.G[:, :, -1:, None]
            dq.mul_(torch.exp(ch.Gq if ch.gate == "channel" else ch.Gq[..., None]))
            dk.mul_(torch.exp(Gl - (ch.G if ch.gate == "channel" else ch.G[..., None])))
        if scale != 1.0:
            dq.mul_(scale)
        if ch.gate == "channel":
            dq_intra, dk_intra = channel_scores_backward(q, k, ch.G, ch.Gq, dA, ch.strict)
            dq += dq_intra
            dk += dk_intra
        else:
            dAD = ch.apply_scalar_decay_(dA).view(BH * NT, C, C)
            dq.view(BH * NT, C, K).baddbmm_(dAD, k.reshape(BH * NT, C, K))
            dk.view(BH * NT, C, K).baddbmm_(dAD.transpose(-1, -2), q.reshape(BH * NT, C, K))

    dg = None
    if ch.gate is not None and need_dg:
        # every gate factor is exp(+Gq) on a query or exp(-G) on a key: dg_t = sum_{s>=t} (q dq - k dk)_s
        # (minus (q dq)_t itself with u, whose queries see G_{t-1}) + the final state's share
        if ch.gate == "head":  # the sums over K only: no full-size products
            x_q = torch.linalg.vecdot(q, dq)
            x = x_q - torch.linalg.vecdot(k, dk)
        else:
            x_q = q * dq
            x = x_q - k * dk
        flat = x.reshape(BH, NT * C, *x.shape[3:])
        dg = flat.flip(1).cumsum(1).flip(1).view_as(x)
        if ch.strict:
            dg -= x_q
        if dht is not None:
            share = (final * dht.to(q.dtype)).sum(-1)  # [BH, K]
            dg += share.sum(-1)[:, None, None] if ch.gate == "head" else share[:, None, None, :]
    du = None
    if ch.strict:
        d = d_bonus[..., None]  # [BH, NT, C, 1]
        u = ch.bonus_u()
        du = (d * q * k).sum((1, 2)).view(-1, ch.u.shape[0], K).sum(0)
        dq += d * u * k
        dk += d * u * q
    return dq, dk, dv, dg, du, (dh0 if need_dh0 else None)


class ChunkGLATorch(torch.autograd.Function):
    """Chunked forward and hand-written chunked backward, on equal-length sequences ``[B, T, H, D]``.

    The forward works on q · scale (and then scale 1). fp32 and fp64 inputs: it keeps its chunked
    copies of q · scale, k, v and g unchanged and saves them, so the backward does not re-chunk them
    and scales dq on its way out. Narrower inputs (bf16, fp16): the chunked fp32 copies would be twice
    the inputs' size, so the forward overwrites them and the backward re-chunks the saved inputs."""

    @staticmethod
    def forward(ctx, q, k, v, g, u, h0, scale, chunk_size):
        B, T, H, K = q.shape
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        chunked = [to_chunks(q, chunk_size, cdt, scale),
                   *(None if x is None else to_chunks(x, chunk_size, cdt) for x in (k, v, g))]
        ch = _Chunked(*chunked, None if u is None else u.to(cdt), 1.0)
        h0c = None if h0 is None else h0.reshape(B * H, K, -1)
        keep = q.dtype == cdt
        o, A, states, final = _forward(ch, h0c, keep_inputs=keep)
        ctx.save_for_backward(*(chunked if keep else (q, k, v, g)), u, A, states, final)
        ctx.meta = (B, T, H, scale, chunk_size, q.dtype, None if g is None else g.dtype,
                    None if u is None else u.dtype, None if h0 is None else h0.dtype)
        ctx.factored, ctx.chunked = ch.factored, keep
        ctx.set_materialize_grads(False)
        state_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return from_chunks(o, B, T, q.dtype), final.view(B, H, K, -1).to(state_dtype, copy=True)

    @staticmethod
    def backward(ctx, do, dht):
        B, T, H, scale, C, dtype, g_dtype, u_dtype, h0_dtype = ctx.meta
        q, k, v, g, u, A, states, final = ctx.saved_tensors
        cdt = A.dtype
        u_c = None if u is None else u.to(cdt)
        if ctx.chunked:  # q is q · scale: gradients for it, dq scaled on the way out
            ch = _Chunked(q, k, v, g, u_c, 1.0, factored=ctx.factored)
        else:
            ch = _Chunked(*(None if x is None else to_chunks(x, C, cdt) for x in (q, k, v, g)), u_c, scale,
                          factored=ctx.factored)
        if do is None:
            do_c = torch.zeros_like(ch.v)
        else:
            do_c = to_chunks(do, C, ch.q.dtype)
        dht_c = None if dht is None else dht.reshape(B * H, *dht.shape[2:])
        dq, dk, dv, dg, du, dh0 = _backward(ch, A, states, final, do_c, dht_c, h0_dtype is not None,
                                            need_dg=ctx.needs_input_grad[3])
        out = [from_chunks(dq, B, T, dtype, scale if ctx.chunked else None), from_chunks(dk, B, T, dtype),
               from_chunks(dv, B, T, dtype),
               None if dg is None else from_chunks(dg, B, T, g_dtype),
               None if du is None else du.to(u_dtype),
               None if dh0 is None else dh0.view(B, H, *dh0.shape[1:]).to(h0_dtype)]
        return (*out, None, None)


def chunk_gla_torch(q, k, v, g=None, u=None, *, scale, initial_state=None, output_final_state=False,
                    cu_seqlens=None, chunk_size=64):
    """Chunked backend. Shapes as in :func:`kernels.gated_linear_attention`; packed sequences are
    scattered into zero-padded batches of similar lengths (zero k, v and g leave the state unchanged)."""
    if cu_seqlens is None:
        o, final = ChunkGLATorch.apply(q, k, v, g, u, initial_state, scale, chunk_size)
    else:
        o, final = run_padded_varlen(
            lambda padded, h0: ChunkGLATorch.apply(*padded, u, h0, scale, chunk_size),
            cu_seqlens, (q, k, v, g), initial_state, chunk_size)
    return o, (final if output_final_state else None)
