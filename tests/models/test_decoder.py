"""DecoderLM: structure, hybrids, config errors, prefill + decode equals the full forward."""
import pytest
import torch

from models import DecoderLM, ModelConfig


def small_config(**overrides):
    base = dict(vocab_size=97, d_model=32, n_layers=3, mixer=["attention", "linear_attention"],
                mixer_kwargs={"attention": {"num_heads": 2}, "linear_attention": {"feature_map": "taylor", "feature_dim": 4}})
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
