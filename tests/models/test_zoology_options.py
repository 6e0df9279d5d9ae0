"""The options that reproduce Zoology's MQAR models, each against Zoology's maths written out here.

Zoology (HazyResearch/zoology, zoology/model.py and mixers/): BaseConv y = conv(x) ⊙ (W x + b) + x;
attention without positions; a block whose state mixer is the identity, so the residual stream gets
mixer(LN₁(r)) and then LN₂(r) added; embedding dropout; out_proj initialised at 0.02/√(2·n_layers).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

torch.manual_seed(0)


def causal_depthwise_conv(x, weight, bias):
    """x [B, T, D], weight [D, 1, K] (last tap = current token) -> [B, T, D], written as a loop."""
    B, T, D = x.shape
    K = weight.shape[-1]
    y = torch.zeros_like(x) + (0 if bias is None else bias)
    for t in range(T):
        for i in range(K):
            s = t - K + 1 + i
            if s >= 0:
                y[:, t] += weight[:, 0, i] * x[:, s]
    return y


@pytest.mark.parametrize("bias", [True, False])
def test_zoology_base_conv_is_its_formula(bias):
    layer = build_mixer("base_conv", 8, variant="zoology", activation=None, kernel_size=3, bias=bias).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    y, _ = layer(x)
    conv = causal_depthwise_conv(x, layer.conv.conv.weight, layer.conv.conv.bias)
    want = conv * F.linear(x, layer.projection.weight, layer.projection.bias) + x
    torch.testing.assert_close(y, want)
    assert not hasattr(layer, "out_proj") and layer.residual_projections == ()


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "zoology"}, "activation"),
    ({"variant": "zoology", "activation": None, "expand": 4}, "expand"),
    ({"variant": "hyena"}, "variant"),
])
def test_zoology_base_conv_rejects_options_it_lacks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_mixer("base_conv", 8, **kwargs)


def test_attention_without_rotary_is_plain_causal_softmax():
    layer = build_mixer("attention", 8, num_heads=2, rotary=False, bias=True).double().eval()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    y, _ = layer(x)
    q, k, v = layer.qkv(x).view(2, 9, 3, 2, 4).unbind(2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / 2.0  # 1/√head_dim
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(2, 9, 8)
    torch.testing.assert_close(y, layer.out(o))


def test_attention_dropout_only_while_training():
    layer = build_mixer("attention", 16, num_heads=1, rotary=False, dropout=0.5)
    x = torch.randn(2, 12, 16)
    torch.manual_seed(1)
    train_out = layer.train()(x)[0]
    eval_out = layer.eval()(x)[0]
    reference = build_mixer("attention", 16, num_heads=1, rotary=False)
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(eval_out, reference.eval()(x)[0])
    assert not torch.allclose(train_out, eval_out)
    with pytest.raises(ValueError, match="dropout"):
        build_mixer("attention", 16, dropout=1.0)


def zoology_forward(model: DecoderLM, ids: torch.Tensor) -> torch.Tensor:
    """Zoology's LMBackbone/TransformerBlock control flow (residual kept apart from hidden states,
    state mixer = identity), over the model's own modules. Returns logits [B, T, V]."""
    hidden = model.embed_dropout(model.embedding(ids))
    residual = None
    for block in model.blocks:
        residual = hidden + residual if residual is not None else hidden
        hidden = block.mixer(block.mixer_norm(residual))[0]
        residual = hidden + residual
        hidden = block.mlp_norm(residual)  # the identity state mixer
    residual = hidden + residual
    return model.head(model.norm(residual))


def zoology_config(**overrides) -> ModelConfig:
    settings = dict(vocab_size=64, d_model=16, n_layers=2, mixer=["base_conv", "attention"],
                    mixer_kwargs={"base_conv": {"variant": "zoology", "activation": None},
                                  "attention": {"rotary": False, "dropout": 0.1, "bias": True}},
                    mlp="identity", norm="layernorm", embed_dropout=0.1)
    return ModelConfig(**{**settings, **overrides})


def test_identity_mlp_block_is_zoologys_block():
    model = DecoderLM(zoology_config()).double().eval()
    assert isinstance(model.blocks[0].mixer_norm, torch.nn.LayerNorm)
    ids = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(model(ids).logits, zoology_forward(model, ids))
    model.train()  # dropout draws differ between two calls; with the same seed they are the same
    torch.manual_seed(3)
    ours = model(ids).logits
    torch.manual_seed(3)
    torch.testing.assert_close(ours, zoology_forward(model, ids))


def test_embedding_dropout_is_applied_in_training_only():
    model = DecoderLM(zoology_config(embed_dropout=0.5, mixer_kwargs={
        "base_conv": {"variant": "zoology", "activation": None}, "attention": {"rotary": False}}))
    ids = torch.randint(0, 64, (2, 10))
    model.eval()
    a, b = model(ids).logits, model(ids).logits
    torch.testing.assert_close(a, b)
    model.train()
    assert not torch.allclose(model(ids).logits, a)


def test_scaled_residual_init_rescales_output_projections_only():
    torch.manual_seed(0)
    model = DecoderLM(zoology_config(d_model=256, n_layers=4, scaled_residual_init=True))
    attention_out = [b.mixer.out.weight for b in model.blocks if b.mixer_name == "attention"]
    assert len(attention_out) == 2
    for w in attention_out:
        assert w.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
    for b in model.blocks:  # everything else keeps init_std
        if b.mixer_name == "attention":
            assert b.mixer.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
        else:
            assert b.mixer.projection.weight.std().item() == pytest.approx(0.02, rel=0.03)
    plain = DecoderLM(zoology_config(d_model=256, n_layers=4))
    assert plain.blocks[1].mixer.out.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_swiglu_down_projection_is_rescaled():
    model = DecoderLM(
        ModelConfig(vocab_size=64, d_model=256, n_layers=2, mlp="swiglu", scaled_residual_init=True)
    )
    assert model.blocks[0].mlp.down.weight.std().item() == pytest.approx(0.01, rel=0.03)
    assert model.blocks[0].mlp.gate_up.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_logits_at_equals_full_logits_at_the_mask():
    model = DecoderLM(zoology_config()).eval()
    ids = torch.randint(0, 64, (3, 12))
    mask = torch.rand(3, 12) < 0.3
    torch.testing.assert_close(model(ids, logits_at=mask).logits, model(ids).logits[mask])


@pytest.mark.parametrize("field, value, message", [
    ("mixer", "foo", "unknown mixer 'foo'"),
    ("norm", "batchnorm", "norm"),
    ("mlp", "gelu", "mlp"),
    ("embed_dropout", 1.5, "embed_dropout"),
])
def test_bad_model_options_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        zoology_config(**{field: value, **({"mixer_kwargs": {}} if field == "mixer" else {})})
