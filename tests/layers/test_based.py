"""BASED mixers (`based`, `base_conv`) against direct computations written here, in fp64.

The Taylor feature map's kernel identity is tested in test_attention.py; here `based` is checked
against the kernel κ(q, k) = 1 + q·k/√d + (q·k)²/(2d) applied directly as a masked T×T product.
"""
import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer


def based_reference(mixer, x):
    """Normalised causal kernel attention with κ written out (no feature map), per head."""
    B, T, d_model = x.shape
    H, d = mixer.num_heads, mixer.feature_dim
    q, k = mixer.qk(x).view(B, T, 2, H, d).unbind(2)
    v = mixer.v(x).view(B, T, H, d_model // H)
    dot = torch.einsum("bihf,bjhf->bhij", q, k)
    kappa = (1 + dot / d**0.5 + dot**2 / (2 * d)).tril()
    o = torch.einsum("bhij,bjhd->bihd", kappa, v) / (kappa.sum(-1).transpose(1, 2)[..., None] + mixer.eps)
    return mixer.out(o.reshape(B, T, d_model))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("num_heads,feature_dim", [(1, 16), (2, 5)])
def test_based_matches_quadratic_kernel_attention(symmetric, num_heads, feature_dim):
    torch.manual_seed(0)
    mixer = build_mixer(
        "based", 16, num_heads=num_heads, feature_dim=feature_dim, symmetric=symmetric
    ).double()
    with torch.no_grad():  # larger q·k than the 0.02-std init, so the quadratic term matters
        mixer.qk.weight.mul_(8)
    x = torch.randn(2, 23, 16, dtype=torch.float64, requires_grad=True)
    y, _ = mixer(x)
    expected = based_reference(mixer, x)
    torch.testing.assert_close(y, expected)
    params = [x, mixer.qk.weight, mixer.v.weight, mixer.out.weight]
    g1 = torch.autograd.grad((y * torch.sin(y)).sum(), params)
    g2 = torch.autograd.grad((expected * torch.sin(expected)).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_based_defaults_and_exact_state_size():
    """Reference defaults: feature_dim 16, symmetric map → 153 features, eps 1e-12; state
    [B, H, 153, D/H + 1]."""
    mixer = build_mixer("based", 64, num_heads=4)
    assert (mixer.feature_dim, mixer.expanded_dim, mixer.eps) == (16, 153, 1e-12)
    assert mixer.state_size() == 4 * 153 * (16 + 1)
    state = mixer.init_state(2, None, torch.float32)
    _, state = mixer(torch.randn(2, 5, 64), state)
    assert state.S.shape == (2, 4, 153, 17) and state.numel_per_sequence() == mixer.state_size()
    assert build_mixer("based", 64, symmetric=False).expanded_dim == 273


def test_based_decoding_matches_chunked_at_default_size():
    torch.manual_seed(1)
    mixer = build_mixer("based", 32, num_heads=2).double()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    y_full, _ = mixer(x)
    state = mixer.init_state(2, None, torch.float64)
    y_pre, state = mixer(x[:, :25], state)
    steps = [y_pre]
    for t in range(25, 40):
        y_t, state = mixer(x[:, t : t + 1], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.cat(steps, 1), y_full, atol=1e-6, rtol=1e-6)  # the kernel state is fp32


def conv_loop_reference(mixer, x):
    """BaseConv with the depthwise causal convolution written as an explicit loop over taps."""
    a, b = mixer.in_proj(x).chunk(2, dim=-1)
    w = mixer.conv.conv.weight[:, 0]  # [E, K], last tap = current token
    K, T = w.shape[1], x.shape[1]
    conv = torch.zeros_like(a)
    for t in range(T):
        for i in range(K):
            if t - K + 1 + i >= 0:
                conv[:, t] = conv[:, t] + w[:, i] * a[:, t - K + 1 + i]
    if mixer.conv.activation == "silu":
        conv = F.silu(conv)
    return mixer.out_proj(conv * b)


@pytest.mark.parametrize(
    "kwargs", [{}, {"kernel_size": 4, "expand": 4, "activation": None}, {"kernel_size": 1}]
)
def test_base_conv_matches_loop(kwargs):
    torch.manual_seed(0)
    mixer = build_mixer("base_conv", 12, **kwargs).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True)
    y, _ = mixer(x)
    expected = conv_loop_reference(mixer, x)
    torch.testing.assert_close(y, expected)
    params = [x] + list(mixer.parameters())
    g1 = torch.autograd.grad((y * torch.cos(y)).sum(), params)
    g2 = torch.autograd.grad((expected * torch.cos(expected)).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_base_conv_shapes_state_and_decoding():
    torch.manual_seed(0)
    mixer = build_mixer("base_conv", 16, kernel_size=3, expand=4).double()
    assert mixer.in_proj.weight.shape == (64, 16) and mixer.out_proj.weight.shape == (16, 32)
    assert mixer.state_size(1000) == 2 * 32
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    y_full, _ = mixer(x)
    state = mixer.init_state(2, None, torch.float64)
    steps = []
    for t in range(10):
        y_t, state = mixer(x[:, t : t + 1], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.cat(steps, 1), y_full)
    assert state.numel_per_sequence() == mixer.state_size()


@pytest.mark.parametrize("name,kwargs,arg", [
    ("based", {"feature_dim": 0}, "feature_dim"),
    ("based", {"num_heads": 3}, "num_heads"),
    ("base_conv", {"expand": 0}, "expand"),
    ("base_conv", {"kernel_size": 0}, "kernel_size"),
    ("base_conv", {"activation": "gelu"}, "activation"),
])
def test_bad_arguments_are_named(name, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        build_mixer(name, 32, **kwargs)
