"""Blocked/banded PyTorch backend: exact against the naive reference, and O(T * w) memory."""
from __future__ import annotations

import pytest
import torch

from recall_lm.kernels.swa import sliding_window_attention
from tests.kernels.test_swa_api import forward_backward, make_qkv, max_rel_err

# fp64 end to end: only summation order differs from the naive full-mask softmax.
TOL_FP64 = 1e-10
# bf16 inputs, fp32 arithmetic, bf16 outputs and grads: bf16 rounding (2^-8) of values of size ~1-3.
TOL_BF16 = 1.5e-2


def compare(q, k, v, do, window, tol, **kwargs):
    want = forward_backward(q, k, v, do, window, "naive", **kwargs)
    got = forward_backward(q, k, v, do, window, "torch", **kwargs)
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert max_rel_err(g, w) <= tol, f"{name}: {max_rel_err(g, w):.2e}"


@pytest.mark.parametrize("T", [1, 17, 100, 129, 300])
@pytest.mark.parametrize("window", [1, 7, 64, 65, 300])
def test_matches_naive(T, window):
    compare(*make_qkv(B=2, T=T, H=2, D=8, seed=T + window), window, TOL_FP64)


@pytest.mark.parametrize("window", [1, 7, 70])
def test_gqa_matches_naive(window):
    compare(*make_qkv(B=2, T=100, H=4, Hk=2, D=8), window, TOL_FP64)
    compare(*make_qkv(B=1, T=100, H=3, Hk=1, D=8), window, TOL_FP64)


@pytest.mark.parametrize("window", [1, 7, 64, 500])
def test_varlen_matches_separate_sequences(window):
    cu = [0, 5, 70, 71, 130, 130, 300]
    q, k, v, do = make_qkv(B=1, T=300, H=2, D=8)
    got = forward_backward(q, k, v, do, window, "torch", cu_seqlens=torch.tensor(cu))
    parts = []
    for s, e in zip(cu[:-1], cu[1:]):
        x = [t[:, s:e].detach().requires_grad_() for t in (q, k, v)]
        parts.append(forward_backward(*x, do[:, s:e], window, "torch"))
    for i, name in enumerate(("o", "dq", "dk", "dv")):
        want = torch.cat([p[i] for p in parts], dim=1)
        assert max_rel_err(got[i], want) <= TOL_FP64, name
    compare(q, k, v, do, window, TOL_FP64, cu_seqlens=torch.tensor(cu))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision(dtype):
    q, k, v, do = make_qkv(B=2, T=100, H=2, D=16, dtype=dtype)
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    want = forward_backward(*exact, do.double(), 20, "naive")
    got = forward_backward(q, k, v, do, 20, "torch")
    tol = {torch.bfloat16: TOL_BF16, torch.float16: 2e-3, torch.float32: 1e-5}[dtype]
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert g.dtype == dtype
        assert max_rel_err(g, w) <= tol, f"{name}: {max_rel_err(g, w):.2e}"


def saved_tensor_stats(T, window, B=1, H=2, D=16):
    """Bytes of the distinct storages autograd saves for forward + backward, and the largest numel."""
    q, k, v, do = make_qkv(B=B, T=T, H=H, D=D, dtype=torch.float32)
    storages, largest = {}, 0

    def pack(t):
        nonlocal largest
        largest = max(largest, t.numel())
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        o = sliding_window_attention(q, k, v, window, backend="torch")
    torch.autograd.grad(o, (q, k, v), do)
    return sum(storages.values()), largest


def profiled_peak_bytes(T, window, B=1, H=2, D=16):
    """Peak of live CPU bytes allocated during forward + backward.

    Replays every allocation and free the profiler recorded ([memory] events of the kineto trace,
    signed byte counts) in time order; the inputs, allocated before profiling, are not counted.
    """
    q, k, v, do = make_qkv(B=B, T=T, H=H, D=D, dtype=torch.float32)
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        o = sliding_window_attention(q, k, v, window, backend="torch")
        torch.autograd.grad(o, (q, k, v), do)
        del o
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("window", [7, 64, 200])
def test_saved_memory_linear_in_T(window):
    T = 1024
    small, _ = saved_tensor_stats(T, window)
    big, largest = saved_tensor_stats(4 * T, window)
    assert big <= 4.5 * small, (small, big)
    assert largest < (4 * T) ** 2, largest


@pytest.mark.parametrize("window", [7, 64, 200])
def test_peak_memory_linear_in_T(window):
    T = 1024
    small = profiled_peak_bytes(T, window)
    big = profiled_peak_bytes(4 * T, window)
    assert 0 < big <= 4.5 * small, (small, big)


@pytest.mark.slow
def test_long_sequence_memory():
    """T = 16384, w = 256: forward + backward memory is linear in T and a few bands of scores."""
    T, window, H = 16384, 256, 2
    saved, largest = saved_tensor_stats(T, window, H=H)
    peak = profiled_peak_bytes(T, window, H=H)
    band = H * T * (window + 256) * 4  # fp32 scores of one band [H, T, S], S <= w + C
    assert largest <= H * T * (window + 256), largest
    assert saved <= 3 * band, (saved, band)
    assert peak <= 6 * band, (peak, band)
    saved_quarter, _ = saved_tensor_stats(T // 4, window, H=H)
    assert saved <= 4.5 * saved_quarter
    assert peak <= 4.5 * profiled_peak_bytes(T // 4, window, H=H)
