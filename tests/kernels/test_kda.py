"""KDA's op (recall_lm.kernels.dplr.kda) on its own chunked path and the DPLR backends against the KDA
loop in fp64 written as the paper writes it (decay, then the delta-rule write): outputs, final state,
every gradient incl. β and the gate, odd lengths, strong decays, varlen, initial state; fla's
``naive_recurrent_kda``; decoding steps."""

import pytest
import torch
import torch.nn.functional as F

from recall_lm.kernels.ops import kda_delta_rule, kda_delta_rule_step
from recall_lm.kernels.utils import interpreter_enabled
from tests.fla_files import load_fla_file
from tests.kernels import gla_testing
from tests.kernels.gla_testing import GATE_RANGES

NAMES = ("q", "k", "v", "beta", "gk")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(
    B=2,
    T=15,
    H=2,
    K=8,
    V=4,
    N=None,
    dtype=torch.float64,
    gate_range="typical",
    use_h0=True,
    seed=0,
    beta_max=1.0,
):
    """KDA-shaped inputs: unit keys per head, β ∈ (0, beta_max), per-channel log-decays in ``gate_range``."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, lo=-1.0, hi=1.0):
        return torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    lo, hi = GATE_RANGES[gate_range]
    x = {
        "q": F.normalize(rand(B, T, H, K), dim=-1),
        "k": F.normalize(rand(B, T, H, K), dim=-1),
        "v": rand(B, T, H, V),
        "beta": rand(B, T, H, lo=0.0, hi=beta_max),
        "gk": rand(B, T, H, K, lo=lo, hi=hi),
    }
    x = {n: t.to(dtype) for n, t in x.items()}
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x["initial_state"] = rand(B if N is None else N, H, K, V).to(state_dtype) if use_h0 else None
    return {n: None if t is None else t.requires_grad_() for n, t in x.items()}


run = gla_testing.op_runner(kda_delta_rule, NAMES)


def compare_to_naive(inputs, backend, rtol, **kwargs):
    gla_testing.compare_to_naive(inputs, backend, rtol, run_op=run, **kwargs)


CHUNKED = ["torch", "dplr_torch"]  # KDA's own chunked path, and through the DPLR one


@pytest.mark.parametrize("backend", CHUNKED)
@pytest.mark.parametrize("T", [1, 15, 64, 65])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_chunked_matches_the_kda_loop(T, chunk_size, backend):
    compare_to_naive(make_inputs(T=T, seed=T), backend, 1e-9, chunk_size=chunk_size)


@pytest.mark.parametrize("backend", CHUNKED)
@pytest.mark.parametrize("gate_range", ["strong", "weak"])
def test_decay_extremes_and_negative_eigenvalues(gate_range, backend):
    """KDA's gate reaches −exp(A_log)·softplus(…) ≪ −1 per channel (the per-channel scores' exact
    sub-chunk form, not the factored matmul); β up to 2 (``allow_neg_eigval``)."""
    compare_to_naive(
        make_inputs(B=1, T=70, gate_range=gate_range, beta_max=2.0), backend, 1e-9, chunk_size=32
    )


@pytest.mark.parametrize("backend", ["recurrent", *CHUNKED])
def test_fp32_varlen_and_no_initial_state(backend):
    compare_to_naive(make_inputs(B=2, T=50, K=16, V=8, dtype=torch.float32), backend, 2e-4, chunk_size=16)
    cu = torch.tensor([0, 5, 70, 71, 99])
    compare_to_naive(make_inputs(B=1, T=99, N=4), backend, 1e-9, chunk_size=32, cu_seqlens=cu)
    compare_to_naive(make_inputs(T=20, use_h0=False), backend, 1e-9, chunk_size=16, scale=1.0)


@pytest.mark.parametrize("backend", CHUNKED)
def test_gradcheck(backend):
    x = make_inputs(B=1, T=10, H=1, K=4, V=3)

    def f(*tensors):
        return kda_delta_rule(
            *tensors[:5], initial_state=tensors[5], output_final_state=True, backend=backend, chunk_size=16
        )

    assert torch.autograd.gradcheck(f, tuple(x[n] for n in (*NAMES, "initial_state")))


def test_agrees_with_fla_naive_recurrent_kda():
    """fla's torch loop keeps the state key-major too ([B, H, K, V]) and scales q by K^-1/2."""
    ref = load_fla_file("ops/kda/naive.py").naive_recurrent_kda
    x = {n: t.detach() for n, t in make_inputs(B=2, T=37, K=16, V=8, dtype=torch.float32).items()}
    o_ref, s_ref = ref(
        *(x[n] for n in ("q", "k", "v", "gk", "beta")),
        initial_state=x["initial_state"].clone(),
        output_final_state=True,
    )
    o, s = kda_delta_rule(
        *(x[n] for n in NAMES), initial_state=x["initial_state"], output_final_state=True, chunk_size=16
    )
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4)


def test_steps_equal_the_sequence():
    x = {n: t.detach() for n, t in make_inputs(B=2, T=12, dtype=torch.float32).items()}
    o, s = kda_delta_rule(*(x[n] for n in NAMES), initial_state=x["initial_state"], output_final_state=True)
    state = x["initial_state"]
    for t in range(12):
        o_t, state = kda_delta_rule_step(*(x[n][:, t] for n in NAMES), state)
        torch.testing.assert_close(o_t, o[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_named():
    x = {n: t.detach() for n, t in make_inputs(B=1, T=8, K=4, V=3, dtype=torch.float32).items()}
    with pytest.raises(ValueError, match="gk must have shape"):
        kda_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["gk"][..., :2])
    with pytest.raises(ValueError, match="beta must have"):
        kda_delta_rule(x["q"], x["k"], x["v"], x["gk"], x["gk"])
    with pytest.raises(ValueError, match="backend must be one of .*'dplr_torch'"):
        kda_delta_rule(*(x[n] for n in NAMES), backend="chunked")


def test_the_default_cpu_path_is_kdas_own(monkeypatch):
    """``auto`` on CPU runs kda_chunked, not the DPLR path (which this test makes fail)."""
    import recall_lm.kernels.dplr.kda as kda

    x = {n: t.detach() for n, t in make_inputs(B=1, T=20, dtype=torch.float32).items()}
    expected, _ = kda_delta_rule(*(x[n] for n in NAMES), backend="dplr_torch")
    monkeypatch.setattr(kda, "dplr_delta_rule", None)
    o, _ = kda_delta_rule(*(x[n] for n in NAMES))
    torch.testing.assert_close(o, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    not (torch.cuda.is_available() or interpreter_enabled()), reason="needs CUDA or TRITON_INTERPRET=1"
)
def test_triton_matches_the_kda_loop():
    x = {
        n: None if t is None else t.detach().to(DEVICE).requires_grad_()
        for n, t in make_inputs(B=1, T=21, K=16, V=16, dtype=torch.float32, gate_range="strong").items()
    }
    compare_to_naive(x, "triton", 2e-4, chunk_size=16)
