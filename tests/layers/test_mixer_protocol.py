"""The mixer protocol, checked for every registered mixer: causality, chunked == token by token,
state continuation, and state_size() == the numbers actually held in the state."""
import pytest
import torch

from recall_lm.layers.registry import build_mixer, mixers
from tests.layers.mixer_cases import D_MODEL, MIXER_CASES, all_cases, case_id

CASES = all_cases()


def make(name, kwargs, seed=0):
    torch.manual_seed(seed)
    mixer = build_mixer(name, D_MODEL, **kwargs)
    with torch.no_grad():  # fixed random weights everywhere, including zero-initialised ones
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    return mixer.eval()


def test_every_mixer_has_a_case():
    assert set(mixers()) == set(MIXER_CASES), "add the new mixer's constructor arguments to mixer_cases.py"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_causal(case):
    mixer = make(*case)
    x = torch.randn(2, 23, D_MODEL)
    y, _ = mixer(x)
    for t in (0, 7, 22):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        y2, _ = mixer(x2)
        torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], atol=1e-5, rtol=1e-5)
        if t < 22:
            assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :]), "inputs after t must matter"


# The two paths are the same maths in a different order: in fp64 they must agree to round-off, which
# checks the identity itself; in fp32 (the dtype users run) the bound is the round-off of the worst
# case: DeltaNet with unnormalised keys and β ∈ (0, 2), whose transitions can amplify, differs from its
# fp64 output by up to 1.5e-4 on random inputs (either path).
EQUALITY_TOLERANCE = {torch.float64: 1e-10, torch.float32: 3e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_chunked_equals_token_by_token(case, dtype):
    mixer = make(*case).to(dtype)
    B, T = 2, 19
    x = torch.randn(B, T, D_MODEL, dtype=dtype)
    y_full, _ = mixer(x)
    state = mixer.init_state(B, x.device, x.dtype)
    steps = []
    for t in range(T):
        y_t, state = mixer(x[:, t : t + 1], state)
        steps.append(y_t)
    tol = EQUALITY_TOLERANCE[dtype]
    torch.testing.assert_close(torch.cat(steps, 1), y_full, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_prefill_then_continue(case, dtype):
    """A chunked prefill, then a second chunk and single tokens from the returned state."""
    mixer = make(*case).to(dtype)
    x = torch.randn(2, 30, D_MODEL, dtype=dtype)
    y_full, _ = mixer(x)
    state = mixer.init_state(2, x.device, x.dtype)
    y1, state = mixer(x[:, :13], state)
    y2, state = mixer(x[:, 13:27], state)
    y3, state = mixer(x[:, 27:28], state)
    y4, state = mixer(x[:, 28:], state)
    tol = EQUALITY_TOLERANCE[dtype]
    torch.testing.assert_close(torch.cat([y1, y2, y3, y4], 1), y_full, atol=tol, rtol=tol)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_size_matches_state(case):
    mixer = make(*case)
    T = 11
    state = mixer.init_state(3, None, torch.float32)
    _, state = mixer(torch.randn(3, T, D_MODEL), state)
    assert mixer.state_size(T) == state.numel_per_sequence()
    moved = state.to("cpu")
    assert type(moved) is type(state) and moved.numel_per_sequence() == state.numel_per_sequence()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_reach_every_parameter(case):
    mixer = make(*case)
    y, _ = mixer(torch.randn(2, 9, D_MODEL))
    y.square().mean().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_unknown_mixer_lists_known_ones():
    with pytest.raises(ValueError, match="unknown mixer 'nope'.*attention"):
        build_mixer("nope", 32)


def test_unknown_argument_is_named():
    with pytest.raises(ValueError, match="num_head"):
        build_mixer("attention", 32, num_head=2)


@pytest.mark.parametrize("name", ["attention", "linear_attention"])
def test_heads_must_divide_d_model(name):
    with pytest.raises(ValueError, match="num_heads=3 .*d_model=32"):
        build_mixer(name, 32, num_heads=3)


DOCUMENT_LENGTHS = (5, 1, 0, 17, 9, 2)  # an empty document too (cu_seqlens may repeat an offset)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_packed_documents_equal_separate_runs(case):
    """Document-masked packing: documents packed in one row (``documents=``) give the outputs and the
    gradients (input and every parameter) of running each document alone."""
    from recall_lm.layers.documents import Documents

    mixer = make(*case)
    cu = torch.tensor([0, *torch.tensor(DOCUMENT_LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    T = int(cu[-1])
    documents = Documents.from_cu_seqlens(cu, T)
    x = torch.randn(1, T, D_MODEL, requires_grad=True)
    weights = torch.randn(1, T, D_MODEL)

    y, state = mixer(x, documents=documents)
    assert state is None
    grads = torch.autograd.grad((y * weights).sum(), [x, *mixer.parameters()], allow_unused=True)

    alone = [mixer(piece)[0] for piece in documents.split(x) if piece.shape[1]]
    y_ref = torch.cat(alone, dim=1)
    grads_ref = torch.autograd.grad((y_ref * weights).sum(), [x, *mixer.parameters()], allow_unused=True)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-5)
    for (name, _), g, g_ref in zip([("x", None), *mixer.named_parameters()], grads, grads_ref):
        if g_ref is None:
            assert g is None or torch.count_nonzero(g) == 0, name
            continue
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bf16_autocast_forward_and_backward(case):
    """``precision: bf16-mixed`` (torch.autocast): forward and backward run without mixing dtypes inside the
    kernels, every parameter gets a finite gradient, and the output is the fp32 one to bf16 accuracy
    (top-k routing can flip between memories at bf16 logits, so MoM with k < M is only run; DeltaNet with
    unnormalised keys and β ∈ (0, 2) amplifies the inputs' bf16 rounding, to ≈ 0.1 here)."""
    name, kwargs = case
    mixer = make(*case)
    x = torch.randn(2, 19, D_MODEL)
    y_fp32, _ = mixer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = mixer(x)
    y.float().square().mean().backward()
    for param_name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name
    routed = name == "mom" and kwargs.get("top_k", 2) < kwargs.get("num_memories", 4)
    if not routed:
        error = (y.float() - y_fp32).abs().max() / y_fp32.abs().max()
        bound = 0.2 if kwargs.get("qk_norm") == "none" else 0.05
        assert error < bound, f"bf16 autocast output differs from fp32 by {error:.3f} of its scale"
