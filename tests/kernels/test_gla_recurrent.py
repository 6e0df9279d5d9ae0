"""Token-by-token backend and the decoding step against the fp64 naive loop."""
import pytest
import torch

from recall_lm.kernels.gla.naive import naive_gla
from recall_lm.kernels.ops import gated_linear_attention, gated_linear_attention_step
from tests.kernels.gla_testing import compare_to_naive, make_inputs

RTOL_FP64 = 1e-9


@pytest.mark.parametrize("T", [1, 65])
@pytest.mark.parametrize("gate", [None, "head", "channel"])
@pytest.mark.parametrize("use_u", [False, True])
def test_recurrent_matches_naive(T, gate, use_u):
    x = make_inputs(B=2, T=T, H=2, K=8, V=4, gate=gate, use_u=use_u)
    compare_to_naive(x, "recurrent", RTOL_FP64)


def test_recurrent_varlen():
    cu = torch.tensor([0, 5, 70, 71, 130])
    x = make_inputs(B=1, T=130, H=2, K=8, V=4, gate="channel", use_u=True, N=4)
    compare_to_naive(x, "recurrent", RTOL_FP64, cu_seqlens=cu)


@pytest.mark.parametrize("gate", [None, "head", "channel"])
@pytest.mark.parametrize("use_u", [False, True])
def test_step_matches_naive(gate, use_u):
    x = make_inputs(B=2, T=6, H=2, K=8, V=4, gate=gate, use_u=use_u, dtype=torch.float32)
    x = {n: t.detach() if t is not None else None for n, t in x.items()}
    o_ref, s_ref = naive_gla(x["q"], x["k"], x["v"], x["g"], x["u"], scale=8 ** -0.5,
                             initial_state=x["initial_state"], output_final_state=True)
    state = x["initial_state"]
    for t in range(6):
        g_t = None if x["g"] is None else x["g"][:, t]
        o_t, state = gated_linear_attention_step(x["q"][:, t], x["k"][:, t], x["v"][:, t], g_t, x["u"], state)
        assert o_t.shape == (2, 2, 4) and state.dtype == torch.float32
        torch.testing.assert_close(o_t, o_ref[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s_ref, rtol=1e-5, atol=1e-5)


def test_step_continues_chunked_prefill():
    x = make_inputs(B=1, T=40, H=2, K=8, V=4, gate="head", dtype=torch.float32)
    x = {n: t.detach() if t is not None else None for n, t in x.items()}
    o_full, _ = gated_linear_attention(x["q"], x["k"], x["v"], x["g"], backend="torch", chunk_size=16)
    _, state = gated_linear_attention(x["q"][:, :39], x["k"][:, :39], x["v"][:, :39], x["g"][:, :39],
                                      output_final_state=True, backend="torch", chunk_size=16)
    o_last, _ = gated_linear_attention_step(
        x["q"][:, 39], x["k"][:, 39], x["v"][:, 39], x["g"][:, 39], None, state
    )
    torch.testing.assert_close(o_last, o_full[:, 39], rtol=1e-5, atol=1e-5)
