"""kernels.gated_delta_rule: argument checks, dispatch, the decoding step, and fla's naive reference."""
import pytest
import torch

from recall_lm.kernels.ops import gated_delta_rule, gated_delta_rule_step
from tests.fla_files import load_fla_file
from tests.kernels.delta_testing import make_inputs


def inputs(B=1, T=8, H=2, K=4, V=3):
    x = make_inputs(B=B, T=T, H=H, K=K, V=V, dtype=torch.float32)
    return {n: None if t is None else t.detach() for n, t in x.items()}


@pytest.mark.parametrize("change, message", [
    ({"beta": torch.rand(1, 8)}, "beta must have 3 dims"),
    ({"g": torch.rand(1, 8, 2, 4)}, "g must have 3 dims"),
    ({"k": torch.rand(1, 8, 2, 5)}, "k must have shape"),
    ({"initial_state": torch.rand(2, 2, 4, 3)}, "initial_state must have shape"),
])
def test_bad_shapes_are_named(change, message):
    x = {**inputs(), **change}
    with pytest.raises(ValueError, match=message):
        gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"], initial_state=x["initial_state"])


def test_bad_backend_chunk_size_and_varlen_batch():
    x = inputs(B=2)
    args = (x["q"], x["k"], x["v"], x["beta"])
    with pytest.raises(ValueError, match="backend must be one of"):
        gated_delta_rule(*args, backend="cuda")
    with pytest.raises(ValueError, match="chunk_size"):
        gated_delta_rule(*args, chunk_size=48)
    with pytest.raises(ValueError, match="B = 1"):
        gated_delta_rule(*args, cu_seqlens=torch.tensor([0, 8]))


def test_steps_equal_the_sequence():
    x = inputs(T=12)
    o, s = gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"], initial_state=x["initial_state"],
                            output_final_state=True)
    state = x["initial_state"]
    for t in range(12):
        o_t, state = gated_delta_rule_step(x["q"][:, t], x["k"][:, t], x["v"][:, t], x["beta"][:, t],
                                           x["g"][:, t], state)
        torch.testing.assert_close(o_t, o[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s, rtol=1e-5, atol=1e-5)


def test_auto_uses_the_recurrence_for_one_token_and_empty_sequences_work():
    x = inputs(T=1)
    o, s = gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], output_final_state=True)
    assert o.shape == (1, 1, 2, 3) and s.dtype == torch.float32
    x = inputs(T=0)
    o, s = gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], initial_state=x["initial_state"],
                            output_final_state=True)
    assert o.shape == (1, 0, 2, 3)
    torch.testing.assert_close(s, x["initial_state"])


@pytest.mark.parametrize("gated", [True, False])
def test_agrees_with_fla_naive_recurrent_gated_delta_rule(gated):
    fla_naive = load_fla_file("ops/gated_delta_rule/naive.py").naive_recurrent_gated_delta_rule
    x = make_inputs(B=2, T=37, H=2, K=8, V=4, dtype=torch.float32, gated=gated)
    x = {n: None if t is None else t.detach() for n, t in x.items()}
    g = x["g"] if gated else torch.zeros_like(x["beta"])
    o_ref, s_ref = fla_naive(x["q"], x["k"], x["v"], x["beta"], g, initial_state=x["initial_state"].clone(),
                             output_final_state=True)
    o, s = gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"], initial_state=x["initial_state"],
                            output_final_state=True, backend="torch", chunk_size=16)
    torch.testing.assert_close(o, o_ref.to(o.dtype), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4)
