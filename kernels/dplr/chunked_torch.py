"""Chunked DPLR delta rule in PyTorch (RWKV-7's op): the CPU path, with its own backward.

Per chunk of C tokens, with G the inclusive and G⁻ = G − gk the exclusive in-chunk cumulative
log-decay (per key channel) and S₀ the state at the chunk start; every score is
``X_ij = Σ_k x_ik y_jk exp(Gx_ik − G_jk)`` over the causal part
(``recall_lm.kernels.gla.chunked_torch_intra``: one matmul of e^{±G}-scaled factors shared by all four
when the decay is mild, as RWKV-7's always is, else ``channel_scores`` with its 16-row blocks or exact
diagonal columns, every exponent ≤ 0):

    A_ab, A_ak = scores of (a with G⁻; b, k), strictly lower;   A_qk, A_qb = scores of (q with G; k, b), lower
    T = (I − A_ab)⁻¹ (a unit-triangular solve);   w = T (a ⊙ e^{G⁻});   u = T (A_ak V)
    v₂ = u + w S₀                                                            (the scan over chunks)
    O = scale [(q ⊙ e^G) S₀ + A_qk V + A_qb v₂]
    S_C = e^{G_C} ⊙ S₀ + (k ⊙ e^{G_C − G})ᵀ V + (b ⊙ e^{G_C − G})ᵀ v₂             (the scan)

(v₂_t = a_tᵀ S_{t−1} is what the low-rank part reads from the state.) As in
:mod:`recall_lm.kernels.delta.chunked_torch`, the backward runs the reverse scan by hand and differentiates
the chunk-local maps, built under autograd in the forward, as batched expressions; V enters both, so its
two gradients are added.
"""
from __future__ import annotations

import torch

from recall_lm.kernels.gla.chunked_torch_intra import channel_scores, factored_is_safe
from recall_lm.kernels.triangular import unit_lower_inverse
from recall_lm.kernels.utils import from_chunks, run_padded_varlen, to_chunks


class LocalMaps:
    """Chunk-local maps built under autograd: ``NAMES`` are the tensors the backward differentiates,
    ``KEPT`` the ones computed outside any graph (inverses and their products)."""

    NAMES: tuple[str, ...] = ()
    KEPT: tuple[str, ...] = ()

    def tensors(self):
        return [getattr(self, n) for n in self.NAMES]

    def detached(self):
        view = object.__new__(type(self))
        for name in self.NAMES:
            setattr(view, name, getattr(self, name).detach())
        for name in self.KEPT:
            setattr(view, name, getattr(self, name))
        return view


class _Local(LocalMaps):
    """Chunk-local maps of chunked q, k, a, b, gk ``[BH, NT, C, K]`` and v ``[BH, NT, C, V]``: the
    solve's matrix −A_ab and right-hand side [a ⊙ e^{G⁻} | A_ak V] ``[.., C, K + V]``, Qg = q ⊙ e^G, A_qk
    and A_qb ``[.., C, C]``, Kd = k ⊙ e^{G_C − G}, Bd = b ⊙ e^{G_C − G}, the chunk decay e^{G_C}
    ``[.., K, 1]``, and v itself (``NAMES``, the maps the backward differentiates); besides, outside any
    graph, T = (I − A_ab)⁻¹ and w, u (T times the right-hand side)."""

    NAMES = ("solve_L", "rhs", "Qg", "A_qk", "A_qb", "Kd", "Bd", "decay", "v")
    KEPT = ("T", "w", "u")

    def __init__(self, q, k, v, a, b, gk):
        G = gk.cumsum(-2)
        Gx = G - gk  # exclusive: what a_t sees (the state before token t)
        last = G[..., -1:, :]
        if factored_is_safe(G):  # every score is one masked matmul of shared decayed factors
            self.Qg, a_dec = q * torch.exp(G), a * torch.exp(Gx)
            inv = torch.exp(-G)
            k_inv, b_inv = k * inv, b * inv
            A_ab, A_ak = (a_dec @ b_inv.mT).tril(-1), (a_dec @ k_inv.mT).tril(-1)
            self.A_qk, self.A_qb = (self.Qg @ k_inv.mT).tril(), (self.Qg @ b_inv.mT).tril()
            e_last = torch.exp(last)
            self.Kd, self.Bd = k_inv * e_last, b_inv * e_last
        else:
            A_ab = channel_scores(a, b, G, Gx, strict=True)
            A_ak = channel_scores(a, k, G, Gx, strict=True)
            self.A_qk = channel_scores(q, k, G, G, strict=False)
            self.A_qb = channel_scores(q, b, G, G, strict=False)
            a_dec, self.Qg = a * torch.exp(Gx), q * torch.exp(G)
            self.Kd, self.Bd = k * torch.exp(last - G), b * torch.exp(last - G)
        K = q.shape[-1]
        self.solve_L, self.rhs = -A_ab, torch.cat([a_dec, A_ak @ v], -1)
        with torch.no_grad():
            self.T = unit_lower_inverse(self.solve_L)
            wu = self.T @ self.rhs  # (I − A_ab)⁻¹ rhs
        self.w, self.u = wu[..., :K], wu[..., K:]
        self.decay = torch.exp(last).transpose(-1, -2)  # [BH, NT, K, 1]: row scale of the state
        self.v = v



