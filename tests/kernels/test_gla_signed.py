"""Gated linear attention with signed per-head transitions a ∈ [−1, 1] (negative eigenvalues) on every
backend against the plain fp64 loop: outputs, final states, every gradient (a's included), odd lengths,
varlen with empty and one-token sequences, initial states, decoding steps."""

import pytest
import torch

from recall_lm.kernels.ops import signed_gated_linear_attention, signed_gated_linear_attention_step
from recall_lm.kernels.utils import interpreter_enabled
from tests.kernels import gla_testing

NAMES = ("q", "k", "v", "a")


def make_inputs(B=2, T=37, H=2, K=8, V=4, N=None, dtype=torch.float64, seed=0):
    """Transitions uniform in (−1, 1): about half negative, some near ±1 and near 0."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)

    x = {"q": rand(B, T, H, K), "k": rand(B, T, H, K), "v": rand(B, T, H, V), "a": rand(B, T, H)}
    x["initial_state"] = rand(B if N is None else N, H, K, V).to(
        torch.float64 if dtype == torch.float64 else torch.float32
    )
    return {n: t.requires_grad_() for n, t in x.items()}


run = gla_testing.op_runner(signed_gated_linear_attention, NAMES)


BACKENDS = [
    "torch",
    "recurrent",
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() or interpreter_enabled()),
            reason="needs CUDA or TRITON_INTERPRET=1",
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_the_loop_with_negative_transitions(backend):
    dtype = torch.float64 if backend != "triton" else torch.float32
    x = make_inputs(T=37 if backend != "triton" else 21, dtype=dtype)
    assert (x["a"] < 0).any() and (x["a"] > 0).any()
    gla_testing.compare_to_naive(
        x, backend, 1e-9 if dtype == torch.float64 else 2e-4, run_op=run, chunk_size=16
    )


@pytest.mark.parametrize("backend", ["torch", "recurrent"])
def test_varlen_restarts_the_sign(backend):
    cu = torch.tensor([0, 5, 5, 6, 40])
    gla_testing.compare_to_naive(
        make_inputs(B=1, T=40, N=4, seed=2), backend, 1e-9, run_op=run, chunk_size=16, cu_seqlens=cu
    )


def test_all_positive_transitions_are_plain_gated_linear_attention():
    from recall_lm.kernels.ops import gated_linear_attention

    x = {n: t.detach() for n, t in make_inputs(seed=3).items()}
    a = x["a"].abs() * 0.9 + 0.05
    o, s = signed_gated_linear_attention(
        x["q"], x["k"], x["v"], a, initial_state=x["initial_state"], output_final_state=True
    )
    o_ref, s_ref = gated_linear_attention(
        x["q"], x["k"], x["v"], a.log(), initial_state=x["initial_state"], output_final_state=True
    )
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(s, s_ref)


def test_steps_equal_the_sequence_and_parity_is_tracked():
    x = {n: t.detach() for n, t in make_inputs(B=2, T=12, dtype=torch.float32).items()}
    o, s = signed_gated_linear_attention(
        *(x[n] for n in NAMES), initial_state=x["initial_state"], output_final_state=True
    )
    state = x["initial_state"]
    for t in range(12):
        o_t, state = signed_gated_linear_attention_step(*(x[n][:, t] for n in NAMES), state)
        torch.testing.assert_close(o_t, o[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s, rtol=1e-5, atol=1e-5)
    # a = −1 on the 1-bits, +1 on the 0-bits: the state is (−1)^(number of ones) times the initial one
    bits = torch.tensor([[1, 0, 1, 1, 0, 1, 1]], dtype=torch.float64)
    zeros = torch.zeros(1, 7, 1, 1, dtype=torch.float64)
    _, final = signed_gated_linear_attention(zeros, zeros, zeros, (1 - 2 * bits)[..., None],
                                             initial_state=torch.ones(1, 1, 1, 1, dtype=torch.float64),
                                             output_final_state=True)
    assert final.item() == -1.0  # five ones
