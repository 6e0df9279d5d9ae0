"""Our convention against flash-linear-attention's plain-PyTorch references (per-head g, per-channel g, u).

fla's naive files are loaded straight from their paths, without importing the ``fla`` package (whose
import pulls in every Triton kernel and takes many seconds). They need only torch and einops.
"""
import pytest
import torch

from recall_lm.kernels.ops import gated_linear_attention
from tests.fla_files import load_fla_file
from tests.kernels.gla_testing import make_inputs


def _detached(**kw):
    x = make_inputs(dtype=torch.float32, **kw)
    return {n: t.detach() if t is not None else None for n, t in x.items()}


@pytest.mark.parametrize("backend", ["torch", "recurrent"])
def test_per_head_matches_fla_simple_gla(backend):
    ref = load_fla_file("ops/simple_gla/naive.py").naive_recurrent_simple_gla
    x = _detached(B=2, T=37, H=2, K=16, V=8, gate="head")
    o_ref, s_ref = ref(x["q"], x["k"], x["v"], x["g"], scale=0.2, initial_state=x["initial_state"],
                       output_final_state=True)
    o, s = gated_linear_attention(x["q"], x["k"], x["v"], x["g"], scale=0.2, initial_state=x["initial_state"],
                                  output_final_state=True, backend=backend, chunk_size=16)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "recurrent"])
def test_per_channel_matches_fla_gla(backend):
    ref = load_fla_file("ops/gla/naive.py").naive_recurrent_gla
    x = _detached(B=2, T=37, H=2, K=16, V=8, gate="channel")
    o_ref, s_ref = ref(
        x["q"], x["k"], x["v"], x["g"], initial_state=x["initial_state"], output_final_state=True
    )
    o, s = gated_linear_attention(x["q"], x["k"], x["v"], x["g"], initial_state=x["initial_state"],
                                  output_final_state=True, backend=backend, chunk_size=16)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "recurrent"])
def test_u_mode_matches_fla_rwkv6(backend):
    # fla's RWKV-6 reference takes [B, H, T, D] tensors, ``w`` as the log-decay itself (state *= exp(w)),
    # reads the state before the update and adds the bonus ``u * k_t v_t``: the same maths as ours.
    ref = load_fla_file("ops/rwkv6/recurrent_naive.py").naive_recurrent_rwkv6
    x = _detached(B=2, T=37, H=2, K=16, V=8, gate="channel", use_u=True)
    bhtd = [x[n].transpose(1, 2) for n in ("q", "k", "v", "g")]
    o_ref, s_ref = ref(*bhtd, x["u"], scale=0.5, initial_state=x["initial_state"], output_final_state=True)
    o, s = gated_linear_attention(x["q"], x["k"], x["v"], x["g"], x["u"], scale=0.5,
                                  initial_state=x["initial_state"], output_final_state=True, backend=backend,
                                  chunk_size=16)
    torch.testing.assert_close(o, o_ref.transpose(1, 2), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-5)