def _scan(L: _Local, h: torch.Tensor):
    """Forward scan: v₂ ``[BH, NT, C, V]``, chunk-start states ``[BH, NT, K, V]``, final state."""
    NT = L.w.shape[1]
    v2 = torch.empty_like(L.v)
    states = L.v.new_empty(L.v.shape[0], NT, L.w.shape[-1], L.v.shape[-1])
    for c in range(NT):
        states[:, c] = h
        v2_c = torch.baddbmm(L.u[:, c], L.w[:, c], h)  # the scan: u + w S₀
        v2[:, c] = v2_c
        update = torch.baddbmm(L.Kd[:, c].transpose(-1, -2) @ L.v[:, c], L.Bd[:, c].transpose(-1, -2), v2_c)
        h = torch.addcmul(update, L.decay[:, c], h)  # the scan: S_C
    return v2, states, h


def _scan_backward(L: _Local, states, v2, do, dh, scale):
    """Gradients w.r.t. the local maps (in ``_Local.NAMES`` order) and the initial state."""
    NT = L.w.shape[1]
    dv2 = scale * L.A_qb.transpose(-1, -2) @ do
    ds_out = scale * L.Qg.transpose(-1, -2) @ do
    dh_after = torch.empty_like(states)
    for c in range(NT - 1, -1, -1):
        dh_after[:, c] = dh
        dv2_c = torch.baddbmm(dv2[:, c], L.Bd[:, c], dh)
        dv2[:, c] = dv2_c
        dh = torch.baddbmm(ds_out[:, c] + L.decay[:, c] * dh, L.w[:, c].transpose(-1, -2), dv2_c)
    # dw = dv₂ S₀ᵀ and du = dv₂ with v₂ = u + w S₀: through the solve, Y = Tᵀ dv₂ gives d(rhs) =
    # [Y S₀ᵀ | Y] and d(solve_L) = −strictly-lower(Y v₂ᵀ)
    Y = L.T.transpose(-1, -2) @ dv2
    C = Y.shape[-2]
    minus_strict = -torch.ones(C, C, dtype=Y.dtype, device=Y.device).tril_(-1)
    grads = [
        (Y @ v2.transpose(-1, -2)).mul_(minus_strict),  # solve_L
        torch.cat([Y @ states.transpose(-1, -2), Y], -1),  # rhs
        scale * do @ states.transpose(-1, -2),  # Qg
        scale * do @ L.v.transpose(-1, -2),  # A_qk
        scale * do @ v2.transpose(-1, -2),  # A_qb
        L.v @ dh_after.transpose(-1, -2),  # Kd
        v2 @ dh_after.transpose(-1, -2),  # Bd
        (dh_after * states).sum(-1, keepdim=True),  # decay
        scale * L.A_qk.transpose(-1, -2) @ do + L.Kd @ dh_after,  # v, where the scan and the output use it
    ]
    return grads, dh


