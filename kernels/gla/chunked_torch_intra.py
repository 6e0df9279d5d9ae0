"""Intra-chunk work for per-channel gates in PyTorch (forward scores and their backward).

Tensors are chunked ``[BH, NT, C, K]``; ``G`` is the inclusive in-chunk cumsum of g and ``Gq`` the one the
queries see (G, or G - g with the bonus u, where the diagonal is excluded: ``strict``). The chunk is cut
into sub-chunks of 16. Blocks below the diagonal use the reference r = last row before the query
sub-chunk, so both ``exp(Gq_i - G_r)`` and ``exp(G_r - G_j)`` are <= 1 and the block is one matmul.
Diagonal blocks are exact: for each key column j only rows i >= j (i > j if strict) are formed, so
every exponent ``Gq_i - G_j`` is <= 0 without any masking.

When the decay is milder, the same factorisation covers more (:func:`score_form`): with |G| within
``FACTORED_SPAN`` everywhere (e.g. RWKV-7, whose log-decay per token is above -0.61, so |G| < 39 over
64 tokens) ``exp(Gq_i - G_j) = exp(Gq_i) * exp(-G_j)`` and the whole score matrix is one masked matmul;
with G falling by at most the span inside every 16-token sub-chunk (log-decays down to -2.5 per token:
RWKV-6's and GLA's in practice), each block of 16 query rows is one matmul including its diagonal
block. Each factor then stays within e^±40 of 1, so every kept product is as accurate as the exact
exponent (both come from the same rounded G); only the masked entries above the diagonal, which are
discarded, can be large.
"""
from __future__ import annotations

import torch

SUB_CHUNK = 16
# Largest |G| for the one-matmul factorisation: e^±40 keeps fp32 factors, their products with the
# inputs and with gradients far from overflow (e^88) and from subnormals; fp64 has e^±709.
FACTORED_SPAN = {torch.float32: 40.0, torch.float64: 300.0}


def factored_is_safe(G: torch.Tensor) -> bool:
    """Whether in-chunk cumulative log-decays G (any shape) allow the one-matmul factorisation."""
    limit = FACTORED_SPAN.get(G.dtype)
    return limit is not None and (G.numel() == 0 or G.abs().amax().item() <= limit)


def _diag_blocks(x: torch.Tensor, S: int) -> torch.Tensor:
    """``[BH, NT, C, C]`` -> view of its diagonal S x S blocks ``[BH, NT, S(i), S(j), ns]``."""
    BH, NT, C, _ = x.shape
    ns = C // S
    return torch.diagonal(x.view(BH, NT, ns, S, ns, S), dim1=2, dim2=4)


