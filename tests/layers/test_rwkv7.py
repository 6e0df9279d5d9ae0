"""RWKV-7 against RWKV-LM's token recurrence (value-major state, written out here from its RNN form)."""
import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.mlp import build_mlp
from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

torch.manual_seed(0)


def randomise(layer):
    """RWKV-LM's init zeroes the output and the LoRA inputs: random values make every path visible."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith(("1", "output.weight")) or name in ("r_k",):
                p.normal_(0, 0.3)
    return layer


def rnn_reference(layer, x, v_first=None):
    """RWKV-LM x070, one token at a time: S ← S·diag(w) + S·(−κ̂)ᵀ(κ̂ ⊙ a) + v kᵀ (S [H, N_v, N_k]), y = S r."""
    B, T, C = x.shape
    H, N = layer.num_heads, layer.head_size
    S = x.new_zeros(B, H, N, N)
    prev = x.new_zeros(B, C)
    ys, vs = [], []
    for t in range(T):
        xt = x[:, t]
        xx = prev - xt
        prev = xt
        xr, xw, xk, xv, xa, xg = (
            xt + xx * getattr(layer, m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")
        )
        r, k, v = layer.receptance(xr), layer.key(xk), layer.value(xv)
        w = torch.exp(-math.exp(-0.5) * torch.sigmoid(layer.w0 + torch.tanh(xw @ layer.w1) @ layer.w2))
        if v_first is not None:
            v = v + (v_first[:, t] - v) * torch.sigmoid(layer.v0 + (xv @ layer.v1) @ layer.v2)
        vs.append(v)
        a = torch.sigmoid(layer.a0 + (xa @ layer.a1) @ layer.a2)
        g = torch.sigmoid(xg @ layer.g1) @ layer.g2
        kk = F.normalize((k * layer.k_k).view(B, H, N), dim=-1)
        k = k * (1 + (a - 1) * layer.k_a)
        r_, k_, v_, a_ = (z.view(B, H, N) for z in (r, k, v, a))
        ab = (-kk)[..., :, None] * (kk * a_)[..., None, :]  # [B, H, N_k, N_k]
        S = S * w.view(B, H, 1, N) + S @ ab + v_[..., :, None] * k_[..., None, :]
        out = (S @ r_[..., :, None]).squeeze(-1).reshape(B, C)
        out = layer.ln_x(out)
        out = out + ((r_ * k_ * layer.r_k).sum(-1, keepdim=True) * v_).reshape(B, C)
        ys.append(layer.output(out * g))
    return torch.stack(ys, 1), torch.stack(vs, 1)


@pytest.mark.parametrize("kwargs", [{"head_size": 8}, {"head_size": 16, "chunk_size": 16}])
def test_first_layer_is_the_rnn(kwargs):
    layer = randomise(build_mixer("rwkv7", 32, **kwargs).double())
    x = torch.randn(2, 41, 32, dtype=torch.float64)
    shared = {}
    y, _ = layer(x, shared=shared)
    y_ref, v_ref = rnn_reference(layer, x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(shared["v_first"], v_ref)  # what a later layer will mix in


def test_later_layer_mixes_in_the_first_layers_value():
    layer = randomise(build_mixer("rwkv7", 32, head_size=8, layer_idx=2, n_layers=4).double())
    with torch.no_grad():
        layer.v1.normal_(0, 0.3)
    x, v_first = torch.randn(2, 23, 32, dtype=torch.float64), torch.randn(2, 23, 32, dtype=torch.float64)
    y, _ = layer(x, shared={"v_first": v_first})
    torch.testing.assert_close(y, rnn_reference(layer, x, v_first)[0])
    assert not hasattr(build_mixer("rwkv7", 32, head_size=8), "v0")  # layer 0 has no value-residual gate


def test_model_passes_the_first_value_along_and_decodes_it():
    config = ModelConfig(
        vocab_size=50,
        d_model=32,
        n_layers=3,
        mixer="rwkv7",
        mixer_kwargs={"rwkv7": {"head_size": 8}},
        mlp="rwkv7_cmix",
    )
    model = DecoderLM(config).double().eval()
    for block in model.blocks:
        randomise(block.mixer)
        with torch.no_grad():
            block.mlp.value.weight.normal_(0, 0.3)
            if block.mixer.value_residual:
                block.mixer.v1.normal_(0, 0.3)
    ids = torch.randint(0, 50, (2, 19))
    full = model(ids).logits
    state, pieces = model.init_state(2, dtype=torch.float64), []
    for t in range(19):
        out = model(ids[:, t : t + 1], state)
        state = out.state
        pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full)
    full.square().mean().backward()
    assert model.blocks[2].mixer.v0.grad.abs().sum() > 0  # the residual gate is trained


def test_hybrid_first_rwkv7_layer_has_no_unused_gate():
    """In [base_conv, rwkv7, rwkv7] the first RWKV-7 layer is layer 1: it stores v and has no v₀/V₁/V₂."""
    config = ModelConfig(vocab_size=50, d_model=32, n_layers=3, mixer=["base_conv", "rwkv7", "rwkv7"],
                         mixer_kwargs={"rwkv7": {"head_size": 8}}, mlp="none")
    model = DecoderLM(config)
    assert not model.blocks[1].mixer.value_residual and not hasattr(model.blocks[1].mixer, "v0")
    assert model.blocks[2].mixer.value_residual
    for block in model.blocks[1:]:
        randomise(block.mixer)
        if block.mixer.value_residual:
            with torch.no_grad():
                block.mixer.v1.normal_(0, 0.3)
    model(torch.randint(0, 50, (2, 9))).logits.square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_initialisation_follows_rwkv_lm():
    layer = build_mixer("rwkv7", 128, head_size=64, layer_idx=1, n_layers=4)
    assert (layer.output.weight == 0).all() and (layer.w1 == 0).all() and (layer.a1 == 0).all()
    # w0 = −6 + 6·(n/(C−1))^(1 + r^0.3) + 0.5 + 2.5·zigzag, zigzag ∈ [−1, 1]: channel 0 is −8, the last 3
    w0 = layer.w0.detach()
    assert float(w0[0]) == pytest.approx(-8.0) and float(w0[-1]) == pytest.approx(3.0)
    assert layer.w1.shape == (128, 32) and layer.g1.shape == (128, 64)  # RWKV-LM's suggested LoRA widths
    assert torch.allclose(layer.k_a, torch.full_like(layer.k_a, 1.02)) and (layer.r_k == -0.04).all()
    # the matrices as RWKV-LM's training script starts them (generate_init_weight): orthogonal, key gain 0.1
    eye = torch.eye(128)
    for linear, gain in ((layer.receptance, 1.0), (layer.key, 0.1), (layer.value, 1.0)):
        torch.testing.assert_close(linear.weight @ linear.weight.T, gain**2 * eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.ln_x.weight, torch.full((128,), (2 / 4) ** 0.7))
    assert (layer.ln_x.bias == 0).all()
    mix = build_mlp("rwkv7_cmix", 128, layer_idx=1, n_layers=4)
    torch.testing.assert_close(mix.key.weight.T @ mix.key.weight, eye, atol=1e-5, rtol=0)  # [4C, C]
    assert (mix.value.weight == 0).all()


@pytest.mark.parametrize("mixer", ["rwkv7", "rwkv6"])
def test_optimiser_groups_follow_rwkv_lm(mixer):
    """Weight decay only on the projection matrices (not the LoRAs, mixing vectors or bonus), in either
    ``weight_decay_on`` mode; RWKV-7's w0 / RWKV-6's time_decay at twice the learning rate."""
    from recall_lm.training.task import LanguageModelTask

    config = ModelConfig(vocab_size=32, d_model=64, n_layers=2, mixer=mixer, mlp="none",
                         mixer_kwargs={mixer: {"head_size": 32}})
    for mode in ("matrices", "all"):
        task = LanguageModelTask(config, lr=1e-3, weight_decay_on=mode)
        groups = task.build_optimizer().param_groups
        for block in task.model.blocks:
            m = block.mixer
            projections = [m.receptance, m.key, m.value, m.output] + ([m.gate] if mixer == "rwkv6" else [])
            fast = m.w0 if mixer == "rwkv7" else m.time_decay
            group_of = {id(p): g for g in groups for p in g["params"]}
            for name, p in m.named_parameters(recurse=False):
                group = group_of[id(p)]
                assert group["weight_decay"] == 0.0, name
                assert group["lr"] == pytest.approx(2e-3 if p is fast else 1e-3), name
            for linear in projections:
                assert group_of[id(linear.weight)]["weight_decay"] == 0.1
                assert group_of[id(linear.weight)]["lr"] == pytest.approx(1e-3)


def test_channel_mix_is_its_formula():
    mix = build_mlp("rwkv7_cmix", 16, layer_idx=0, n_layers=2).double()
    with torch.no_grad():
        mix.value.weight.normal_()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
    want = torch.relu((x + (prev - x) * mix.x_k) @ mix.key.weight.T).square() @ mix.value.weight.T
    torch.testing.assert_close(mix(x)[0], want)
    assert mix.hidden_size == 64


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="head_size=12 must be ≥ 1 and divide d_model=32"):
        build_mixer("rwkv7", 32, head_size=12)
