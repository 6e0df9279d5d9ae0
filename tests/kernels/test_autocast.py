"""Every public op under torch.autocast: its activations are cast to autocast's dtype, the rest (decays,
write strengths, states) passes through, and the op then runs exactly as it does when called outside
autocast with those inputs (``recall_lm.kernels.utils.autocast_aware``)."""
import pytest
import torch

import recall_lm.kernels.ops as kernels

B, T, H, D = 2, 37, 2, 16


def _inputs():
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D) for _ in range(3))
    k = torch.nn.functional.normalize(k, dim=-1)
    kappa = torch.nn.functional.normalize(torch.randn(B, T, H, D), dim=-1)
    return dict(
        gla=(kernels.gated_linear_attention, (q, k, v, -torch.rand(B, T, H, D) * 0.1), 3, {}),
        delta=(kernels.gated_delta_rule, (q, k, v, torch.rand(B, T, H), -torch.rand(B, T, H) * 0.1), 3, {}),
        dplr=(kernels.dplr_delta_rule, (q, k, v, -kappa, kappa * torch.rand(B, T, H, D),
                                        -torch.rand(B, T, H, D) * 0.1), 5, {}),
        swa=(kernels.sliding_window_attention, (q, k, v), 3, {"window_size": 8}),
    )


@pytest.mark.parametrize("op_name", ["gla", "delta", "dplr", "swa"])
def test_op_under_autocast_equals_the_op_on_cast_activations(op_name):
    op, args, n_activations, kwargs = _inputs()[op_name]
    leaves = [x.clone().requires_grad_() for x in args]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = op(*leaves, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    cast = [x.to(torch.bfloat16) if i < n_activations else x for i, x in enumerate(args)]
    ref = op(*cast, **kwargs)
    ref = ref[0] if isinstance(ref, tuple) else ref
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref)
    out.float().sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.float32 for x in leaves)


def test_keyword_activations_are_cast_too():
    _, (q, k, v, g), _, _ = _inputs()["gla"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, _ = kernels.gated_linear_attention(q=q, k=k, v=v, g=g)
    assert o.dtype == torch.bfloat16


def test_decoding_steps_under_autocast_keep_an_fp32_state():
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, D) for _ in range(3))
    state = torch.zeros(B, H, D, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        steps = [kernels.gated_linear_attention_step(q, k, v, -torch.rand(B, H, D), state=state),
                 kernels.gated_delta_rule_step(q, k, v, torch.rand(B, H), state=state),
                 kernels.dplr_delta_rule_step(q, k, v, -k, k * 0.5, -torch.rand(B, H, D), state=state)]
    for o, new_state in steps:
        assert o.dtype == torch.bfloat16 and new_state.dtype == torch.float32


def test_outside_autocast_inputs_are_untouched():
    _, (q, k, v, g), _, _ = _inputs()["gla"]
    o, _ = kernels.gated_linear_attention(q.double(), k.double(), v.double(), g.double())
    assert o.dtype == torch.float64
    with pytest.raises(ValueError, match="share a dtype"):
        kernels.gated_linear_attention(q, k.double(), v, g)