def channel_scores(q, k, G, Gq, strict: bool) -> torch.Tensor:
    """``A_ij = sum_k q_ik k_jk exp(Gq_ik - G_jk)`` for j <= i (j < i if strict), 0 elsewhere.
    q, k, G, Gq ``[BH, NT, C, K]`` -> A ``[BH, NT, C, C]`` (no scale, no bonus). Differentiable in all
    four inputs when grad mode is on (the DPLR family's backward relies on it), through the hand-written
    :func:`channel_scores_backward`, not autograd through the sub-chunk loops."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, G, Gq)):
        return _ChannelScores.apply(q, k, G, Gq, strict)
    return _channel_scores(q, k, G, Gq, strict)


class _ChannelScores(torch.autograd.Function):
    """Since A_ij = Σ_k q_ik k_jk exp(Gq_ik − G_jk): ∂L/∂Gq_ik = q_ik · ∂L/∂q_ik and
    ∂L/∂G_jk = −k_jk · ∂L/∂k_jk, so the decay gradients come from dq and dk at no extra cost."""

    @staticmethod
    def forward(ctx, q, k, G, Gq, strict):
        ctx.save_for_backward(q, k, G, Gq)
        ctx.strict = strict
        return _channel_scores(q, k, G, Gq, strict)

    @staticmethod
    def backward(ctx, dA):
        q, k, G, Gq = ctx.saved_tensors
        dq, dk = channel_scores_backward(q, k, G, Gq, dA.contiguous(), ctx.strict)
        return dq, dk, -k * dk, q * dq, None


def score_form(G: torch.Tensor, S: int) -> str:
    """How per-channel scores of in-chunk cumulative log-decays G ``[BH, NT, C, K]`` are formed:

    * ``"chunk"``: |G| ≤ the span everywhere: e^Gq (≤ 1) times e^-G, one masked matmul per chunk;
    * ``"row_blocks"``: within every S-token sub-chunk G falls by at most the span: each block of S
      query rows is one matmul against all keys up to its own sub-chunk, with the reference r = the row
      before the sub-chunk (e^(Gq - G_r) ≤ 1, e^(G_r - G) ≤ e^span), then the mask;
    * ``"exact"``: stronger decay: blocks below the diagonal as in row_blocks, and each diagonal block
      column by column, every exponent formed as one difference ≤ 0."""
    limit = FACTORED_SPAN.get(G.dtype)
    if limit is None or G.numel() == 0:
        return "exact"
    if G.abs().amax().item() <= limit:
        return "chunk"
    BH, NT, C, K = G.shape
    Gs = G.view(BH, NT, C // S, S, K)
    before = torch.cat([torch.zeros_like(Gs[:, :, :1, -1:]), Gs[:, :, :-1, -1:]], 2)  # G_r of each sub-chunk
    return "row_blocks" if (before - Gs).amax().item() <= limit else "exact"


def _reference(G: torch.Tensor, a: int, S: int) -> torch.Tensor:
    """G at the row before sub-chunk a (0 before the first) ``[BH, NT, 1, K]``."""
    return G[..., a * S - 1 : a * S, :] if a > 0 else torch.zeros_like(G[..., :1, :])


def _channel_scores(q, k, G, Gq, strict: bool) -> torch.Tensor:
    BH, NT, C, K = q.shape
    S = min(SUB_CHUNK, C)
    form = score_form(G, S)
    if form == "chunk":
        A = (q * torch.exp(Gq)) @ (k * torch.exp(-G)).transpose(-1, -2)
        return A.tril_(-1 if strict else 0)
    ns = C // S
    A = q.new_zeros(BH, NT, C, C)
    for a in range(ns):
        rows, cols = slice(a * S, (a + 1) * S), (a + 1) * S if form == "row_blocks" else a * S
        if cols == 0:
            continue
        ref = _reference(G, a, S)
        qa = q[..., rows, :] * torch.exp(Gq[..., rows, :] - ref)
        kb = k[..., :cols, :] * torch.exp(ref - G[..., :cols, :])
        A[..., rows, :cols] = qa @ kb.transpose(-1, -2)
    if form == "row_blocks":
        return A.tril_(-1 if strict else 0)
    qs, ks, Gs, Gqs = (x.view(BH, NT, ns, S, K) for x in (q, k, G, Gq))
    diag = _diag_blocks(A, S)  # [BH, NT, S(i), S(j), ns]
    for j in range(S):
        i0 = j + 1 if strict else j
        if i0 >= S:
            continue
        e = torch.exp(Gqs[..., i0:, :] - Gs[..., j : j + 1, :])  # [BH, NT, ns, S-i0, K]
        e.mul_(qs[..., i0:, :])
        col = (e @ ks[..., j, :, None]).squeeze(-1)  # [BH, NT, ns, S-i0]
        diag[:, :, i0:, j, :] = col.movedim(2, -1)
    return A


def channel_scores_backward(q, k, G, Gq, dA, strict: bool):
    """Gradients of ``sum(dA * channel_scores(q, k, G, Gq))`` w.r.t. q and k (dA ``[BH, NT, C, C]``,
    entries outside the causal mask are ignored). Returns dq, dk ``[BH, NT, C, K]``."""
    BH, NT, C, K = q.shape
    S = min(SUB_CHUNK, C)
    form = score_form(G, S)
    if form == "chunk":
        eq, ek = torch.exp(Gq), torch.exp(-G)
        dA = dA.tril(-1 if strict else 0)
        return eq * (dA @ (k * ek)), ek * (dA.transpose(-1, -2) @ (q * eq))
    if form == "row_blocks":
        dA = dA.tril(-1 if strict else 0)
    ns = C // S
    dq, dk = torch.zeros_like(q), torch.zeros_like(k)
    for a in range(ns):
        rows, cols = slice(a * S, (a + 1) * S), (a + 1) * S if form == "row_blocks" else a * S
        if cols == 0:
            continue
        ref = _reference(G, a, S)
        eq = torch.exp(Gq[..., rows, :] - ref)  # [BH, NT, S, K]
        ek = torch.exp(ref - G[..., :cols, :])  # [BH, NT, cols, K]
        dA_a = dA[..., rows, :cols]
        dq[..., rows, :] += eq * (dA_a @ (k[..., :cols, :] * ek))
        dk[..., :cols, :] += ek * (dA_a.transpose(-1, -2) @ (q[..., rows, :] * eq))
    if form == "row_blocks":
        return dq, dk
    qs, ks, Gs, Gqs = (x.view(BH, NT, ns, S, K) for x in (q, k, G, Gq))
    dqs, dks = dq.view(BH, NT, ns, S, K), dk.view(BH, NT, ns, S, K)
    dA_diag = _diag_blocks(dA, S)  # [BH, NT, S(i), S(j), ns]
    for j in range(S):
        i0 = j + 1 if strict else j
        if i0 >= S:
            continue
        e = torch.exp(Gqs[..., i0:, :] - Gs[..., j : j + 1, :])  # [BH, NT, ns, S-i0, K]
        d = dA_diag[:, :, i0:, j, :].movedim(-1, 2).unsqueeze(-1)  # [BH, NT, ns, S-i0, 1]
        dqs[..., i0:, :] += (d * e) * ks[..., j : j + 1, :]
        dks[..., j, :] += ((d * e) * qs[..., i0:, :]).sum(-2)
    return dq, dk


def apply_scalar_decay_(A, G, Gq, strict: bool) -> torch.Tensor:
    """In place: ``A_ij *= exp(Gq_i - G_j)`` for j <= i (j < i if strict), ``A_ij = 0`` elsewhere.

    Per-head gates: A ``[BH, NT, C, C]``, G, Gq ``[BH, NT, C]``. Below-diagonal 16 x 16 blocks get a row
    scale ``exp(Gq_i - G_r)`` and a column scale ``exp(G_r - G_j)`` (r: row before the query sub-chunk,
    both <= 1); diagonal blocks get exact ``exp(Gq_i - G_j)`` with the mask applied before the exp.
    Cheaper than one C x C exp, and never forms a positive exponent."""
    BH, NT, C, _ = A.shape
    S = min(SUB_CHUNK, C)
    ns = C // S
    for a in range(ns):
        rows = slice(a * S, (a + 1) * S)
        if a + 1 < ns:
            A[..., rows, (a + 1) * S :] = 0.0
        if a > 0:
            ref = G[..., a * S - 1 : a * S]
            row_scale = torch.exp(Gq[..., rows] - ref)[..., :, None]
            A[..., rows, : a * S] *= row_scale * torch.exp(ref - G[..., : a * S])[..., None, :]
    Gs, Gqs = G.view(BH, NT, ns, S), Gq.view(BH, NT, ns, S)
    # [BH, NT, ns, S, S]; exponents clamped at 0 before the exp (the entries above the mask are then
    # zeroed), so nothing overflows
    decay = (Gqs[..., :, None] - Gs[..., None, :]).clamp_max_(0.0).exp_().tril_(-1 if strict else 0)
    _diag_blocks(A, S).mul_(decay.permute(0, 1, 3, 4, 2))
    return A
