"""The gated delta rule's triton backend (scans over chunks as Triton kernels, run here under
``TRITON_INTERPRET=1``) against the fp64 naive loop: outputs, final state, every gradient."""
import pytest
import torch

from recall_lm.kernels.ops import gated_delta_rule
from recall_lm.kernels.utils import interpreter_enabled
from tests.kernels.delta_testing import compare_to_naive, make_inputs

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or interpreter_enabled()),
                                reason="needs CUDA or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL_FP32 = 2e-4  # fp32 (ieee) accumulation vs fp64


def on_device(x, dtype=None):
    return {
        n: None if t is None else t.detach().to(DEVICE, dtype or t.dtype).requires_grad_()
        for n, t in x.items()
    }


@pytest.mark.parametrize("T", [15, 64, 65, 130])
@pytest.mark.parametrize("gated", [False, True])
def test_matches_naive(T, gated):
    x = on_device(make_inputs(B=2, T=T, H=2, K=16, V=16, gated=gated, dtype=torch.float32, seed=T))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=32)


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_chunk_sizes_and_uneven_widths(chunk_size):
    x = on_device(make_inputs(B=1, T=70, H=2, K=24, V=40, dtype=torch.float32))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=chunk_size)


@pytest.mark.parametrize("gate_range", ["strong", "weak"])
def test_extreme_decays(gate_range):
    x = on_device(make_inputs(B=1, T=80, H=1, K=16, V=16, gate_range=gate_range, dtype=torch.float32))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=32)


def test_varlen_matches_naive():
    cu = torch.tensor([0, 5, 40, 41, 90], device=DEVICE)
    x = on_device(make_inputs(B=1, T=90, H=2, K=16, V=16, N=4, dtype=torch.float32))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=32, cu_seqlens=cu)


@pytest.mark.parametrize("dtype, rtol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_half_precision_inputs(dtype, rtol):
    """bf16/fp16 inputs, fp32 inside: within the inputs' rounding (stated tolerance, relative to max
    |ref|)."""
    x = make_inputs(B=1, T=64, H=2, K=16, V=16, dtype=torch.float32)
    x = {n: None if t is None else t.detach().to(DEVICE, dtype if n not in ("initial_state",) else t.dtype)
         .requires_grad_() for n, t in x.items()}
    compare_to_naive(x, "triton", rtol, chunk_size=32)


def test_fp64_and_large_chunks_are_refused():
    x = make_inputs(B=1, T=8, H=1, K=16, V=16)
    with pytest.raises(ValueError, match="fp32"):
        gated_delta_rule(*(x[n].detach() for n in ("q", "k", "v", "beta", "g")), backend="triton")
    x32 = {n: None if t is None else t.detach().float() for n, t in x.items()}
    with pytest.raises(ValueError, match="chunk_size"):
        gated_delta_rule(*(x32[n] for n in ("q", "k", "v", "beta", "g")), backend="triton", chunk_size=128)


def test_wide_heads_tile_the_value_width():
    """K = 80 (key tile 128, so local_bwd takes 32-wide value blocks) and V = 72 (two 64-wide blocks):
    every value-block loop and mask of the local kernels runs more than once."""
    x = on_device(make_inputs(B=1, T=40, H=1, K=80, V=72, dtype=torch.float32, seed=3))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=32)


@pytest.mark.parametrize("beta_range, l2_keys", [("near0", True), ("near1", True), ("uniform", False)])
def test_write_strengths_and_key_norms(beta_range, l2_keys):
    x = on_device(make_inputs(B=1, T=50, H=2, K=16, V=16, beta_range=beta_range, l2_keys=l2_keys,
                              dtype=torch.float32, seed=5))
    compare_to_naive(x, "triton", RTOL_FP32, chunk_size=16)


def test_negative_eigenvalues_and_identical_keys():
    """β ∈ (0, 2) (allow_neg_eigval) and one key repeated through the chunk: (I + A)⁻¹'s Neumann terms
    grow binomially here, so only a substitution (not a power series) stays accurate."""
    x = make_inputs(B=1, T=64, H=1, K=16, V=16, dtype=torch.float32, seed=7)
    with torch.no_grad():
        x["k"].copy_(x["k"][:, :1].expand_as(x["k"]))
        x["beta"].mul_(2.0)
    compare_to_naive(on_device(x), "triton", RTOL_FP32, chunk_size=64)
