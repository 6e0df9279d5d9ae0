"""The DPLR delta rule (RWKV-7's op): chunked and token-loop backends against the fp64 loop with the
transition matrix written out (outputs, final state, every gradient incl. a, b, gk and the initial
state), fla's plain ``dplr_recurrence``, decoding steps, varlen and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from recall_lm.kernels.ops import dplr_delta_rule, dplr_delta_rule_step
from recall_lm.kernels.utils import interpreter_enabled
from tests.fla_files import load_fla_file
from tests.kernels import gla_testing
from tests.kernels.gla_testing import GATE_RANGES

NAMES = ("q", "k", "v", "a", "b", "gk")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(
    B=2, T=15, H=2, K=8, V=4, N=None, dtype=torch.float64, gate_range="typical", use_h0=True, seed=0
):
    """RWKV-7-shaped inputs: a = −κ̂, b = κ̂ ⊙ iclr with κ̂ unit per head and iclr ∈ (0, 1)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, lo=-1.0, hi=1.0):
        return torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    kappa = F.normalize(rand(B, T, H, K), dim=-1)
    x = {"q": rand(B, T, H, K), "k": rand(B, T, H, K) / K**0.5, "v": rand(B, T, H, V), "a": -kappa,
         "b": kappa * rand(B, T, H, K, lo=0, hi=1), "gk": rand(B, T, H, K, lo=GATE_RANGES[gate_range][0],
                                                              hi=GATE_RANGES[gate_range][1])}
    x = {n: t.to(dtype) for n, t in x.items()}
    x["initial_state"] = rand(B if N is None else N, H, K, V).to(torch.float64 if dtype == torch.float64
                                                                   else torch.float32) if use_h0 else None
    return {n: None if t is None else t.requires_grad_() for n, t in x.items()}


run = gla_testing.op_runner(dplr_delta_rule, NAMES)


def compare_to_naive(inputs, backend, rtol, **kwargs):
    gla_testing.compare_to_naive(inputs, backend, rtol, run_op=run, **kwargs)


@pytest.mark.parametrize("T", [1, 15, 63, 64, 65, 130])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_chunked_matches_naive(T, chunk_size):
    compare_to_naive(make_inputs(T=T, seed=T), "torch", 1e-9, chunk_size=chunk_size)


@pytest.mark.parametrize("gate_range", ["strong", "weak"])
def test_decay_extremes(gate_range):
    compare_to_naive(make_inputs(B=1, T=130, gate_range=gate_range), "torch", 1e-9, chunk_size=64)


@pytest.mark.parametrize("backend", ["recurrent", "torch"])
def test_fp32_and_varlen(backend):
    compare_to_naive(make_inputs(B=2, T=100, K=16, V=8, dtype=torch.float32), backend, 2e-4)
    cu = torch.tensor([0, 5, 70, 71, 130])
    compare_to_naive(make_inputs(B=1, T=130, N=4), backend, 1e-9, chunk_size=32, cu_seqlens=cu)


def test_no_initial_state_custom_scale_and_gradcheck():
    compare_to_naive(make_inputs(T=40, use_h0=False), "torch", 1e-9, chunk_size=16, scale=1.0)
    x = make_inputs(B=1, T=20, H=1, K=4, V=3)

    def f(*tensors):
        return dplr_delta_rule(
            *tensors[:6], initial_state=tensors[6], output_final_state=True, backend="torch", chunk_size=16
        )

    assert torch.autograd.gradcheck(f, tuple(x[n] for n in (*NAMES, "initial_state")))


@pytest.mark.parametrize("backend", ["recurrent", "torch"])
def test_agrees_with_fla_dplr_recurrence(backend):
    ref = load_fla_file("ops/generalized_delta_rule/dplr/naive.py").dplr_recurrence
    x = {n: t.detach() for n, t in make_inputs(B=2, T=37, K=16, V=8, dtype=torch.float32).items()}
    bhtd = [x[n].transpose(1, 2) for n in NAMES]
    o_ref, s_ref = ref(*bhtd, initial_state=x["initial_state"].clone(), output_final_state=True)
    o, s = dplr_delta_rule(*(x[n] for n in NAMES), initial_state=x["initial_state"], output_final_state=True,
                           backend=backend, chunk_size=16)
    torch.testing.assert_close(o, o_ref.transpose(1, 2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4)


def test_steps_equal_the_sequence():
    x = {n: t.detach() for n, t in make_inputs(B=2, T=12, dtype=torch.float32).items()}
    o, s = dplr_delta_rule(*(x[n] for n in NAMES), initial_state=x["initial_state"], output_final_state=True)
    state = x["initial_state"]
    for t in range(12):
        o_t, state = dplr_delta_rule_step(*(x[n][:, t] for n in NAMES), state)
        torch.testing.assert_close(o_t, o[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"a": torch.rand(1, 8, 2, 3)}, "a must have shape"),
    ({"gk": torch.rand(1, 8, 2)}, "gk must have 4 dims"),
    ({"initial_state": torch.rand(3, 2, 4, 3)}, "initial_state must have shape"),
])
def test_bad_shapes_are_named(change, message):
    x = {n: t.detach() for n, t in make_inputs(B=1, T=8, K=4, V=3, dtype=torch.float32).items()}
    x.update(change)
    with pytest.raises(ValueError, match=message):
        dplr_delta_rule(*(x[n] for n in NAMES), initial_state=x["initial_state"])
    with pytest.raises(ValueError, match="backend"):
        dplr_delta_rule(*(x[n] for n in NAMES), backend="cuda")


TRITON = pytest.mark.skipif(not (torch.cuda.is_available() or interpreter_enabled()),
                            reason="needs CUDA or TRITON_INTERPRET=1")


def _on_device(x, dtype=None):
    return {
        n: None
        if t is None
        else t.detach().to(DEVICE, dtype if dtype and n != "initial_state" else t.dtype).requires_grad_()
        for n, t in x.items()
    }


@TRITON
@pytest.mark.parametrize(
    "T", [15, 65, pytest.param(64, marks=pytest.mark.slow), pytest.param(130, marks=pytest.mark.slow)]
)
def test_triton_matches_naive(T):
    """The triton backend (score kernels, solve, scans, output and backward kernels) vs the fp64 loop."""
    compare_to_naive(
        _on_device(make_inputs(B=2, T=T, K=16, V=16, dtype=torch.float32, seed=T)),
        "triton",
        2e-4,
        chunk_size=32,
    )


@TRITON
def test_triton_varlen_strong_decay():
    cu = torch.tensor([0, 5, 40, 41, 90], device=DEVICE)
    x = _on_device(make_inputs(B=1, T=90, K=16, V=24, N=4, dtype=torch.float32, gate_range="strong"))
    compare_to_naive(x, "triton", 2e-4, chunk_size=16, cu_seqlens=cu)


@TRITON
@pytest.mark.slow
def test_triton_bf16_inputs():
    x = _on_device(make_inputs(B=1, T=64, K=16, V=16, dtype=torch.float32), torch.bfloat16)
    compare_to_naive(x, "triton", 3e-2, chunk_size=32)  # bf16 inputs, fp32 inside


@TRITON
@pytest.mark.slow
def test_triton_full_chunks_and_uneven_widths():
    """Chunks of 64 (four 16-token sub-chunks per score matrix), K = 40 and V = 72 (two value blocks)."""
    x = _on_device(make_inputs(B=1, T=70, K=40, V=72, dtype=torch.float32, seed=11))
    compare_to_naive(x, "triton", 2e-4, chunk_size=64)
