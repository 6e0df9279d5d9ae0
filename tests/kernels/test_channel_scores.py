"""Per-channel decayed scores (``recall_lm.kernels.gla.chunked_torch_intra``) have three forms: one masked
matmul of e^{±G}-scaled factors when every |G| is small, one matmul per 16-row block when G falls little
within each 16-token sub-chunk, exact diagonal columns otherwise. Each against the score written out
with exact exponents, forward and backward; the choice at its bounds; and the GLA and DPLR chunked
backends (GLA with per-channel and per-head gates) forced onto each form against their fp64 loops."""
import pytest
import torch

from recall_lm.kernels.dplr import chunked_torch as dplr_chunked
from recall_lm.kernels.gla import chunked_torch as gla_chunked
from recall_lm.kernels.gla import chunked_torch_intra as intra
from tests.kernels import gla_testing, test_dplr


def _written_out(q, k, G, Gq, strict):
    """A_ij = Σ_k q_ik k_jk exp(Gq_ik − G_jk) on j ≤ i (j < i if strict), with the exponent formed first."""
    C = q.shape[-2]
    expo = Gq[..., :, None, :] - G[..., None, :, :]  # [.., C(i), C(j), K]
    mask = torch.ones(C, C, dtype=torch.bool).tril(-1 if strict else 0)
    terms = (
        q[..., :, None, :] * k[..., None, :, :] * torch.exp(expo.masked_fill(~mask[..., None], -torch.inf))
    )
    return terms.sum(-1)


def _chunked_inputs(C, strict, lo, hi, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 3, C, 8)  # [BH, NT, C, K]
    q, k = (torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(2))
    g = (torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    G = g.cumsum(-2)
    return q, k, G, (G - g if strict else G)


@pytest.fixture(params=["one_matmul", "row_blocks", "sub_chunks"])
def path(request, monkeypatch):
    """Forces one form: the span limit at +inf (always one matmul) or below 0 (never factor), or the
    row-block form (and GLA and DPLR off their shared one-matmul factors)."""
    if request.param == "row_blocks":
        monkeypatch.setattr(intra, "score_form", lambda G, S: "row_blocks")
        monkeypatch.setattr(dplr_chunked, "factored_is_safe", lambda G: False)
        monkeypatch.setattr(gla_chunked, "factored_is_safe", lambda G: False)
        return request.param
    limit = float("inf") if request.param == "one_matmul" else -1.0
    for dtype in (torch.float32, torch.float64):
        monkeypatch.setitem(intra.FACTORED_SPAN, dtype, limit)
    return request.param


@pytest.mark.parametrize("C", [16, 64])
@pytest.mark.parametrize("strict", [False, True])
def test_both_forms_equal_the_written_out_scores(path, C, strict):
    q, k, G, Gq = (x.requires_grad_() for x in _chunked_inputs(C, strict, -0.6, 0.0))
    A = intra.channel_scores(q, k, G, Gq, strict)
    ref = _written_out(q, k, G, Gq, strict)
    torch.testing.assert_close(A, ref, rtol=1e-12, atol=1e-12)
    above = torch.ones(C, C, dtype=torch.bool).triu(0 if strict else 1)
    assert (A.detach()[..., above] == 0).all()
    dA = torch.randn(A.shape, dtype=torch.float64)  # full: the entries above the mask must be ignored
    got = torch.autograd.grad(A, (q, k, G, Gq), dA)
    want = torch.autograd.grad(ref, (q, k, G, Gq), dA)
    for name, g_got, g_want in zip(("q", "k", "G", "Gq"), got, want):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-10, msg=f"d{name}")


