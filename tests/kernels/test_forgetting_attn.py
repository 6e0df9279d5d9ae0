"""Forgetting attention (recall_lm.kernels.forgetting_attn): the blocked path with its hand-written
backward, and the Triton kernels (under the interpreter or on CUDA), against the fp64 full-mask loop
(outputs and the gradients of q, k, v and the gate; odd lengths, windows, GQA, packed sequences),
against fla's ``naive_forgetting_attn``, decoding steps against the sequence, long strongly-gated
sequences without overflow, and the tiles it forms."""

import pytest
import torch

from recall_lm.kernels.forgetting_attn import blocked_torch, forgetting_attention, forgetting_attention_step
from recall_lm.kernels.utils import interpreter_enabled
from tests.fla_files import load_fla_file


def make(B=2, T=70, H=4, Hk=2, D=8, Dv=5, dtype=torch.float64, gate=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = {
        "q": torch.randn(B, T, H, D, generator=gen, dtype=torch.float64),
        "k": torch.randn(B, T, Hk, D, generator=gen, dtype=torch.float64),
        "v": torch.randn(B, T, Hk, Dv, generator=gen, dtype=torch.float64),
        "g": -gate * torch.rand(B, T, H, generator=gen, dtype=torch.float64),
    }
    return {n: t.to(dtype).requires_grad_() for n, t in x.items()}


def compare(x, rtol, **kwargs):
    inputs = [x[n] for n in ("q", "k", "v", "g")]
    out = forgetting_attention(*inputs, backend="torch", **kwargs)
    ref = forgetting_attention(*inputs, backend="naive", **kwargs)
    weight = torch.randn_like(ref)
    got = torch.autograd.grad((out * weight).sum(), inputs)
    want = torch.autograd.grad((ref * weight).sum(), inputs)
    torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol)
    for name, a, b in zip("qkvg", got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("T", [1, 63, 65, 150])
@pytest.mark.parametrize("window_size", [None, 37])
def test_blocked_matches_the_fp64_loop(T, window_size):
    compare(make(T=T, seed=T), 1e-10, window_size=window_size)


def test_fp32_gqa_and_packed_sequences():
    compare(make(T=90, dtype=torch.float32), 2e-5, scale=0.3)
    compare(make(B=1, T=99, H=2, Hk=1), 1e-10, cu_seqlens=torch.tensor([0, 5, 70, 71, 99]))
    compare(make(B=1, T=99), 1e-10, cu_seqlens=torch.tensor([0, 40, 99]), window_size=16)


def test_gradcheck():
    x = make(B=1, T=9, H=2, Hk=1, D=3, Dv=2)
    assert torch.autograd.gradcheck(
        lambda *t: forgetting_attention(*t, backend="torch", window_size=5), tuple(x.values()))


def test_agrees_with_fla_naive_forgetting_attn():
    ref = load_fla_file("ops/forgetting_attn/naive.py").naive_forgetting_attn
    x = {n: t.detach() for n, t in make(T=45, dtype=torch.float32).items()}
    for window_size in (None, 11):
        o = forgetting_attention(*x.values(), window_size=window_size)
        torch.testing.assert_close(o, ref(*x.values(), window_size=window_size), rtol=1e-5, atol=1e-5)


def test_long_strongly_gated_sequences_stay_finite_and_exact():
    """c reaches about −8,000 here: the bias enters as c_i − c_j beside the scores, so no exp overflows;
    fp32's rounding of c is the only loss."""
    x = make(B=1, T=2000, H=2, Hk=2, D=8, Dv=4, dtype=torch.float32, gate=8.0)
    out = forgetting_attention(*x.values())
    assert torch.isfinite(out).all()
    ref = forgetting_attention(*(t.double() for t in x.values()), backend="naive")
    torch.testing.assert_close(out.double(), ref, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("window_size", [None, 7])
def test_steps_equal_the_sequence(window_size):
    x = {n: t.detach() for n, t in make(T=20, dtype=torch.float32).items()}
    o = forgetting_attention(*x.values(), window_size=window_size)
    cache = None
    for t in range(20):
        o_t, cache = forgetting_attention_step(*(x[n][:, t] for n in "qkvg"), cache, window_size=window_size)
        torch.testing.assert_close(o_t, o[:, t], rtol=1e-5, atol=1e-5)
    assert cache[0].shape[1] == (20 if window_size is None else window_size)


def test_tiles_are_blocks_of_queries_never_t_by_t(monkeypatch):
    shapes = []
    real = blocked_torch._scores

    def record(*args):
        s = real(*args)
        shapes.append(tuple(s.shape[-2:]))
        return s

    monkeypatch.setattr(blocked_torch, "_scores", record)
    T, window = 300, 40
    x = make(B=1, T=T, H=2, Hk=2)
    forgetting_attention(*x.values(), window_size=window).sum().backward()
    C = blocked_torch.BLOCK
    assert shapes and all(rows <= C and cols <= window - 1 + C for rows, cols in shapes)
    shapes.clear()
    forgetting_attention(*x.values()).sum().backward()
    assert max(rows for rows, _ in shapes) <= C < T


def test_bad_input_is_named():
    x = {n: t.detach() for n, t in make(T=8).items()}
    with pytest.raises(ValueError, match=r"g must be a floating \[B, T, H\]"):
        forgetting_attention(x["q"], x["k"], x["v"], x["g"][..., :1])
    with pytest.raises(ValueError, match="k/v heads"):
        forgetting_attention(x["q"][:, :, :3], x["k"], x["v"], x["g"][..., :3])
    with pytest.raises(ValueError, match="window_size must be None or an int >= 1"):
        forgetting_attention(*x.values(), window_size=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        forgetting_attention(*x.values(), backend="cuda")
    with pytest.raises(ValueError, match="backend='triton' needs D = Dv"):
        forgetting_attention(*x.values(), backend="triton")  # Dv 5 ≠ D 8


@pytest.mark.skipif(
    not (torch.cuda.is_available() or interpreter_enabled()), reason="needs CUDA or TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    "shape, kwargs",
    [
        (dict(B=2, T=45, H=2, Hk=2, D=16, Dv=16), {}),
        (dict(B=1, T=40, H=4, Hk=2, D=16, Dv=16), {"window_size": 9}),
        (dict(B=1, T=50, H=2, Hk=1, D=16, Dv=16), {"cu_seqlens": torch.tensor([0, 3, 30, 50])}),
    ],
    ids=["causal", "gqa_window", "packed"],
)
def test_triton_matches_the_fp64_loop(shape, kwargs):
    """fp32 (the interpreter's arithmetic); the gate's gradient comes from the kernels' dc."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = {n: t.detach().to(device).requires_grad_() for n, t in make(dtype=torch.float32, **shape).items()}
    if "cu_seqlens" in kwargs:
        kwargs = {**kwargs, "cu_seqlens": kwargs["cu_seqlens"].to(device)}
    inputs = list(x.values())
    out = forgetting_attention(*inputs, backend="triton", **kwargs)
    ref = forgetting_attention(*inputs, backend="naive", **kwargs)
    weight = torch.randn_like(ref)
    got = torch.autograd.grad((out * weight).sum(), inputs)
    want = torch.autograd.grad((ref * weight).sum(), inputs)
    torch.testing.assert_close(out, ref, rtol=2e-4, atol=2e-4)
    for name, a, b in zip("qkvg", got, want):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-4, msg=lambda m, name=name: f"d{name}: {m}")