class ChunkLocal(torch.autograd.Function):
    """A chunked op whose chunk-local maps are differentiated by autograd and whose scan over chunks is
    reversed by hand. ``algo`` gives ``Local(*chunked inputs)`` (a :class:`LocalMaps`),
    ``forward(L, h0, scale) -> (o, saved, final)`` and ``backward(L, saved, do, dh, scale) -> (grads of
    L.NAMES, dh0)``, all on chunked ``[BH, NT, C, *]`` tensors.

    With ``keep_graph`` (set when a backward can follow) the forward builds the chunk-local maps under
    autograd and keeps that graph for the backward instead of recomputing them there; a second backward
    through the same graph (``retain_graph``) rebuilds them."""

    @staticmethod
    def forward(ctx, algo, h0, scale, chunk_size, keep_graph, *inputs):
        q, v = inputs[0], inputs[algo.V_INDEX]
        B, T, H, K = q.shape
        V = v.shape[-1]
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        chunked = [to_chunks(x, chunk_size, cdt) for x in inputs]
        ctx.local = ctx.leaves = None
        if keep_graph:
            chunked = [x.requires_grad_() for x in chunked]
            with torch.enable_grad():
                ctx.local, ctx.leaves = algo.Local(*chunked), chunked
            L = ctx.local.detached()
        else:
            L = algo.Local(*chunked)
        with torch.no_grad():
            h = (q.new_zeros(B * H, K, V, dtype=cdt) if h0 is None
                 else h0.reshape(B * H, K, V).to(cdt, copy=True))
            o, saved, final = algo.forward(L, h, scale)
        ctx.save_for_backward(*inputs, *saved)
        ctx.algo, ctx.n_inputs, ctx.scale, ctx.chunk_size = algo, len(inputs), scale, chunk_size
        ctx.h0_meta = None if h0 is None else (h0.dtype, h0.shape)
        return from_chunks(o, B, T, q.dtype), final.view(B, H, K, V)

    @staticmethod
    def backward(ctx, do, dfinal):
        inputs, saved = ctx.saved_tensors[: ctx.n_inputs], ctx.saved_tensors[ctx.n_inputs :]
        B, T, H, K = inputs[0].shape
        V = inputs[ctx.algo.V_INDEX].shape[-1]
        cdt = saved[0].dtype
        L, leaves = ctx.local, ctx.leaves
        ctx.local = ctx.leaves = None  # the kept graph goes with the first backward
        if L is None:  # a second backward through the same graph (retain_graph=True): build it again
            leaves = [to_chunks(x, ctx.chunk_size, cdt).requires_grad_() for x in inputs]
            with torch.enable_grad():
                L = ctx.algo.Local(*leaves)
        with torch.no_grad():
            dh = (torch.zeros(B * H, K, V, dtype=cdt, device=saved[0].device) if dfinal is None
                  else dfinal.reshape(B * H, K, V).to(cdt))
            do_c = to_chunks(do, ctx.chunk_size, cdt)
            grads, dh0 = ctx.algo.backward(L.detached(), saved, do_c, dh, ctx.scale)
        got = torch.autograd.grad(L.tensors(), leaves, grads, allow_unused=True)
        out = [from_chunks((torch.zeros_like(x) if g is None else g).contiguous(), B, T, orig.dtype)
               for g, x, orig in zip(got, leaves, inputs)]
        dh0_out = None if ctx.h0_meta is None else dh0.view(ctx.h0_meta[1]).to(ctx.h0_meta[0])
        return (None, dh0_out, None, None, None, *out)


class DPLR:
    """The DPLR delta rule for :class:`ChunkLocal` (inputs q, k, v, a, b, gk)."""

    V_INDEX = 2
    Local = _Local

    @staticmethod
    def forward(L: _Local, h, scale):
        v2, states, final = _scan(L, h)
        return scale * (L.Qg @ states + L.A_qk @ L.v + L.A_qb @ v2), (states, v2), final

    @staticmethod
    def backward(L: _Local, saved, do, dh, scale):
        states, v2 = saved
        return _scan_backward(L, states, v2, do, dh, scale)


def run_chunk_local(algo, inputs, *, scale, initial_state, output_final_state, cu_seqlens, chunk_size):
    """:class:`ChunkLocal` on ``inputs`` (``[B, T, H, *]``, or packed with ``cu_seqlens``: scattered into
    zero-padded batches of similar lengths, whose zero inputs must leave the state unchanged)."""
    keep_graph = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (*inputs, initial_state))
    if cu_seqlens is None:
        o, final = ChunkLocal.apply(algo, initial_state, scale, chunk_size, keep_graph, *inputs)
        return o, (final if output_final_state else None)
    o, final = run_padded_varlen(
        lambda padded, h0: ChunkLocal.apply(algo, h0, scale, chunk_size, keep_graph, *padded),
        cu_seqlens, inputs, initial_state, chunk_size)
    return o, (final if output_final_state else None)


def chunk_dplr_torch(
    q, k, v, a, b, gk, *, scale, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=64
):
    """Chunked backend. Shapes as in :func:`kernels.dplr_delta_rule`; packed sequences are scattered into
    zero-padded batches of similar lengths (zero k, v, b and gk leave the state unchanged)."""
    return run_chunk_local(DPLR, (q, k, v, a, b, gk), scale=scale, initial_state=initial_state,
                           output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                           chunk_size=chunk_size)
