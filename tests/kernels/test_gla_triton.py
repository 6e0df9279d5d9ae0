"""Triton backend (CPU interpreter) against the fp64 naive loop: outputs, final state, every gradient.

Interpreter runs are slow, so shapes stay small (T <= 130, H <= 2, K, V <= 32) and the wide sweeps are
marked slow. Tolerances: fp32 inputs within 1e-4 of max(|ref|, 1) (the interpreter's tl.dot is full fp32;
on GPU tl.dot uses TF32, about 1e-3); fp16 / bf16 inputs within 2e-2 / 5e-2 (rounding of inputs and
outputs; compute stays fp32).
"""
import pytest
import torch

from recall_lm.kernels.ops import gated_linear_attention
from tests.kernels.gla_testing import compare_to_naive, make_inputs, run

RTOL_FP32 = 1e-4
GATES = [None, "head", "channel"]
CU = [0, 5, 70, 71, 130]

# (T, chunk_size, gate, use_u): a few of each feature by default, the full product under slow.
FAST_CASES = [
    (1, 64, None, False), (15, 16, "head", True), (63, 32, None, True), (64, 64, "head", False),
    (65, 64, "head", True), (130, 32, None, False), (1, 16, "channel", True), (40, 16, "channel", False),
    (65, 32, "channel", True),
]
SLOW_CASES = [(T, C, g, u) for T in (1, 15, 63, 64, 65, 130) for C in (16, 32, 64) for g in GATES
              for u in (False, True) if (T, C, g, u) not in FAST_CASES]


def _shape(gate):
    # per-channel gates run the sub-chunk loops, the slowest code under the interpreter
    return dict(B=1, H=1, K=16, V=8) if gate == "channel" else dict(B=2, H=2, K=16, V=8)


@pytest.mark.parametrize("T,chunk_size,gate,use_u", FAST_CASES)
def test_matches_naive(T, chunk_size, gate, use_u):
    x = make_inputs(T=T, gate=gate, use_u=use_u, dtype=torch.float32, seed=T, **_shape(gate))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=chunk_size)


@pytest.mark.slow
@pytest.mark.parametrize("T,chunk_size,gate,use_u", SLOW_CASES)
def test_matches_naive_sweep(T, chunk_size, gate, use_u):
    x = make_inputs(T=T, gate=gate, use_u=use_u, dtype=torch.float32, seed=T, **_shape(gate))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=chunk_size)


def test_wide_head_dims_and_no_initial_state():
    # K, V > 16 exercise several lanes per block; V != K and no initial state
    x = make_inputs(B=1, T=70, H=2, K=32, V=24, gate="head", use_u=True, use_h0=False, dtype=torch.float32)
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=64, scale=0.7)


@pytest.mark.parametrize("gate,use_u", [("head", True), (None, False)])
def test_varlen_matches_naive(gate, use_u):
    x = make_inputs(B=1, T=130, H=2, K=16, V=8, gate=gate, use_u=use_u, N=4, dtype=torch.float32)
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=32, cu_seqlens=torch.tensor(CU))


@pytest.mark.parametrize("use_u", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_varlen_channel_matches_naive(use_u):
    cu = torch.tensor([0, 5, 40, 41, 60])
    x = make_inputs(B=1, T=60, H=1, K=16, V=8, gate="channel", use_u=use_u, N=4, dtype=torch.float32)
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=16, cu_seqlens=cu)


def test_varlen_equals_separate_calls():
    x = make_inputs(B=1, T=130, H=2, K=16, V=8, gate="head", use_u=True, N=4, dtype=torch.float32)
    o, s, grads = run(x, "triton", chunk_size=64, cu_seqlens=torch.tensor(CU))
    for n, (bos, eos) in enumerate(zip(CU, CU[1:])):
        part = {name: (t[:, bos:eos] if name in "qkvg" else t) for name, t in x.items()}
        part["initial_state"] = x["initial_state"][n : n + 1]
        o_n, s_n = gated_linear_attention(part["q"], part["k"], part["v"], part["g"], part["u"],
                                          initial_state=part["initial_state"], output_final_state=True,
                                          backend="triton", chunk_size=64)
        torch.testing.assert_close(o[:, bos:eos], o_n.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s[n : n + 1], s_n.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gate_range", ["strong", "weak"])
@pytest.mark.parametrize("gate", ["head", pytest.param("channel", marks=pytest.mark.slow)])
def test_extreme_decay(gate_range, gate):
    x = make_inputs(T=130, gate=gate, use_u=True, gate_range=gate_range, dtype=torch.float32, **_shape(gate))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=64)


def test_extreme_decay_channel_short():
    x = make_inputs(B=1, T=40, H=1, K=16, V=8, gate="channel", gate_range="strong", dtype=torch.float32)
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=32)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("gate", ["head", pytest.param("channel", marks=pytest.mark.slow)])
def test_half_precision_inputs(dtype, rtol, gate):
    x = make_inputs(T=65, gate=gate, use_u=True, dtype=dtype, **_shape(gate))
    compare_to_naive(x, "triton", rtol, chunk_size=32)


def test_no_final_state_gradient_path():
    # final state not requested: its gradient is absent and dg has no final-state term
    x = make_inputs(B=1, T=33, H=2, K=16, V=8, gate="head", dtype=torch.float32)
    ref = {n: t.detach().double().requires_grad_() for n, t in x.items() if t is not None}
    o_ref, _ = gated_linear_attention(
        ref["q"], ref["k"], ref["v"], ref["g"], initial_state=ref["initial_state"], backend="naive"
    )
    o, s = gated_linear_attention(x["q"], x["k"], x["v"], x["g"], initial_state=x["initial_state"],
                                  backend="triton", chunk_size=16)
    assert s is None
    o_ref.sum().backward()
    o.sum().backward()
    for name in ("q", "k", "v", "g", "initial_state"):
        torch.testing.assert_close(x[name].grad.double(), ref[name].grad, rtol=1e-4, atol=1e-4)


def test_triton_rejects_large_chunks():
    x = make_inputs(B=1, T=8, H=1, K=16, V=8, gate=None, dtype=torch.float32)
    with pytest.raises(ValueError, match="chunk_size 16, 32 or 64"):
        gated_linear_attention(x["q"], x["k"], x["v"], backend="triton", chunk_size=128)


def test_constant_gate_without_gradient():
    x = make_inputs(B=1, T=40, H=2, K=16, V=8, gate="head", use_u=True, dtype=torch.float32)
    x["g"] = x["g"].detach()
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=16)
