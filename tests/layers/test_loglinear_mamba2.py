"""The loglinear_mamba2 layer: with every level weighted alike (L = 0, so λ = softplus(0) = ln 2 at each
level) the Fenwick partition sums back to the one decayed state of Mamba-2, so the layer equals Mamba-2 with
the same weights (D = 0, and an RMSNorm that ignores the constant factor ln 2); with distinct level weights
it does not. Its state grows as log T. fla's ``LogLinearMamba2`` runs on CUDA only: the layer-to-layer
comparison belongs to ``make gpu-check``; the op is compared with fla's on CPU in
tests/kernels/test_log_linear.py."""

import math

import pytest
import torch

from recall_lm.layers.registry import build_mixer


def pair(**kwargs):
    torch.manual_seed(0)
    common = dict(d_state=8, head_dim=16, chunk_size=16, norm_eps=1e-30)  # eps ≪ the pre-norm scale
    ours = build_mixer("loglinear_mamba2", 32, **common, **kwargs)
    plain = build_mixer("mamba2", 32, **common)
    plain.load_state_dict({n: p for n, p in ours.state_dict().items() if n in plain.state_dict()})
    with torch.no_grad():
        for layer in (ours, plain):
            layer.D.zero_()
    return ours.double(), plain.double()


def test_equal_level_weights_reduce_to_mamba2():
    ours, plain = pair()
    with torch.no_grad():
        ours.L.zero_()
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], plain(x)[0], rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        ours.L.copy_(torch.linspace(-2, 2, ours.L.numel()).view_as(ours.L))
    assert (ours(x)[0] - plain(x)[0]).abs().max() > 1e-3


def test_state_grows_as_log_t():
    ours, _ = pair()
    sizes = [ours.state_size(T) for T in (1, 2, 3, 4, 1000, 1024)]
    per_level = ours.num_heads * ours.d_state * ours.head_dim
    conv = ours.conv.state_size()
    assert [(s - conv) // per_level for s in sizes] == [1, 2, 2, 3, 10, 11]
    assert math.isclose(ours.state_size(1 << 14) - conv, 15 * per_level)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="num_levels must be an integer ≥ 1"):
        build_mixer("loglinear_mamba2", 32, num_levels=0)
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        build_mixer("loglinear_mamba2", 32, chunk_size=48)
    layer = build_mixer("loglinear_mamba2", 32, d_state=8, head_dim=16, chunk_size=8, num_levels=3)
    with pytest.raises(ValueError, match="num_levels=3 covers 4 tokens, this call reaches token 9: set "
                                         "num_levels ≥ 5"):
        layer(torch.randn(1, 9, 32))
    _, state = layer(torch.randn(1, 4, 32), layer.init_state(1))  # decoding past the levels: named too
    with pytest.raises(ValueError, match="num_levels=3 covers 4 tokens, this call reaches token 5"):
        layer(torch.randn(1, 1, 32), state)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="fla's LogLinearMamba2 runs on CUDA only (make gpu-check)"
)
def test_matches_fla_loglinear_mamba2_on_cuda():
    """Our layer against fla's ``LogLinearMamba2`` given the same weights (its in_proj's rows after z, x, B,
    C and Δ are our level_proj), output and input gradient, fp32 inputs (fla's kernels may use tf32)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.layers.log_linear_mamba2 import LogLinearMamba2

        fla = LogLinearMamba2(
            num_heads=4, head_dim=64, hidden_size=128, state_size=64, use_bias=False, use_conv_bias=True
        ).cuda()
    ours = build_mixer("loglinear_mamba2", 128, d_state=64, head_dim=64, num_levels=fla.L.shape[1]).cuda()
    weights = fla.state_dict()
    split = ours.in_proj.weight.shape[0]
    mapped = {
        "in_proj.weight": weights["in_proj.weight"][:split],
        "level_proj.weight": weights["in_proj.weight"][split:],
        "conv.conv.weight": weights["conv1d.weight"],
        "conv.conv.bias": weights["conv1d.bias"],
    }
    mapped.update({n: weights[n] for n in ("A_log", "dt_bias", "D", "L", "norm.weight", "out_proj.weight")})
    ours.load_state_dict(mapped)
    u = torch.randn(2, 300, 128, device="cuda")
    from tests.fla_files import relative_errors_on_cuda

    y_err, dx_err = relative_errors_on_cuda(fla, ours, u)
    assert y_err < 1e-2 and dx_err < 1e-2, (y_err, dx_err)
