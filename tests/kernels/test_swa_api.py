"""Sliding-window attention: argument checks, dispatch, and the naive reference itself.

Also holds the small helpers (random inputs, forward + backward) used by the other test_swa_* files.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recall_lm.kernels.swa import sliding_window_attention


def make_qkv(B=1, T=17, H=2, Hk=None, D=16, dtype=torch.float64, seed=0):
    """Leaf tensors q [B, T, H, D], k and v [B, T, Hk, D] (requires_grad) and an upstream do."""
    gen = torch.Generator().manual_seed(seed)
    Hk = H if Hk is None else Hk

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    q, k, v = rand(B, T, H, D), rand(B, T, Hk, D), rand(B, T, Hk, D)
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), rand(B, T, H, D)


def forward_backward(q, k, v, do, window, backend, **kwargs):
    """Returns (o, dq, dk, dv), detached."""
    o = sliding_window_attention(q, k, v, window, backend=backend, **kwargs)
    grads = torch.autograd.grad(o, (q, k, v), do)
    return (o.detach(),) + tuple(grads)


def max_rel_err(got, want) -> float:
    """max |got - want| / max(|want|.max(), 1), in fp64."""
    want = want.double()
    return ((got.double() - want).abs().max() / want.abs().max().clamp(min=1.0)).item()


def loop_reference(q, k, v, window, scale):
    """One query at a time, in fp64: the most literal reading of the definition."""
    B, T, H, D = q.shape
    o = torch.zeros(B, T, H, D, dtype=torch.float64)
    for i in range(T):
        lo = max(0, i - window + 1)
        s = torch.einsum("bhd,bjhd->bhj", q[:, i].double(), k[:, lo:i + 1].double()) * scale
        o[:, i] = torch.einsum("bhj,bjhd->bhd", torch.softmax(s, dim=-1), v[:, lo:i + 1].double())
    return o


@pytest.mark.parametrize("T,window", [(1, 1), (9, 1), (9, 3), (20, 7), (20, 50)])
def test_naive_matches_loop(T, window):
    q, k, v, _ = make_qkv(B=2, T=T, H=2, D=8)
    want = loop_reference(q, k, v, window, 0.3)
    got = sliding_window_attention(q, k, v, window, scale=0.3, backend="naive")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["naive", "torch"])
def test_window_at_least_T_is_causal_attention(backend):
    q, k, v, _ = make_qkv(B=2, T=33, H=2, D=16)
    want = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), is_causal=True)
    want = want.transpose(1, 2)
    for window in (33, 1000):
        got = sliding_window_attention(q, k, v, window, backend=backend)  # default scale D ** -0.5
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_auto_is_torch_on_cpu():
    q, k, v, _ = make_qkv(T=40, dtype=torch.float32)
    got = sliding_window_attention(q, k, v, 5)
    torch.testing.assert_close(got, sliding_window_attention(q, k, v, 5, backend="torch"), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_empty_sequence_axis(backend):
    q, k, v, _ = make_qkv(T=0, dtype=torch.float32)
    o = sliding_window_attention(q, k, v, 4, backend=backend)
    assert o.shape == q.shape
    assert all(g.shape == x.shape for g, x in zip(torch.autograd.grad(o.sum(), (q, k, v)), (q, k, v)))


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(window_size=0), "window_size"),
        (dict(window_size=-3), "window_size"),
        (dict(window_size=2.5), "window_size"),
        (dict(backend="flash"), "backend"),
        (dict(k=torch.zeros(1, 8, 3, 4), v=torch.zeros(1, 8, 3, 4)), "heads"),
        (dict(k=torch.zeros(1, 9, 2, 4), v=torch.zeros(1, 9, 2, 4)), "q"),
        (dict(v=torch.zeros(1, 8, 2, 5)), "k and v"),
        (dict(q=torch.zeros(8, 2, 4)), "q"),
        (dict(q=torch.zeros(1, 8, 2, 4, dtype=torch.float16)), "dtype"),
        (dict(scale="big"), "scale"),
        (dict(cu_seqlens=torch.tensor([0, 3, 8]), batch=2), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([0, 3, 7])), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([0, 5, 3, 8])), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([0.0, 8.0])), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([[0, 8]])), "cu_seqlens"),
    ],
)
def test_bad_arguments_raise_value_error(change, name):
    batch = change.pop("batch", 1)
    args = dict(q=torch.zeros(batch, 8, 2, 4), k=torch.zeros(batch, 8, 2, 4), v=torch.zeros(batch, 8, 2, 4),
                window_size=3, scale=None, cu_seqlens=None, backend="torch")
    args.update(change)
    with pytest.raises(ValueError, match=name):
        sliding_window_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("window_size"), **args)


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, _ = make_qkv(dtype=torch.float32)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        sliding_window_attention(q, k, v, 3, backend="triton")


def test_triton_rejects_large_head_dim():
    q, k, v, _ = make_qkv(D=160, dtype=torch.float32)
    with pytest.raises(ValueError, match="head dim"):
        sliding_window_attention(q, k, v, 3, backend="triton")


def test_triton_rejects_fp64():
    q, k, v, _ = make_qkv()
    with pytest.raises(ValueError, match="fp64"):
        sliding_window_attention(q, k, v, 3, backend="triton")
