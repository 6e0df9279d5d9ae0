"""The gated delta rule's chunked PyTorch and token-loop backends against the fp64 loop with the
transition matrix written out: outputs, final state and every gradient (q, k, v, β, g, initial state)."""
import pytest
import torch

from recall_lm.kernels.ops import gated_delta_rule
from tests.kernels.delta_testing import compare_to_naive, make_inputs

RTOL_FP64 = 1e-9  # fp64 end to end: only rounding differs from the naive loop
RTOL_FP32 = 2e-4


@pytest.mark.parametrize("T", [1, 15, 63, 64, 65, 130])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
@pytest.mark.parametrize("gated", [False, True])
def test_chunked_matches_naive(T, chunk_size, gated):
    x = make_inputs(B=2, T=T, H=2, K=8, V=4, gated=gated, seed=T)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=chunk_size)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("backend", ["recurrent", "torch"])
def test_fp32_matches_naive(backend, gated):
    x = make_inputs(B=2, T=100, H=2, K=16, V=8, gated=gated, dtype=torch.float32)
    compare_to_naive(x, backend, RTOL_FP32)


@pytest.mark.parametrize("gated", [False, True])
def test_bf16_inputs_close_to_fp64(gated):
    """bf16 inputs are computed on fp32 chunked copies; the output comes back in bf16 (checked inside)."""
    x = make_inputs(B=2, T=70, H=2, K=16, V=8, gated=gated, dtype=torch.bfloat16)
    compare_to_naive(x, "torch", 2e-2, chunk_size=32)


@pytest.mark.parametrize("gate_range", ["strong", "weak"])
@pytest.mark.parametrize("beta_range", ["near0", "near1"])
def test_extreme_decay_and_write_strength(gate_range, beta_range):
    x = make_inputs(B=1, T=130, H=2, K=8, V=4, gate_range=gate_range, beta_range=beta_range)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=64)


def test_negative_eigenvalues_and_identical_keys():
    """β ∈ (0, 2) and one key through the whole chunk, in fp32: the blocked inverse stays accurate where
    the Neumann series of (I + A)⁻¹ has binomially large terms."""
    x = make_inputs(B=1, T=64, H=1, K=16, V=16, dtype=torch.float32, seed=7)
    with torch.no_grad():
        x["k"].copy_(x["k"][:, :1].expand_as(x["k"]))
        x["beta"].mul_(2.0)
    compare_to_naive(x, "torch", RTOL_FP32, chunk_size=64)


@pytest.mark.parametrize("l2_keys", [True, False])
def test_normalised_and_short_keys(l2_keys):
    x = make_inputs(B=2, T=70, H=2, K=8, V=4, l2_keys=l2_keys)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=32)
    compare_to_naive(x, "recurrent", RTOL_FP64)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("backend", ["recurrent", "torch"])
def test_varlen_matches_naive(backend, gated):
    cu = torch.tensor([0, 5, 70, 71, 130])
    x = make_inputs(B=1, T=130, H=2, K=8, V=4, gated=gated, N=4)
    compare_to_naive(x, backend, RTOL_FP64, chunk_size=32, cu_seqlens=cu)


def test_no_initial_state_and_custom_scale():
    x = make_inputs(B=2, T=40, H=1, K=8, V=4, use_h0=False)
    compare_to_naive(x, "torch", RTOL_FP64, chunk_size=16, scale=0.7)


def test_chunked_gradcheck_fp64():
    x = make_inputs(B=1, T=20, H=1, K=4, V=3)
    names = ("q", "k", "v", "beta", "g", "initial_state")

    def f(*tensors):
        o, s = gated_delta_rule(*tensors[:5], initial_state=tensors[5], output_final_state=True,
                                backend="torch", chunk_size=16)
        return o, s

    assert torch.autograd.gradcheck(f, tuple(x[n] for n in names))


def test_an_unrolled_state_recalls_its_last_write():
    """β = 1 with a unit key overwrites what the state holds for that key: S^T k = v exactly."""
    K = V = 4
    k = torch.eye(K, dtype=torch.float64)[None, :, None].expand(1, K, 1, K).contiguous()
    k = torch.cat([k, k[:, :1]], 1)  # key 0 written twice
    v = torch.randn(1, K + 1, 1, V, dtype=torch.float64)
    beta = torch.ones(1, K + 1, 1, dtype=torch.float64)
    _, S = gated_delta_rule(k, k, v, beta, initial_state=torch.randn(1, 1, K, V, dtype=torch.float64),
                            output_final_state=True, backend="torch", chunk_size=16)
    recalled = torch.einsum("kv,k->v", S[0, 0], torch.eye(K, dtype=torch.float64)[0])
    torch.testing.assert_close(recalled, v[0, -1, 0])  # the second write replaced the first
    torch.testing.assert_close(S[0, 0, 1:], v[0, 1:K, 0])


@pytest.mark.parametrize("op", ["delta", "dplr"])
def test_a_second_backward_gives_the_same_gradients(op):
    """A second backward through the same graph (retain_graph): the DPLR backend keeps the chunk-local
    graph for the first and rebuilds it for the second, the delta rule's written-out backward reads its
    saved tensors again; both must give the first backward's gradients (checked against the fp64 loop by
    the tests above and in test_dplr.py)."""
    from recall_lm.kernels.ops import dplr_delta_rule
    from tests.kernels import delta_testing, test_dplr

    if op == "delta":
        x = delta_testing.make_inputs(B=1, T=70, H=2, K=8, V=4, gated=True)
        o, _ = gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"], initial_state=x["initial_state"],
                                backend="torch", chunk_size=32)
    else:
        x = test_dplr.make_inputs(B=1, T=70)
        o, _ = dplr_delta_rule(*(x[n] for n in test_dplr.NAMES), initial_state=x["initial_state"],
                               backend="torch", chunk_size=32)
    leaves = [t for t in x.values() if t is not None and t.requires_grad]
    do = torch.randn_like(o)
    first = torch.autograd.grad(o, leaves, do, retain_graph=True)
    second = torch.autograd.grad(o, leaves, do)
    for g1, g2 in zip(first, second):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
