"""Chunked PyTorch backend against the fp64 naive loop: outputs, final state, every gradient."""
import pytest
import torch

from recall_lm.kernels.ops import gated_linear_attention
from tests.kernels.gla_testing import compare_to_naive, make_inputs

# fp64 end to end: only rounding differs from the naive loop.
RTOL_FP64 = 1e-9


@pytest.mark.parametrize("T", [1, 15, 63, 64, 65, 130])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
@pytest.mark.parametrize("gate", [None, "head", "channel"])
@pytest.mark.parametrize("use_u", [False, True])
def test_matches_naive(T, chunk_size, gate, use_u):
    x = make_inputs(B=2, T=T, H=2, K=8, V=4, gate=gate, use_u=use_u, seed=T)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=chunk_size)


@pytest.mark.parametrize("gate_range", ["strong", "weak"])
@pytest.mark.parametrize("gate", ["head", "channel"])
@pytest.mark.parametrize("use_u", [False, True])
def test_extreme_decay_finite_and_correct(gate_range, gate, use_u):
    x = make_inputs(B=1, T=130, H=2, K=8, V=4, gate=gate, use_u=use_u, gate_range=gate_range)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=64)


@pytest.mark.parametrize("gate", [None, "head", "channel"])
@pytest.mark.parametrize("use_u", [False, True])
def test_varlen_matches_naive(gate, use_u):
    cu = torch.tensor([0, 5, 70, 71, 130])
    x = make_inputs(B=1, T=130, H=2, K=8, V=4, gate=gate, use_u=use_u, N=4)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=32, cu_seqlens=cu)


def test_varlen_equals_separate_calls():
    cu = [0, 5, 70, 71, 130]
    x = make_inputs(B=1, T=130, H=2, K=8, V=4, gate="channel", use_u=True, N=4, dtype=torch.float32)
    x = {n: t.detach() if t is not None else None for n, t in x.items()}
    o, s = gated_linear_attention(x["q"], x["k"], x["v"], x["g"], x["u"], initial_state=x["initial_state"],
                                  output_final_state=True, cu_seqlens=torch.tensor(cu), backend="torch")
    for n, (bos, eos) in enumerate(zip(cu, cu[1:])):
        o_n, s_n = gated_linear_attention(
            *(x[a][:, bos:eos] for a in ("q", "k", "v", "g")),
            x["u"],
            initial_state=x["initial_state"][n : n + 1],
            output_final_state=True,
            backend="torch",
        )
        torch.testing.assert_close(o[:, bos:eos], o_n, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s[n : n + 1], s_n, rtol=1e-5, atol=1e-5)


def test_no_initial_state_and_custom_scale():
    x = make_inputs(B=2, T=40, H=2, K=8, V=4, gate="head", use_h0=False)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=16, scale=0.3)


def test_fp32_inputs_close_to_fp64():
    x = make_inputs(B=2, T=130, H=2, K=16, V=8, gate="channel", use_u=True, dtype=torch.float32)
    compare_to_naive(x, "torch", 1e-4, chunk_size=64)


@pytest.mark.parametrize("gate", [None, "head", "channel"])
@pytest.mark.parametrize("use_u", [False, True])
def test_gradcheck(gate, use_u):
    x = make_inputs(B=1, T=20, H=1, K=3, V=2, gate=gate, use_u=use_u)
    names = [n for n, t in x.items() if t is not None]

    def fn(*args):
        kw = dict(zip(names, args))
        o, s = gated_linear_attention(kw["q"], kw["k"], kw["v"], kw.get("g"), kw.get("u"),
                                      initial_state=kw["initial_state"], output_final_state=True,
                                      chunk_size=16, backend="torch")
        return o, s

    assert torch.autograd.gradcheck(fn, tuple(x[n] for n in names), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("gate", [None, "head", "channel"])
def test_long_sequence_many_chunks(gate):
    # 38 chunks of 16 (the last one partly padded): the state scans over many chunks
    x = make_inputs(B=1, T=600, H=2, K=4, V=3, gate=gate, use_u=gate == "head", seed=3)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=16)


def test_constant_gate_without_gradient():
    # RetNet-style fixed decay: g needs no gradient (the backward skips dg), the others stay exact
    x = make_inputs(B=1, T=70, H=2, K=8, V=4, gate="head", use_u=False)
    x["g"] = x["g"].detach()
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=32)


@pytest.mark.parametrize("gate", ["head", "channel"])
def test_bf16_inputs_close_to_fp64(gate):
    """bf16 inputs take the branch that saves the inputs (not the chunked fp32 copies) and re-chunks them
    in the backward; outputs and gradients come back in bf16."""
    x = make_inputs(B=2, T=70, H=2, K=16, V=8, gate=gate, use_u=True, dtype=torch.bfloat16)
    compare_to_naive(x, "torch", 2e-2, chunk_size=32)
