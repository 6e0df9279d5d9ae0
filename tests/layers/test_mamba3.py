"""Mamba-3 against the paper's recurrence, written out here token by token with complex rotations: the
exponential-trapezoidal update, SISO and MIMO, groups, both rope fractions, the output norm; its
parameters against fla's ``Mamba3`` (whose forward runs on CUDA only; the layer-to-layer comparison is
in ``make gpu-check``); its initialisation and bad options."""

import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from tests.layers.test_deltanet import assert_layer_is


def rotate(t, theta, mimo):
    """Multiply the first A channel pairs of t [..., N], read as complex numbers, by e^{iθ} (θ [..., A]):
    pairs (2i, 2i+1) in SISO, (i, i + N/2) in MIMO."""
    A, N = theta.shape[-1], t.shape[-1]
    if mimo:
        re, im, idx_re, idx_im = (
            t[..., :A],
            t[..., N // 2 : N // 2 + A],
            slice(0, A),
            slice(N // 2, N // 2 + A),
        )
    else:
        re, im, idx_re, idx_im = (
            t[..., 0 : 2 * A : 2],
            t[..., 1 : 2 * A : 2],
            slice(0, 2 * A, 2),
            slice(1, 2 * A, 2),
        )
    turned = torch.complex(re, im) * torch.polar(torch.ones_like(theta), theta)
    out = t.clone()
    out[..., idx_re], out[..., idx_im] = turned.real, turned.imag
    return out


def paper_forward(layer, u):
    """S_t = α_t S_{t−1} + β_t Σ_r k_{t−1,r} v_{t−1,r}ᵀ + γ_t Σ_r k_{t,r} v_{t,r}ᵀ,
    y_{t,r} = S_tᵀ q_{t,r} + D v_{t,r}, α = exp(ΔA), β = (1 − λ)Δα, γ = λΔ; q, k rotated by the running
    angle Σ π·tanh(φ)Δ."""
    B, T, _ = u.shape
    H, P, N, G, R, A = (
        layer.num_heads,
        layer.head_dim,
        layer.d_state,
        layer.n_groups,
        layer.rank,
        layer.num_angles,
    )
    Din = layer.d_inner
    z, x, Bm, Cm, dd_dt, dd_A, trap, phi = layer.in_proj(u).split(
        [Din, Din, N * G * R, N * G * R, H, H, H, A], -1
    )
    dt = F.softplus(dd_dt + layer.dt_bias)
    a = torch.minimum(-F.softplus(dd_A), torch.tensor(-layer.A_floor, dtype=u.dtype))
    lam = torch.sigmoid(trap)

    def rms(t, weight, eps):
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + eps) * weight

    group = [h * G // H for h in range(H)]
    k = rms(Bm.view(B, T, R, G, N), layer.B_norm.weight, layer.B_norm.eps)[
        :, :, :, group
    ] + layer.B_bias.transpose(0, 1)
    q = rms(Cm.view(B, T, R, G, N), layer.C_norm.weight, layer.C_norm.eps)[
        :, :, :, group
    ] + layer.C_bias.transpose(0, 1)
    x = x.view(B, T, H, P)
    v = x[:, :, None] * layer.mimo_x.transpose(0, 1) if layer.mimo else x[:, :, None]
    S = u.new_zeros(B, H, N, P)
    theta = u.new_zeros(B, H, A)
    k_prev, v_prev = u.new_zeros(B, R, H, N), u.new_zeros(B, R, H, P)
    ys = []
    for t in range(T):
        theta = theta + math.pi * torch.tanh(phi[:, t])[:, None, :] * dt[:, t, :, None]
        k_t, q_t = rotate(k[:, t], theta[:, None], layer.mimo), rotate(q[:, t], theta[:, None], layer.mimo)
        alpha = torch.exp(dt[:, t] * a[:, t])
        beta, gamma = (1 - lam[:, t]) * dt[:, t] * alpha, lam[:, t] * dt[:, t]
        S = (
            alpha[..., None, None] * S
            + beta[..., None, None] * torch.einsum("brhn,brhp->bhnp", k_prev, v_prev)
            + gamma[..., None, None] * torch.einsum("brhn,brhp->bhnp", k_t, v[:, t])
        )
        ys.append(torch.einsum("bhnp,brhn->brhp", S, q_t) + layer.D[:, None] * v[:, t])
        k_prev, v_prev = k_t, v[:, t]
    y = torch.stack(ys, 1)  # [B, T, R, H, P]
    if layer.outproj_norm:
        y = rms(y, layer.norm.weight.view(H, P), layer.norm.eps)
    z = z.view(B, T, H, P)
    if layer.mimo:
        y = (y * F.silu(z[:, :, None] * layer.mimo_z.transpose(0, 1)) * layer.mimo_o.transpose(0, 1)).sum(2)
    else:
        y = y[:, :, 0] * F.silu(z)
    return layer.out_proj(y.reshape(B, T, Din))


CASES = [
    {"d_state": 8, "head_dim": 16},
    {
        "d_state": 6,
        "head_dim": 8,
        "n_groups": 2,
        "rope_fraction": 1.0,
        "outproj_norm": True,
        "chunk_size": 16,
    },
    {"d_state": 8, "head_dim": 16, "mimo": True, "mimo_rank": 2},
    {
        "d_state": 10,
        "head_dim": 8,
        "mimo": True,
        "mimo_rank": 3,
        "n_groups": 4,
        "outproj_norm": True,
    },
]


@pytest.mark.parametrize("kwargs", CASES)
def test_layer_is_the_papers_recurrence(kwargs):
    layer = build_mixer("mamba3", 16, **kwargs).double()
    with torch.no_grad():  # away from the unit inits, so every bias, weight and rank matters
        for name, p in layer.named_parameters():
            if p.ndim < 2 or name.startswith("mimo"):
                p.add_(torch.randn_like(p) * 0.3)
        layer.in_proj.weight.mul_(3.0)  # angles of several turns, strong and weak decays, λ across (0, 1)
    u = torch.randn(2, 37, 16, dtype=torch.float64)
    assert_layer_is(layer, paper_forward, u)


def test_state_holds_the_papers_quantities():
    """After a prefill the state is (θ_T mod 2π, S_T, k_T, x_T) as the recurrence defines them."""
    layer = build_mixer("mamba3", 16, d_state=8, head_dim=8).double()
    u = torch.randn(1, 9, 16, dtype=torch.float64)
    _, state = layer(u, layer.init_state(1, dtype=torch.float64))
    _, continued = layer(u[:, 5:], layer(u[:, :5], layer.init_state(1, dtype=torch.float64))[1])
    for name in ("theta", "S", "k_prev", "x_prev"):
        torch.testing.assert_close(getattr(continued, name), getattr(state, name))
    assert (state.theta >= 0).all() and (state.theta < 2 * math.pi).all()
    assert state.S.shape == (1, layer.num_heads, 8, 8) and state.k_prev.shape == (1, 1, layer.num_heads, 8)


@pytest.mark.parametrize("mimo", [False, True])
def test_parameters_match_fla_mamba3(mimo):
    """Names and shapes of every parameter equal fla's ``Mamba3`` (built on CPU; its forward needs CUDA), so
    ``make gpu-check`` copies weights one to one."""
    pytest.importorskip("fla")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.layers.mamba3 import Mamba3 as FlaMamba3

        fla = FlaMamba3(
            hidden_size=32, state_size=16, head_dim=16, is_mimo=mimo, mimo_rank=2, is_outproj_norm=True
        )
    ours = build_mixer("mamba3", 32, d_state=16, head_dim=16, mimo=mimo, mimo_rank=2, outproj_norm=True)
    assert {n: p.shape for n, p in ours.named_parameters()} == {n: p.shape for n, p in fla.named_parameters()}


def test_initialisation():
    layer = build_mixer("mamba3", 64, d_state=16, head_dim=4, mimo=True, mimo_rank=4)
    dt = F.softplus(layer.dt_bias)
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert (layer.B_bias == 1).all() and (layer.C_bias == 1).all() and (layer.D == 1).all()
    assert (layer.mimo_x == 0.25).all() and (layer.mimo_o == 0.25).all() and (layer.mimo_z == 1).all()
    assert layer.num_angles == 4 and build_mixer("mamba3", 64, d_state=16, rope_fraction=1.0).num_angles == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head_dim": 8, "rope_fraction": 0.25}, "mamba3: rope_fraction must be 0.5 or 1, got 0.25"),
        ({"head_dim": 24}, r"mamba3: head_dim=24 must divide expand·d_model = 32"),
        ({"head_dim": 8, "n_groups": 3}, "mamba3: n_groups=3 must be ≥ 1 and divide the 4 heads"),
        ({"head_dim": 8, "mimo": True, "mimo_rank": 0}, "mamba3: mimo_rank must be an integer ≥ 1"),
        ({"head_dim": 8, "d_state": 2, "rope_fraction": 0.5}, "rotates no pair"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("mamba3", 16, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's Mamba3 runs on CUDA only (make gpu-check)")
@pytest.mark.parametrize("kwargs", [{}, {"is_mimo": True, "mimo_rank": 4, "is_outproj_norm": True}])
def test_matches_fla_mamba3_on_cuda(kwargs):
    """Our layer against fla's ``Mamba3`` given the same weights, output and input gradient. fla runs
    ``mamba_ssm``'s kernels (Triton for SISO, TileLang for MIMO), which cast q, k, v and the angles to bf16
    inside: the bound is bf16's, 3e-2 of the output's scale."""
    pytest.importorskip("mamba_ssm", reason="fla's Mamba3 needs mamba_ssm's kernels")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.layers.mamba3 import Mamba3 as FlaMamba3

        fla = FlaMamba3(hidden_size=256, state_size=64, head_dim=64, **kwargs).cuda()
    ours = build_mixer(
        "mamba3",
        256,
        d_state=64,
        head_dim=64,
        mimo=kwargs.get("is_mimo", False),
        mimo_rank=kwargs.get("mimo_rank", 4),
        outproj_norm=kwargs.get("is_outproj_norm", False),
    ).cuda()
    ours.load_state_dict({n: p for n, p in fla.state_dict().items() if n != "_siso_proj"})
    u = torch.randn(2, 300, 256, device="cuda")
    from tests.fla_files import relative_errors_on_cuda

    y_err, dx_err = relative_errors_on_cuda(fla, ours, u)
    assert y_err < 3e-2 and dx_err < 3e-2, (y_err, dx_err)
