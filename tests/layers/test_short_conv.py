"""ShortConvolution against an explicit loop and torch's padded conv1d, with state continuation."""
import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.short_conv import ShortConvolution


def loop_reference(x, weight, bias=None):
    """y_t[c] = b[c] + Σ_i w[c, i] · x_{t-K+1+i}[c], zero before the first token. x [B, T, D],
    weight [D, K]."""
    B, T, D = x.shape
    K = weight.shape[1]
    y = torch.zeros_like(x) if bias is None else bias.expand(B, T, D).clone()
    for t in range(T):
        for i in range(K):
            s = t - K + 1 + i
            if s >= 0:
                y[:, t] = y[:, t] + weight[:, i] * x[:, s]
    return y


def make(dim, K, bias=False, activation=None, seed=0):
    torch.manual_seed(seed)
    return ShortConvolution(dim, K, bias=bias, activation=activation).double()


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("bias,activation", [(False, None), (True, "silu")])
def test_matches_loop_and_padded_conv1d(K, bias, activation):
    conv = make(6, K, bias, activation)
    x = torch.randn(2, 11, 6, dtype=torch.float64, requires_grad=True)
    y, state = conv(x)
    assert state is None
    w = conv.conv.weight[:, 0]  # [D, K]
    pre = loop_reference(x, w, conv.conv.bias)
    # torch's usual causal form: pad K - 1 on both sides, keep the first T outputs
    pre_conv1d = F.conv1d(x.transpose(1, 2), conv.conv.weight, conv.conv.bias, padding=K - 1, groups=6)[
        ..., :11
    ]
    torch.testing.assert_close(pre, pre_conv1d.transpose(1, 2))
    expected = F.silu(pre) if activation == "silu" else pre
    torch.testing.assert_close(y, expected)
    params = [x, conv.conv.weight] + ([conv.conv.bias] if bias else [])
    g1 = torch.autograd.grad((y * torch.cos(y)).sum(), params)
    g2 = torch.autograd.grad((expected * torch.cos(expected)).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("K", [1, 3, 5])
def test_state_continues_across_chunks(K):
    """Chunks shorter and longer than K - 1, and single tokens, give the full-sequence output."""
    conv = make(5, K, bias=True, activation="silu")
    x = torch.randn(3, 20, 5, dtype=torch.float64)
    y_full, _ = conv(x)
    state = conv.init_state(3, None, torch.float64)
    assert state.x.shape == (3, K - 1, 5) and not state.x.any()
    history = torch.cat([torch.zeros(3, K - 1, 5, dtype=torch.float64), x], 1)
    outs = []
    for a, b in [(0, 1), (1, 3), (3, 10), (10, 11), (11, 12), (12, 20)]:
        y, state = conv(x[:, a:b], state)
        outs.append(y)
        torch.testing.assert_close(state.x, history[:, b : b + K - 1])  # the last K - 1 inputs up to b
    torch.testing.assert_close(torch.cat(outs, 1), y_full)
    assert conv.state_size() == state.numel_per_sequence() == (K - 1) * 5


def test_first_chunk_shorter_than_kernel_keeps_zero_history():
    conv = make(2, 4)
    x = torch.randn(1, 2, 2, dtype=torch.float64)
    _, state = conv(x, conv.init_state(1, None, torch.float64))
    torch.testing.assert_close(state.x, torch.cat([torch.zeros(1, 1, 2, dtype=torch.float64), x], 1))


def test_state_is_not_modified_in_place():
    conv = make(3, 3)
    state = conv.init_state(1, None, torch.float64)
    _, state = conv(torch.randn(1, 4, 3, dtype=torch.float64), state)
    before = state.x.clone()
    conv(torch.randn(1, 2, 3, dtype=torch.float64), state)
    torch.testing.assert_close(state.x, before)


@pytest.mark.parametrize("kwargs,name", [({"dim": 0}, "dim"), ({"kernel_size": 0}, "kernel_size"),
                                         ({"activation": "relu"}, "activation")])
def test_bad_arguments_are_named(kwargs, name):
    args = {"dim": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        ShortConvolution(**args)


@pytest.mark.parametrize("K", [1, 4])
def test_token_by_token_steps_match_loop_with_gradients(K):
    """The single-token decode path (a weighted sum over the window, not conv1d): outputs and the
    gradients of x, weight and bias equal the explicit loop's."""
    conv = make(6, K, bias=True, activation="silu")
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    state, outs = conv.init_state(2, None, torch.float64), []
    for t in range(9):
        y, state = conv(x[:, t : t + 1], state)
        outs.append(y)
    y = torch.cat(outs, 1)
    expected = F.silu(loop_reference(x, conv.conv.weight[:, 0], conv.conv.bias))
    torch.testing.assert_close(y, expected)
    params = [x, conv.conv.weight, conv.conv.bias]
    for a, b in zip(
        torch.autograd.grad(y.square().sum(), params), torch.autograd.grad(expected.square().sum(), params)
    ):
        torch.testing.assert_close(a, b)
