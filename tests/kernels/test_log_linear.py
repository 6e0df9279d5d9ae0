"""Log-linear attention (recall_lm.kernels.log_linear): the level partition against a hand-worked
example, the chunked and recurrent backends against the fp64 H matrix (outputs and the gradients of q, k,
v, g and λ; odd lengths, several chunk sizes, grouped heads, packed sequences), the Triton backend (under
the interpreter, fp32) likewise, against fla's ``naive_log_linear_attn``, decoding steps and
prefill-then-continue against the sequence, and the bad inputs it refuses."""

import pytest
import torch

from recall_lm.kernels.log_linear import log_linear_attention, log_linear_attention_step, num_levels
from recall_lm.kernels.log_linear.levels import level_table, trailing_ones
from recall_lm.kernels.utils import interpreter_enabled
from tests.fla_files import load_fla_file


def make(B=2, T=37, G=1, H=2, K=4, V=3, L=None, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = {
        "q": torch.randn(B, T, G, K, generator=gen, dtype=torch.float64),
        "k": torch.randn(B, T, G, K, generator=gen, dtype=torch.float64),
        "v": torch.randn(B, T, H, V, generator=gen, dtype=torch.float64),
        "g": -torch.rand(B, T, H, generator=gen, dtype=torch.float64),
        "level_scales": torch.rand(B, T, H, L or num_levels(T), generator=gen, dtype=torch.float64),
    }
    return {n: t.to(dtype).requires_grad_() for n, t in x.items()}


def test_levels_are_the_binary_decomposition_of_the_prefix():
    """Query 6 = 110₂: itself at level 0, {4, 5} at level 2, {0, 1, 2, 3} at level 3; query 5 = 101₂:
    {4} at level 1 and {0 … 3} at level 3."""
    table = level_table(8)
    assert table[6].tolist() == [3, 3, 3, 3, 2, 2, 0, -1]
    assert table[5].tolist() == [3, 3, 3, 3, 1, 0, -1, -1]
    assert [num_levels(T) for T in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 3, 3, 4, 7, 8]
    assert [trailing_ones(t) for t in (0, 1, 2, 3, 7, 8)] == [0, 1, 0, 2, 3, 0]


def compare(x, backend, rtol, scaled=False, **kwargs):
    """Outputs and gradients against the fp64 H matrix; ``scaled``: the absolute tolerance is rtol times
    max(|reference|, 1) per tensor (fp32 sums of many terms, e.g. dg's reverse cumulative sum)."""
    inputs = list(x.values())
    out, _ = log_linear_attention(*inputs, backend=backend, scale=0.5, **kwargs)
    ref, _ = log_linear_attention(*inputs, backend="naive", scale=0.5, **kwargs)
    weight = torch.randn_like(ref)
    got = torch.autograd.grad((out * weight).sum(), inputs)
    want = torch.autograd.grad((ref * weight).sum(), inputs)
    def atol(t):
        return rtol * max(1.0, t.abs().max().item()) if scaled else rtol

    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol(ref))
    for name, a, b in zip(x, got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol(b), msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("T, chunk_size", [(1, 16), (37, 8), (64, 16), (130, 16), (70, 64)])
def test_chunked_matches_the_h_matrix(T, chunk_size):
    compare(make(T=T, seed=T), "torch", 1e-10, chunk_size=chunk_size)


@pytest.mark.parametrize("backend", ["torch", "recurrent"])
def test_grouped_heads_fp32_and_packed_sequences(backend):
    compare(make(T=45, G=2, H=4, dtype=torch.float32), backend, 2e-5, chunk_size=16)
    compare(make(B=1, T=70, L=7), backend, 1e-10, chunk_size=8, cu_seqlens=torch.tensor([0, 5, 40, 41, 70]))


# The Triton tests run under the interpreter here (full fp32 tl.dot) and on CUDA in make gpu-check (TF32).
TRITON_DEVICE, TRITON_RTOL = ("cuda", 2e-3) if torch.cuda.is_available() else ("cpu", 2e-5)
needs_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() or interpreter_enabled()), reason="needs CUDA or TRITON_INTERPRET=1"
)


def on_triton_device(x):
    return {n: t.detach().to(TRITON_DEVICE).requires_grad_() for n, t in x.items()}


