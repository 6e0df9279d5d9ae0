"""RWKV-6 time-mix and channel-mix against token loops of the paper's recurrences written here in fp64
(forward and gradients), decoding with the state, RWKV-LM's initialisation, and an RWKV block model."""

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.mlp import build_mlp
from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from tests.fla_files import load_fla_file

D_MODEL = 32


def approx(value):
    return pytest.approx(value, rel=1e-6, abs=1e-7)  # initial values are computed in fp32
SMALL = dict(head_size=8, mix_lora_rank=4, decay_lora_rank=8)


def perturb(module, seed=0, std=0.3):
    """RWKV-LM's initialisation plus noise, so zero-initialised matrices (output, LoRA A) are non-zero."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


def make_tmix(seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    m = build_mixer("rwkv6", D_MODEL, **{**SMALL, "layer_idx": 1, "n_layers": 3, **kwargs})
    return perturb(m, seed).to(dtype)


def shifted(x):
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)


def wkv_loop(r, k, v, w, u):
    """S_t = diag(exp(−exp(w_t))) S_{t−1} + k_tᵀ v_t, o_t = r_t (S_{t−1} + diag(u) k_tᵀ v_t). [B, T, H, N]."""
    B, T, H, N = r.shape
    S = r.new_zeros(B, H, N, N)
    out = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhi,bhij->bhj", r[:, t], S + u[None, :, :, None] * kv))
        S = torch.exp(-torch.exp(w[:, t]))[..., None] * S + kv
    return torch.stack(out, 1)


def wkv_fla(r, k, v, w, u):
    naive = load_fla_file("ops/rwkv6/recurrent_naive.py").naive_recurrent_rwkv6
    o, _ = naive(*(t.transpose(1, 2).float() for t in (r, k, v, -torch.exp(w))), u.float(), scale=1.0)
    return o.transpose(1, 2).double()


def tmix_reference(m, x, wkv=wkv_loop):
    """RWKV-6 time-mix recomputed in fp64 from m's parameters (RWKV-LM's formulas)."""
    B, T, C = x.shape
    H, N = C // m.head_size, m.head_size
    P = {name: p.double() for name, p in m.named_parameters()}
    x = x.double()
    dx = shifted(x) - x
    lora = torch.tanh((x + dx * P["time_maa_x"]) @ P["time_maa_w1"]).view(B, T, 5, -1)
    mw, mk, mv, mr, mg = (lora[:, :, i] @ P["time_maa_w2"][i] for i in range(5))
    xw, xk = x + dx * (P["time_maa_w"] + mw), x + dx * (P["time_maa_k"] + mk)
    xv, xr = x + dx * (P["time_maa_v"] + mv), x + dx * (P["time_maa_r"] + mr)
    xg = x + dx * (P["time_maa_g"] + mg)
    r, k, v = (xi @ P[f"{n}.weight"].T for xi, n in ((xr, "receptance"), (xk, "key"), (xv, "value")))
    w = P["time_decay"] + torch.tanh(xw @ P["time_decay_w1"]) @ P["time_decay_w2"]
    heads = lambda t: t.view(B, T, H, N)  # noqa: E731
    o = wkv(heads(r), heads(k), heads(v), heads(w), P["time_faaaa"])
    mean, var = o.mean(-1, keepdim=True), o.var(-1, unbiased=False, keepdim=True)
    o = ((o - mean) / torch.sqrt(var + 64e-5)).reshape(B, T, C) * P["ln_x.weight"] + P["ln_x.bias"]
    return (o * F.silu(xg @ P["gate.weight"].T)) @ P["output.weight"].T


def cmix_reference(m, x):
    P = {name: p.double() for name, p in m.named_parameters()}
    x = x.double()
    dx = shifted(x) - x
    k = torch.relu((x + dx * P["time_maa_k"]) @ P["key.weight"].T) ** 2
    return torch.sigmoid((x + dx * P["time_maa_r"]) @ P["receptance.weight"].T) * (k @ P["value.weight"].T)


# ---------------------------------------------------------------- time-mix


@pytest.mark.parametrize("kwargs", [{}, {"head_size": 16, "chunk_size": 16}])
def test_time_mix_matches_token_loop(kwargs):
    m = make_tmix(**kwargs)
    x = torch.randn(2, 70, D_MODEL, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], tmix_reference(m, x), atol=1e-10, rtol=1e-9)


def test_time_mix_gradients_match_token_loop():
    m = make_tmix()
    x = torch.randn(2, 24, D_MODEL, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 24, D_MODEL, dtype=torch.float64)
    names = ["time_decay", "time_faaaa", "time_maa_w2", "time_decay_w1", "time_maa_k", "receptance.weight",
             "ln_x.weight"]
    params = dict(m.named_parameters())
    wrt = [x] + [params[n] for n in names]
    got = torch.autograd.grad((m(x)[0] * w).sum(), wrt)
    want = torch.autograd.grad((tmix_reference(m, x) * w).sum(), wrt)
    for name, a, b in zip(["x"] + names, got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-8, msg=name)


def test_time_mix_matches_fla_naive_wkv6():
    m = make_tmix()
    x = torch.randn(1, 40, D_MODEL, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], tmix_reference(m, x, wkv=wkv_fla), atol=1e-4, rtol=1e-4)


def test_reference_can_fail():
    m = make_tmix()
    x = torch.randn(1, 20, D_MODEL, dtype=torch.float64)
    ref = tmix_reference(m, x)
    with torch.no_grad():
        m.time_faaaa.add_(0.1)
    assert not torch.allclose(m(x)[0], ref, atol=1e-4)


def test_time_mix_decoding_across_chunks():
    m = make_tmix(chunk_size=16)
    x = torch.randn(2, 45, D_MODEL, dtype=torch.float64)
    full = m(x)[0]
    state = m.init_state(2, None, x.dtype)
    y1, state = m(x[:, :33], state)
    ys = [y1]
    for t in range(33, 45):
        y, state = m(x[:, t : t + 1], state)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), full, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(state.shift, x[:, -1])


def test_long_sequence_stays_finite():
    torch.manual_seed(0)
    m = build_mixer("rwkv6", 16, head_size=8, mix_lora_rank=4, decay_lora_rank=4)
    perturb(m, std=0.1)
    with torch.no_grad():  # head 1: exp(w) up to ~150 (near-total forgetting); head 0: RWKV-LM's slow decays
        m.time_decay[8:].add_(4.0)
    x = torch.randn(1, 4096, 16, requires_grad=True)
    y, _ = m(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_time_mix_state_size():
    m = build_mixer("rwkv6", D_MODEL, **SMALL)  # 4 heads of 8
    state = m.init_state(3, None, torch.float32)
    _, state = m(torch.randn(3, 6, D_MODEL), state)
    assert state.S.shape == (3, 4, 8, 8) and state.shift.shape == (3, D_MODEL)
    assert m.state_size() == 4 * 8 * 8 + D_MODEL == state.numel_per_sequence()


def test_time_mix_initialisation_follows_rwkv_lm():
    C, L, n_layers = D_MODEL, 1, 3
    m = build_mixer("rwkv6", C, head_size=16, layer_idx=L, n_layers=n_layers)
    r01, r10 = L / (n_layers - 1), 1 - L / n_layers
    for i in (0, 5, C - 1):
        frac = i / C
        assert m.time_maa_x[i].item() == approx(1 - frac ** r10)
        assert m.time_maa_v[i].item() == approx(1 - (frac ** r10 + 0.3 * r01))
        assert m.time_maa_g[i].item() == approx(1 - frac ** (0.5 * r10))
        assert m.time_decay[i].item() == approx(-6 + 5 * (i / (C - 1)) ** (0.7 + 1.3 * r01))
        zigzag = ((i + 1) % 3 - 1) * 0.1
        assert m.time_faaaa.flatten()[i].item() == approx(r01 * (1 - i / (C - 1)) + zigzag)
    assert m.time_maa_w1.abs().max() == 0 and m.time_decay_w1.abs().max() == 0
    assert 0 < m.time_maa_w2.abs().max() <= 0.01 and 0 < m.time_decay_w2.abs().max() <= 0.01
    assert m.output.weight.abs().max() == 0
    eye = torch.eye(C)
    torch.testing.assert_close(m.key.weight @ m.key.weight.T, 0.01 * eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.receptance.weight @ m.receptance.weight.T, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.ln_x.weight, torch.full((C,), ((1 + L) / n_layers) ** 0.7))
    assert m.ln_x.eps == approx(64e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"head_size": 5}, "head_size=5"),
    ({"head_size": 8, "layer_idx": 3, "n_layers": 3}, "layer_idx=3"),
    ({"head_size": 8, "mix_lora_rank": 0}, "mix_lora_rank"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_mixer("rwkv6", D_MODEL, **kwargs)


# ---------------------------------------------------------------- channel-mix


def make_cmix(seed=0):
    return perturb(build_mlp("rwkv6_cmix", D_MODEL, layer_idx=2, n_layers=4), seed).double()


def test_channel_mix_matches_reference_forward_and_gradients():
    m = make_cmix()
    x = torch.randn(2, 13, D_MODEL, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 13, D_MODEL, dtype=torch.float64)
    y, state = m(x)
    assert state is None
    ref = cmix_reference(m, x)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-10)
    wrt = [x, m.time_maa_k, m.time_maa_r, m.key.weight, m.receptance.weight]
    for a, b in zip(torch.autograd.grad((y * w).sum(), wrt), torch.autograd.grad((ref * w).sum(), wrt)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_channel_mix_chunked_equals_token_by_token():
    m = make_cmix()
    x = torch.randn(2, 11, D_MODEL, dtype=torch.float64)
    full, _ = m(x)
    state = m.init_state(2, None, x.dtype)
    y1, state = m(x[:, :4], state)
    ys = [y1]
    for t in range(4, 11):
        y, state = m(x[:, t : t + 1], state)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), full, atol=1e-12, rtol=1e-10)
    assert m.state_size() == D_MODEL == state.numel_per_sequence()


def test_channel_mix_initialisation_and_hidden_size():
    m = build_mlp("rwkv6_cmix", D_MODEL, layer_idx=2, n_layers=4)
    assert m.hidden_size == int(D_MODEL * 3.5) // 32 * 32 == 96
    assert build_mlp("rwkv6_cmix", 64).hidden_size == 224
    for i in (0, 7, D_MODEL - 1):
        assert m.time_maa_k[i].item() == approx(1 - (i / D_MODEL) ** (1 - 2 / 4))
    assert m.receptance.weight.abs().max() == 0 and m.value.weight.abs().max() == 0
    torch.testing.assert_close(m.key.weight.T @ m.key.weight, torch.eye(D_MODEL), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- RWKV block model


def rwkv_config(**overrides):
    base = dict(vocab_size=61, d_model=D_MODEL, n_layers=3, mixer="rwkv6", mixer_kwargs={"rwkv6": SMALL},
                mlp="rwkv6_cmix")
    return ModelConfig(**{**base, **overrides})


def test_model_passes_layer_index_and_keeps_rwkv_init():
    torch.manual_seed(0)
    model = DecoderLM(rwkv_config())
    for i, block in enumerate(model.blocks):
        assert (block.mixer.layer_idx, block.mixer.n_layers) == (i, 3)
        assert (block.mlp.layer_idx, block.mlp.n_layers) == (i, 3)
        alone = build_mixer("rwkv6", D_MODEL, **SMALL, layer_idx=i, n_layers=3)
        torch.testing.assert_close(block.mixer.time_decay, alone.time_decay)  # survives the generic init
        assert block.mixer.output.weight.abs().max() == 0 and block.mlp.value.weight.abs().max() == 0
    assert not torch.allclose(model.blocks[0].mixer.time_decay, model.blocks[2].mixer.time_decay)


def test_rwkv_block_model_prefill_and_decode_equal_full_forward():
    torch.manual_seed(0)
    model = perturb(DecoderLM(rwkv_config()), std=0.1).eval()
    ids = torch.randint(0, 61, (2, 21))
    full = model(ids).logits
    state = model.init_state(2)
    out = model(ids[:, :12], state)
    pieces, state = [out.logits], out.state
    for t in range(12, 21):
        out = model(ids[:, t : t + 1], state)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert model.state_size(21) == state.numel_per_sequence() == 3 * (4 * 8 * 8 + D_MODEL + D_MODEL)
    assert all(s is not None for s in state.mlps)


def test_mixer_argument_check_still_works_in_a_model():
    with pytest.raises(ValueError, match="head_sz"):
        DecoderLM(rwkv_config(mixer_kwargs={"rwkv6": {"head_sz": 8}}))

