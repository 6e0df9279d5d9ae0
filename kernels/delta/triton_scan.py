"""Triton kernels for the sequential part of the chunked gated delta rule: the scan over chunks.

Both kernels work on the chunked fp32 layout of :mod:`recall_lm.kernels.delta.chunked_torch`
(``[BH, NT, C, *]``, contiguous), one program per (value block, sequence-head), the state block
``[K, BV]`` kept in registers across the chunks (value columns are independent: W and K ⊙ e^{γ_C − γ}
do not depend on v).

Forward, per chunk c:  states[c] = h;  V_new[c] = U[c] − W[c] h;  h ← e^{γ_C} h + Kd[c]ᵀ V_new[c].
Backward, chunks in reverse, given dV⁰ = scale·Pᵀ dO and dS⁰ = scale·Qgᵀ dO (the output's parts):
    dh_after[c] = dh;  dV_new[c] = dV⁰[c] + Kd[c] dh;  dh ← dS⁰[c] − W[c]ᵀ dV_new[c] + e^{γ_C} dh.
"""
from __future__ import annotations

import triton
import triton.language as tl

from recall_lm.kernels.utils import next_power_of_2

LAUNCH = dict(num_warps=4, num_stages=2)  # as compiled ahead of time in tests/kernels/test_delta_aot.py
DOT_PRECISION = "ieee"  # the state recurrence accumulates over the whole sequence: no tf32 rounding


@triton.jit
def delta_scan_fwd_kernel(w, u, kd, decay, h0, states, v_new, ht, NT, K: tl.constexpr, V: tl.constexpr,
                          C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_DECAY: tl.constexpr,
                          USE_H0: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH). w, kd [BH, NT, C, K]; u, v_new [BH, NT, C, V]; decay [BH, NT];
    h0, ht [BH, K, V]; states [BH, NT, K, V]."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    kv_off = o_k[:, None] * V + o_v[None, :]
    ck_off = o_c[:, None] * K + o_k[None, :]
    cv_off = o_c[:, None] * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_bh * K * V + kv_off, mask=m_kv, other=0.0)
    for c in range(NT):
        chunk = i_bh * NT + c
        tl.store(states + chunk * K * V + kv_off, b_h, mask=m_kv)
        b_w = tl.load(w + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_u = tl.load(u + chunk * C * V + cv_off, mask=m_v[None, :], other=0.0)
        b_vn = b_u - tl.dot(b_w, b_h, input_precision=DOT_PREC)
        tl.store(v_new + chunk * C * V + cv_off, b_vn, mask=m_v[None, :])
        b_kd = tl.load(kd + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        if HAS_DECAY:
            b_h *= tl.load(decay + chunk)
        b_h += tl.dot(tl.trans(b_kd), b_vn, input_precision=DOT_PREC)
    tl.store(ht + i_bh * K * V + kv_off, b_h, mask=m_kv)


@triton.jit
def delta_scan_bwd_kernel(w, kd, decay, dv_out, ds_out, dht, dh_after, dv_new, dh0, NT, K: tl.constexpr,
                          V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                          HAS_DECAY: tl.constexpr, USE_DHT: tl.constexpr, DOT_PREC: tl.constexpr):
    """Grid (cdiv(V, BV), BH). dv_out, dv_new [BH, NT, C, V]; ds_out, dh_after [BH, NT, K, V];
    dht, dh0 [BH, K, V] (the final state's gradient in, the initial state's out)."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    kv_off = o_k[:, None] * V + o_v[None, :]
    ck_off = o_c[:, None] * K + o_k[None, :]
    cv_off = o_c[:, None] * V + o_v[None, :]
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + i_bh * K * V + kv_off, mask=m_kv, other=0.0)
    for i in range(NT):
        chunk = i_bh * NT + NT - 1 - i
        tl.store(dh_after + chunk * K * V + kv_off, b_dh, mask=m_kv)
        b_kd = tl.load(kd + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_dv = tl.load(dv_out + chunk * C * V + cv_off, mask=m_v[None, :], other=0.0)
        b_dv += tl.dot(b_kd, b_dh, input_precision=DOT_PREC)
        tl.store(dv_new + chunk * C * V + cv_off, b_dv, mask=m_v[None, :])
        b_w = tl.load(w + chunk * C * K + ck_off, mask=m_k[None, :], other=0.0)
        b_ds = tl.load(ds_out + chunk * K * V + kv_off, mask=m_kv, other=0.0)
        if HAS_DECAY:
            b_dh *= tl.load(decay + chunk)
        b_dh += b_ds - tl.dot(tl.trans(b_w), b_dv, input_precision=DOT_PREC)
    tl.store(dh0 + i_bh * K * V + kv_off, b_dh, mask=m_kv)


# = recall_lm.kernels.delta.interface.TRITON_MAX_K: the chunk tiles of W and K ⊙ e^{γ_C − γ}
# ([64, BK] fp32) must fit the A100's shared memory
MAX_K = 128


def _blocks(K: int, V: int) -> tuple[int, int]:
    """(BK, BV): the whole key width (≤ MAX_K), and value blocks of up to 64."""
    return max(16, next_power_of_2(K)), max(16, min(64, next_power_of_2(V)))


def scan_forward(W, U, Kd, decay, h):
    """Triton version of ``chunked_torch._scan``: (V_new, chunk-start states, final state)."""
    BH, NT, C, K = W.shape
    V = U.shape[-1]
    BK, BV = _blocks(K, V)
    v_new, states, final = (
        U.new_empty(U.shape),
        U.new_empty(BH, NT, K, V),
        U.new_empty(BH, K, V),
    )  # contiguous
    decay_arg = decay.reshape(BH, NT).contiguous() if decay is not None else W
    delta_scan_fwd_kernel[(triton.cdiv(V, BV), BH)](
        W.contiguous(),
        U.contiguous(),
        Kd.contiguous(),
        decay_arg,
        h.contiguous(),
        states,
        v_new,
        final,
        NT,
        K=K,
        V=V,
        C=C,
        BK=BK,
        BV=BV,
        HAS_DECAY=decay is not None,
        USE_H0=True,
        DOT_PREC=DOT_PRECISION,
        **LAUNCH,
    )
    return v_new, states, final


def scan_backward(W, Kd, decay, dv_out, ds_out, dh):
    """Triton version of the reverse scan in ``chunked_torch._scan_backward``: (dV_new, dh_after, dh₀)."""
    BH, NT, C, K = W.shape
    V = dv_out.shape[-1]
    BK, BV = _blocks(K, V)
    dv_new, dh_after, dh0 = (dv_out.new_empty(shape) for shape in (dv_out.shape, ds_out.shape, dh.shape))
    decay_arg = decay.reshape(BH, NT).contiguous() if decay is not None else W
    delta_scan_bwd_kernel[(triton.cdiv(V, BV), BH)](
        W.contiguous(), Kd.contiguous(), decay_arg, dv_out.contiguous(), ds_out.contiguous(), dh.contiguous(),
        dh_after, dv_new, dh0, NT, K=K, V=V, C=C, BK=BK, BV=BV, HAS_DECAY=decay is not None, USE_DHT=True,
        DOT_PREC=DOT_PRECISION, **LAUNCH)
    return dv_new, dh_after, dh0
