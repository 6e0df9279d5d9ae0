"""Triton kernels (run by the interpreter on CPU) against the naive fp64 reference.

Interpreter shapes stay small (T <= 130, H <= 2 per kv head, D <= 32); the full grid is slow-marked.
Outer blocks are 16 tokens in the interpreter, so windows of 7, 64 and >= T span one to nine blocks.
"""
from __future__ import annotations

import pytest
import torch

from recall_lm.kernels.swa import sliding_window_attention
from recall_lm.kernels.swa.naive import swa_naive
from recall_lm.kernels.swa.triton_forward import swa_forward
from tests.kernels.test_swa_api import forward_backward, make_qkv, max_rel_err

# fp32 inputs, fp32 arithmetic ("ieee" dots) against fp64: observed ~1e-6.
TOL_FP32 = 2e-5
# Low-precision inputs: the reference runs in fp64 on the same rounded inputs, so the error is the
# rounding of o, dq, dk, dv to the output dtype (bf16: 2^-8 relative, fp16: 2^-11) plus fp32 noise.
TOL_LOW = {torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


def compare(q, k, v, do, window, tol, **kwargs):
    want = forward_backward(*(x.detach().double().requires_grad_() for x in (q, k, v)), do.double(), window,
                            "naive", **kwargs)
    got = forward_backward(q, k, v, do, window, "triton", **kwargs)
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert g.dtype == q.dtype and g.shape == w.shape
        assert max_rel_err(g, w) <= tol, f"{name}: {max_rel_err(g, w):.2e}"


@pytest.mark.parametrize(
    "B,T,window,D",
    [(2, 1, 1, 16), (1, 17, 7, 32), (1, 17, 64, 16), (2, 100, 1, 16), (1, 100, 7, 32), (1, 129, 64, 32),
     (1, 129, 200, 16)],
)
def test_matches_naive_fp32(B, T, window, D):
    compare(*make_qkv(B=B, T=T, H=2, D=D, dtype=torch.float32, seed=T + window), window, TOL_FP32)


@pytest.mark.slow
@pytest.mark.parametrize("T", [1, 17, 100, 129])
@pytest.mark.parametrize("window", [1, 7, 64, 130])
@pytest.mark.parametrize("D", [16, 32, 64])
def test_matches_naive_fp32_grid(T, window, D):
    compare(*make_qkv(B=2, T=T, H=2, D=D, dtype=torch.float32, seed=T + window), window, TOL_FP32)


def test_head_dim_not_power_of_two():
    compare(*make_qkv(B=1, T=40, H=2, D=24, dtype=torch.float32), 9, TOL_FP32)


def test_gqa():
    compare(*make_qkv(B=2, T=50, H=4, Hk=2, D=16, dtype=torch.float32), 21, TOL_FP32)


@pytest.mark.parametrize("window", [1, 7, 64])
def test_varlen_matches_separate_sequences(window):
    cu = [0, 5, 40, 41, 41, 100, 130]
    q, k, v, do = make_qkv(B=1, T=130, H=2, Hk=1, D=16, dtype=torch.float32, seed=window)
    got = forward_backward(q, k, v, do, window, "triton", cu_seqlens=torch.tensor(cu, dtype=torch.int32))
    parts = []
    for s, e in zip(cu[:-1], cu[1:]):
        x = [t[:, s:e].detach().double().requires_grad_() for t in (q, k, v)]
        parts.append(forward_backward(*x, do[:, s:e].double(), window, "naive"))
    for i, name in enumerate(("o", "dq", "dk", "dv")):
        want = torch.cat([p[i] for p in parts], dim=1)
        assert max_rel_err(got[i], want) <= TOL_FP32, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,window", [(100, 7), (70, 70)])
def test_low_precision(dtype, T, window):
    compare(*make_qkv(B=1, T=T, H=2, D=32, dtype=dtype, seed=T), window, TOL_LOW[dtype])


def test_log_sum_exp_is_stored():
    q, k, v, _ = make_qkv(B=2, T=45, H=2, D=16, dtype=torch.float32)
    cu = torch.tensor([0, 20, 45], dtype=torch.int32)
    for window, cu_seqlens, x in ((6, None, (q, k, v)), (30, cu, (t[:1] for t in (q, k, v)))):
        x = [t.detach().contiguous() for t in x]
        o, lse = swa_forward(*x, window, 0.25, cu_seqlens)
        o_ref, lse_ref = swa_naive(*x, window, 0.25, cu_seqlens, return_lse=True)
        assert max_rel_err(o, o_ref) <= TOL_FP32
        assert (lse.double() - lse_ref).abs().max().item() <= 1e-5


def test_large_scores_stay_finite():
    """Scores of several hundred: the online softmax must rescale, not overflow."""
    q, k, v, do = make_qkv(B=1, T=60, H=1, D=16, dtype=torch.float32)
    with torch.no_grad():
        q.mul_(30.0)
    compare(q, k, v, do, 20, TOL_FP32 * 10)


def test_non_contiguous_inputs():
    q, k, v, do = make_qkv(B=1, T=40, H=2, D=16, dtype=torch.float32)
    qt = q.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # [B, T, H, D] view
    assert not qt.is_contiguous()
    got = sliding_window_attention(qt, k, v, 9, backend="triton")
    torch.testing.assert_close(got, sliding_window_attention(q, k, v, 9, backend="torch"), rtol=0, atol=2e-6)
