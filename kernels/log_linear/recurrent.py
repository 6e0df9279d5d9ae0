"""Log-linear attention token by token on its Fenwick states: the decoding path and a reference.

The prefix [0, t) is held as one state per level ℓ ≥ 1 (slot ℓ − 1), S_ℓ = Σ_{c in the block} exp(G_t −
G_c) k_c v_cᵀ ``[K, V]``, empty where bit ℓ − 1 of t is clear. A step decays every state by exp(g_t),
reads o_t = scale (λ_t[0] (q_t·k_t) v_t + Σ_ℓ λ_t[ℓ] S_ℓᵀ q_t), then adds token t as a one-token block
and carries as a binary counter does: the m = trailing_ones(t) lowest blocks and the token merge into
level m + 1."""

from __future__ import annotations

import torch

from recall_lm.kernels.log_linear.levels import trailing_ones


def log_linear_step(q, k, v, g, lam, states, t: int, scale: float):
    """One token of every sequence in the batch, all at position t. q, k ``[B, H, K]`` (heads already
    expanded), v ``[B, H, V]``, g ``[B, H]``, lam ``[B, H, L]``, states ``[B, H, S, K, V]`` fp32 (fp64 for
    fp64), S ≤ L − 1 slots (levels 1 … S). Returns o ``[B, H, V]`` and the new states, one slot longer
    when token t completes a block of a level the states had no slot for."""
    cdt = states.dtype
    q, k, v, lam = q.to(cdt), k.to(cdt), v.to(cdt), lam.to(cdt)
    slots = states.shape[2]
    if slots > lam.shape[-1] - 1:
        raise ValueError(
            f"log-linear attention: token {t} reads {slots + 1} levels but level_scales has {lam.shape[-1]}"
        )
    states = states * torch.exp(g.to(cdt))[..., None, None, None]
    o = lam[..., 0, None] * (q * k).sum(-1, keepdim=True) * v
    o = o + torch.einsum("bhl,bhk,bhlkv->bhv", lam[..., 1 : slots + 1], q, states)
    m = trailing_ones(t)
    if m >= slots:  # a block of 2^m tokens completes a level no earlier token reached
        states = torch.cat([states, states.new_zeros(*states.shape[:2], m + 1 - slots, *states.shape[3:])], 2)
    merged = k[..., :, None] * v[..., None, :] + states[:, :, :m].sum(2)
    states = torch.cat([torch.zeros_like(states[:, :, :m]), merged[:, :, None], states[:, :, m + 1 :]], 2)
    return scale * o, states


def log_linear_attention_recurrent(
    q,
    k,
    v,
    g,
    level_scales,
    scale: float,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    start: int = 0,
):
    """The token loop. Shapes as in :func:`recall_lm.kernels.log_linear.log_linear_attention`;
    ``initial_state`` ``[N, H, S, K, V]`` holds the Fenwick states after ``start`` tokens (levels 1 … S);
    the final state has as many slots as the last token needed."""
    if cu_seqlens is not None:
        b = cu_seqlens.tolist()
        outs, finals = [], []
        for n, (s, e) in enumerate(zip(b, b[1:])):
            h0 = None if initial_state is None else initial_state[n : n + 1]
            o, f = log_linear_attention_recurrent(
                q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], level_scales[:, s:e], scale, h0, True, None, start
            )
            outs.append(o)
            finals.append(f)
        slots = max(f.shape[2] for f in finals)
        finals = [
            torch.cat([f, f.new_zeros(*f.shape[:2], slots - f.shape[2], *f.shape[3:])], 2) for f in finals
        ]
        return torch.cat(outs, 1), (torch.cat(finals) if output_final_state else None)
    B, T, H, V = v.shape
    group = H // q.shape[2]
    K = q.shape[-1]
    cdt = torch.float64 if v.dtype == torch.float64 else torch.float32
    states = (
        torch.zeros(B, H, 0, K, V, dtype=cdt, device=v.device)
        if initial_state is None
        else initial_state.to(cdt)
    )
    qh, kh = (x.repeat_interleave(group, 2) for x in (q, k))
    outs = []
    for t in range(T):
        o, states = log_linear_step(
            qh[:, t], kh[:, t], v[:, t], g[:, t], level_scales[:, t], states, start + t, scale
        )
        outs.append(o)
    o = torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, V, dtype=cdt)
    return o.to(v.dtype), (states if output_final_state else None)
