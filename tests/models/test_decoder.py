"""DecoderLM: structure, hybrids, config errors, prefill + decode equals the full forward."""
import pytest
import torch

from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM


def small_config(**overrides):
    base = dict(
        vocab_size=97,
        d_model=32,
        n_layers=3,
        mixer=["attention", "linear_attention"],
        mixer_kwargs={
            "attention": {"num_heads": 2},
            "linear_attention": {"feature_map": "taylor", "feature_dim": 4},
        },
    )
    base.update(overrides)
    return ModelConfig(**base)


def test_hybrid_cycles_mixers_and_ties_head():
    model = DecoderLM(small_config())
    assert [b.mixer_name for b in model.blocks] == ["attention", "linear_attention", "attention"]
    assert model.head.weight is model.embedding.weight
    assert model.num_parameters() == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_mlp_none_has_no_mlp():
    model = DecoderLM(small_config(mlp="none"))
    assert all(b.mlp is None for b in model.blocks)
    with_mlp = DecoderLM(small_config())
    assert with_mlp.num_parameters() > model.num_parameters()


@pytest.mark.parametrize("mlp, kwargs, message", [
    ("swiglu", {"hiden_size": 32}, r"mlp 'swiglu' got unknown argument\(s\) \['hiden_size'\]; it accepts"),
    ("swiglu", {"hidden_size": 0}, "hidden_size must be an integer ≥ 1, got 0"),
    ("swiglu", {"multiple_of": 0}, "multiple_of must be an integer ≥ 1, got 0"),
    ("none", {"hidden_size": 32}, "mlp 'none' takes no arguments"),
    ("identity", {"hidden_size": 32}, r"mlp 'identity' got unknown argument\(s\)"),
])
def test_bad_mlp_options_are_named(mlp, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecoderLM(small_config(mlp=mlp, mlp_kwargs=kwargs))


def test_prefill_and_decode_equal_full_forward():
    torch.manual_seed(0)
    model = DecoderLM(small_config()).eval()
    ids = torch.randint(0, 97, (2, 17))
    full = model(ids).logits
    state = model.init_state(2)
    out = model(ids[:, :9], state)
    pieces, state = [out.logits], out.state
    for t in range(9, 17):
        out = model(ids[:, t : t + 1], state)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert model.state_size(17) == state.numel_per_sequence()


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(mixer="nope", mixer_kwargs={}), "unknown mixer 'nope'"),
        (dict(mixer_kwargs={"based": {}}), "mixer_kwargs has entries \\['based'\\]"),
        (dict(mlp="relu"), "unknown mlp 'relu'"),
        (dict(d_model=0), "d_model must be ≥ 1"),
        (dict(mixer_kwargs={"attention": {"num_heads": 5}}), "num_heads=5"),
    ],
)
def test_config_errors_name_the_problem(overrides, match):
    with pytest.raises(ValueError, match=match):
        DecoderLM(small_config(**overrides))


@pytest.mark.parametrize("bad", [100, -1])
def test_token_id_outside_the_vocabulary_is_named(bad):
    model = DecoderLM(ModelConfig(vocab_size=100, d_model=16, n_layers=1, mixer="attention"))
    ids = torch.tensor([[1, 2, bad, 3]])
    with pytest.raises(ValueError, match=rf"token id {bad} is outside the model's vocabulary \[0, 100\)"):
        model(ids)
    assert model(ids.clamp(0, 99)).logits.shape == (1, 4, 100)