def test_dispatch_bounds():
    for dtype, limit in ((torch.float32, 40.0), (torch.float64, 300.0)):
        assert intra.factored_is_safe(torch.tensor([0.0, -limit], dtype=dtype))
        assert not intra.factored_is_safe(torch.tensor([0.0, -limit - 0.5], dtype=dtype))
    assert intra.factored_is_safe(torch.zeros(0))
    steps = torch.full((1, 1, 64, 1), -1.0)  # G falls by 16 per sub-chunk, by 64 over the chunk
    assert intra.score_form(steps.cumsum(-2) * 0.5, 16) == "chunk"
    assert intra.score_form(steps.cumsum(-2), 16) == "row_blocks"
    assert intra.score_form(steps.cumsum(-2) * 2.6, 16) == "exact"  # 41.6 within a sub-chunk


@pytest.mark.parametrize("lo, hi, form", [(-2.0, -0.1, "row_blocks"), (-21.0, -19.0, "exact")])
def test_fp32_beyond_the_chunk_span(lo, hi, form):
    """|G| up to ~130 (row blocks) or ~1300 (exact) in fp32, where e^{-G} alone would be inf: the choice
    must not factor the whole chunk, and the scores and gradients stay those written out."""
    q, k, G, Gq = _chunked_inputs(64, False, lo, hi, dtype=torch.float32)
    assert intra.score_form(G, 16) == form
    leaves = [x.clone().requires_grad_() for x in (q, k, G, Gq)]  # G and Gq as separate inputs
    A = intra.channel_scores(*leaves, strict=False)
    ref_leaves = [x.detach().double().requires_grad_() for x in (q, k, G, Gq)]
    ref = _written_out(*ref_leaves, strict=False)
    assert torch.isfinite(A).all()
    torch.testing.assert_close(A.double(), ref, rtol=1e-4, atol=1e-4)
    dA = torch.randn(A.shape)
    for name, g_got, g_want in zip("q k G Gq".split(), torch.autograd.grad(A, leaves, dA),
                                   torch.autograd.grad(ref, ref_leaves, dA.double())):
        assert (g_got.double() - g_want).abs().max().item() <= 1e-4 * max(g_want.abs().max().item(), 1.0), (
            name
        )


@pytest.mark.parametrize("gate_range", ["mild", "typical"])
@pytest.mark.parametrize("use_u", [False, True])
@pytest.mark.parametrize("gate", ["channel", "head"])
def test_gla_on_either_form(path, gate, gate_range, use_u):
    """Per-head gates use the same shared e^{±G} factors when |G| allows (one_matmul), else the exact
    block decay (the other two forms)."""
    x = gla_testing.make_inputs(B=1, T=130, H=2, K=8, V=4, gate=gate, use_u=use_u, gate_range=gate_range)
    gla_testing.compare_to_naive(x, "torch", 1e-9, chunk_size=64)


@pytest.mark.parametrize("gate_range", ["mild", "typical"])
def test_dplr_on_either_form(path, gate_range):
    test_dplr.compare_to_naive(test_dplr.make_inputs(B=1, T=130, gate_range=gate_range), "torch", 1e-9,
                               chunk_size=64)


@pytest.mark.parametrize("op", ["gla", "dplr"])
def test_fp32_in_rwkv7_range_factored(op):
    """The one-matmul form in fp32 at chunk 64, where |G| comes close to the 40 limit."""
    if op == "gla":
        x = gla_testing.make_inputs(B=2, T=128, H=2, K=16, V=8, gate="channel", use_u=True,
                                    dtype=torch.float32, gate_range="mild")
        G = x["g"].detach().view(2, 2, 64, 2, 16).cumsum(2)
        gla_testing.compare_to_naive(x, "torch", 2e-4, chunk_size=64)
    else:
        x = test_dplr.make_inputs(B=2, T=128, K=16, V=8, dtype=torch.float32, gate_range="mild")
        G = x["gk"].detach().view(2, 2, 64, 2, 16).cumsum(2)
        test_dplr.compare_to_naive(x, "torch", 2e-4, chunk_size=64)
    assert 15.0 < -G.min() <= 40.0 and intra.factored_is_safe(G)