@needs_triton
@pytest.mark.parametrize(
    "T, chunk_size, K, V",
    [
        (1, 16, 4, 3),
        (37, 16, 4, 3),
        (70, 64, 16, 70),
        pytest.param(64, 16, 16, 16, marks=pytest.mark.slow),
        pytest.param(150, 16, 8, 20, marks=pytest.mark.slow),
        pytest.param(200, 32, 4, 3, marks=pytest.mark.slow),
    ],
)
def test_triton_matches_the_h_matrix(T, chunk_size, K, V):
    """Odd lengths, one to ten chunks (chunk levels 0 … 3 of the block-state tree), K and V below, at and
    above the 16-wide blocks (V = 70: two V blocks of 64), every gradient; fp32 against fp64."""
    x = on_triton_device(make(T=T, K=K, V=V, seed=T, dtype=torch.float32))
    compare(x, "triton", TRITON_RTOL, scaled=True, chunk_size=chunk_size)


@needs_triton
def test_triton_grouped_heads_packed_sequences_and_spare_levels():
    x = on_triton_device(make(T=45, G=2, H=4, L=9, dtype=torch.float32))
    compare(x, "triton", TRITON_RTOL, scaled=True, chunk_size=16)
    x = on_triton_device(make(B=1, T=60, L=7, dtype=torch.float32))
    cu_seqlens = torch.tensor([0, 5, 40, 41, 60], device=TRITON_DEVICE)
    compare(x, "triton", TRITON_RTOL, scaled=True, chunk_size=16, cu_seqlens=cu_seqlens)


@needs_triton
def test_triton_limits_are_named():
    x = {n: t.detach() for n, t in make(T=20).items()}
    with pytest.raises(ValueError, match="backend='triton' needs it computes in fp32"):
        log_linear_attention(*x.values(), backend="triton")
    x32 = {n: t.float() for n, t in x.items()}
    with pytest.raises(ValueError, match="16 ≤ chunk_size ≤ 64, got 8"):
        log_linear_attention(*x32.values(), backend="triton", chunk_size=8)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_agrees_with_fla_naive_log_linear_attn(backend):
    ref = load_fla_file("ops/log_linear_attn/naive.py").naive_log_linear_attn
    dtype, tol = (torch.float64, 1e-10) if backend == "torch" else (torch.float32, TRITON_RTOL)
    x = {n: t.detach().to(dtype) for n, t in make(T=50, G=1, H=2, K=16, V=16).items()}
    if backend == "triton":
        x = {n: t.to(TRITON_DEVICE) for n, t in x.items()}
    o, _ = log_linear_attention(*x.values(), scale=0.7, chunk_size=16, backend=backend)
    torch.testing.assert_close(o, ref(*x.values(), scale=0.7), rtol=tol, atol=tol)


def test_steps_and_prefill_then_continue_equal_the_sequence():
    x = {n: t.detach() for n, t in make(T=23, G=1, H=2, L=num_levels(23)).items()}
    o, _ = log_linear_attention(*x.values())
    state = torch.zeros(2, 2, 0, 4, 3, dtype=torch.float64)
    for t in range(23):
        o_t, state = log_linear_attention_step(*(x[n][:, t] for n in x), state, t)
        torch.testing.assert_close(o_t, o[:, t], rtol=1e-10, atol=1e-10)
    assert state.shape[2] == num_levels(23) - 1  # 23 = 10111₂: levels 1, 2, 3 and 5 live
    live = [bool(state[0, 0, s].abs().sum()) for s in range(state.shape[2])]
    assert live == [True, True, True, False, True]
    first = {n: t[:, :16] for n, t in x.items()}
    rest = {n: t[:, 16:] for n, t in x.items()}
    o1, h = log_linear_attention(*first.values(), output_final_state=True)
    o2, _ = log_linear_attention(*rest.values(), initial_state=h, start=16)
    torch.testing.assert_close(torch.cat([o1, o2], 1), o, rtol=1e-10, atol=1e-10)


def test_bad_inputs_are_named():
    x = {n: t.detach() for n, t in make(T=20).items()}
    with pytest.raises(ValueError, match="level_scales has 3 levels; a sequence of 20 tokens needs 6"):
        log_linear_attention(*list(x.values())[:4], x["level_scales"][..., :3])
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        log_linear_attention(*x.values(), chunk_size=48)
    with pytest.raises(ValueError, match="initial_state / output_final_state need backend"):
        log_linear_attention(*x.values(), output_final_state=True, backend="torch")
    with pytest.raises(
        ValueError, match=r"step shapes: .* got q \(2, 1, 4\), k \(2, 1, 4\), v \(2, 2, 3\), g \(2, 1\)"
    ):
        log_linear_attention_step(
            *(t[:, 0] for t in list(x.values())[:3]),
            x["g"][:, 0, :1],
            x["level_scales"][:, 0],
            torch.zeros(2, 2, 0, 4, 3, dtype=torch.float64),
            0,
        )
    with pytest.raises(ValueError, match=r"g must have shape \[B, T, H\]"):
        log_linear_attention(x["q"], x["k"], x["v"], x["g"][..., :1], x["level_scales"])
