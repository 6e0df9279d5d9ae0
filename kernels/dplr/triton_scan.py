"""Triton kernels for the sequential part of the chunked DPLR delta rule: the scan over chunks.

The chunked fp32 layout of :mod:`recall_lm.kernels.dplr.chunked_torch` (``[BH, NT, C, *]``, contiguous), one
program per (value block, sequence-head), the state block ``[K, BV]`` in registers across the chunks.

Forward, per chunk c:  states[c] = h;  v₂[c] = u[c] + w[c] h;  h ← e^{G_C} ⊙ h + Kd[c]ᵀ V[c] + Bd[c]ᵀ v₂[c].
Backward, chunks in reverse, given dv₂⁰ = scale·A_qbᵀ dO and dS⁰ = scale·Qgᵀ dO:
    dh_after[c] = dh;  dv₂[c] = dv₂⁰[c] + Bd[c] dh;  dh ← dS⁰[c] + e^{G_C} ⊙ dh + w[c]ᵀ dv₂[c].
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.delta.triton_scan import DOT_PRECISION, LAUNCH, _blocks

MAX_K = 64  # w, Kd and Bd chunk tiles ([64, BK] fp32 each) must fit the A100's shared memory


@triton.jit
def dplr_scan_fwd_kernel(w, u, kd, bd, v, decay, h0, states, v2, ht, NT, K: tl.constexpr, V: tl.constexpr,
                         C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH). w, kd, bd [BH, NT, C, K]; u, v, v2 [BH, NT, C, V]; decay [BH, NT, K];
    h0, ht [BH, K, V]; states [BH, NT, K, V]."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    o_c, o_k = tl.arange(0, C), tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    kv_off, ck_off, cv_off = (
        o_k[:, None] * V + o_v[None, :],
        o_c[:, None] * K + o_k[None, :],
        o_c[:, None] * V + o_v[None, :],
    )
    b_h = tl.load(h0 + i_bh * K * V + kv_off, mask=m_kv, other=0.0)
    for c in range(NT):
        chunk = i_bh * NT + c
        tl.store(states + chunk * K * V + kv_off, b_h, mask=m_kv)
        b_w = tl.load(w + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_v2 = tl.load(u + chunk * C * V + cv_off, mask=m_v[None, :], other=0.0)
        b_v2 += tl.dot(b_w, b_h, input_precision=DOT_PREC)
        tl.store(v2 + chunk * C * V + cv_off, b_v2, mask=m_v[None, :])
        b_kd = tl.load(kd + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_bd = tl.load(bd + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_vv = tl.load(v + chunk * C * V + cv_off, mask=m_v[None, :], other=0.0)
        b_d = tl.load(decay + chunk * K + o_k, mask=m_k, other=0.0)
        b_h = b_h * b_d[:, None] + tl.dot(tl.trans(b_kd), b_vv, input_precision=DOT_PREC)
        b_h += tl.dot(tl.trans(b_bd), b_v2, input_precision=DOT_PREC)
    tl.store(ht + i_bh * K * V + kv_off, b_h, mask=m_kv)


@triton.jit
def dplr_scan_bwd_kernel(w, bd, decay, dv2_out, ds_out, dht, dh_after, dv2, dh0, NT, K: tl.constexpr,
                         V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                         DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH). dv2_out, dv2 [BH, NT, C, V]; ds_out, dh_after [BH, NT, K, V];
    dht, dh0 [BH, K, V]."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    o_c, o_k = tl.arange(0, C), tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    kv_off, ck_off, cv_off = (
        o_k[:, None] * V + o_v[None, :],
        o_c[:, None] * K + o_k[None, :],
        o_c[:, None] * V + o_v[None, :],
    )
    b_dh = tl.load(dht + i_bh * K * V + kv_off, mask=m_kv, other=0.0)
    for i in range(NT):
        chunk = i_bh * NT + NT - 1 - i
        tl.store(dh_after + chunk * K * V + kv_off, b_dh, mask=m_kv)
        b_bd = tl.load(bd + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_dv2 = tl.load(dv2_out + chunk * C * V + cv_off, mask=m_v[None, :], other=0.0)
        b_dv2 += tl.dot(b_bd, b_dh, input_precision=DOT_PREC)
        tl.store(dv2 + chunk * C * V + cv_off, b_dv2, mask=m_v[None, :])
        b_w = tl.load(w + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_d = tl.load(decay + chunk * K + o_k, mask=m_k, other=0.0)
        b_ds = tl.load(ds_out + chunk * K * V + kv_off, mask=m_kv, other=0.0)
        b_dh = b_ds + b_dh * b_d[:, None] + tl.dot(tl.trans(b_w), b_dv2, input_precision=DOT_PREC)
    tl.store(dh0 + i_bh * K * V + kv_off, b_dh, mask=m_kv)


def scan_forward(L, h):
    """Triton version of ``chunked_torch._scan``: (v₂, chunk-start states, final state)."""
    BH, NT, C, K = L.w.shape
    V = L.v.shape[-1]
    BK, BV = _blocks(K, V)
    v2, states, final = L.v.new_empty(L.v.shape), L.v.new_empty(BH, NT, K, V), L.v.new_empty(BH, K, V)
    dplr_scan_fwd_kernel[(triton.cdiv(V, BV), BH)](
        *(t.contiguous() for t in (L.w, L.u, L.Kd, L.Bd, L.v)), L.decay.reshape(BH, NT, K).contiguous(),
        h.contiguous(), states, v2, final, NT, K=K, V=V, C=C, BK=BK, BV=BV, DOT_PREC=DOT_PRECISION, **LAUNCH)
    return v2, states, final


def scan_backward(L, dv2_out, ds_out, dh):
    """Triton version of the reverse scan of ``chunked_torch._scan_backward``: (dv₂, dh_after, dh₀)."""
    BH, NT, C, K = L.w.shape
    V = dv2_out.shape[-1]
    BK, BV = _blocks(K, V)
    dv2, dh_after, dh0 = (dv2_out.new_empty(shape) for shape in (dv2_out.shape, ds_out.shape, dh.shape))
    dplr_scan_bwd_kernel[(triton.cdiv(V, BV), BH)](
        L.w.contiguous(), L.Bd.contiguous(), L.decay.reshape(BH, NT, K).contiguous(), dv2_out.contiguous(),
        ds_out.contiguous(), dh.contiguous(), dh_after, dv2, dh0, NT, K=K, V=V, C=C, BK=BK, BV=BV,
        DOT_PREC=DOT_PRECISION, **LAUNCH)
    return dv2, dh_after, dh0
