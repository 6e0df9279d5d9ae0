"""DecoderLM.state_bytes / state_size against the tensors actually held after prefill + decoding.

For every registered mixer (each constructor case of tests/layers/mixer_cases.py) and for hybrids
(including RWKV-6's stateful channel-mix MLP), in fp32 and bf16: run a prefill and a few decode
steps, then compare the analytic accounting with ``ModelState.nbytes_per_sequence()`` /
``numel_per_sequence()`` of the state the model returned.
"""
import pytest
import torch

from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from tests.layers.mixer_cases import D_MODEL, MIXER_CASES, all_cases, case_id

VOCAB = 37
PREFILL, DECODE = 5, 3

CONFIGS = {case_id(c): {"mixer": c[0], "mixer_kwargs": {c[0]: c[1]}} for c in all_cases()}
CONFIGS["hybrid-attention-based-swa-base_conv"] = {
    "mixer": ["attention", "based", "swa", "base_conv"],
    "mixer_kwargs": {m: MIXER_CASES[m][0] for m in ("attention", "based", "swa", "base_conv")},
    "n_layers": 4,
}
CONFIGS["hybrid-rwkv6-cmix-retnet"] = {
    "mixer": ["rwkv6", "retnet"],
    "mixer_kwargs": {"rwkv6": MIXER_CASES["rwkv6"][0], "retnet": MIXER_CASES["retnet"][0]},
    "mlp": "rwkv6_cmix",
}


def run_state(model: DecoderLM, dtype: torch.dtype, batch: int = 2):
    """Prefill PREFILL tokens, then DECODE single-token steps; returns the final ModelState."""
    ids = torch.randint(0, VOCAB, (batch, PREFILL + DECODE))
    with torch.inference_mode():
        state = model.init_state(batch, dtype=dtype)
        state = model(ids[:, :PREFILL], state).state
        for t in range(PREFILL, PREFILL + DECODE):
            state = model(ids[:, t : t + 1], state).state
    return state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_bytes_match_the_decoding_state(name, dtype):
    torch.manual_seed(0)
    kwargs = {"n_layers": 2, **CONFIGS[name]}
    model = DecoderLM(ModelConfig(vocab_size=VOCAB, d_model=D_MODEL, **kwargs)).to(dtype).eval()
    state = run_state(model, dtype)
    T = PREFILL + DECODE
    assert model.state_bytes(T, dtype) == state.nbytes_per_sequence()
    assert model.state_bytes(T) == state.nbytes_per_sequence()  # default: the parameters' dtype
    assert model.state_size(T) == state.numel_per_sequence()


def test_hand_counted_bytes():
    """Independent counts: an fp32 linear memory is fp32 whatever the activations; a KV cache is not."""
    d, T = 32, 10
    attention = DecoderLM(ModelConfig(vocab_size=VOCAB, d_model=d, n_layers=3, mixer="attention",
                                      mixer_kwargs={"attention": {"num_heads": 2}}))
    assert attention.state_bytes(T, torch.bfloat16) == 3 * 2 * T * d * 2
    assert attention.state_bytes(T, torch.float32) == 3 * 2 * T * d * 4
    assert attention.state_bytes(2 * T, torch.float32) == 2 * attention.state_bytes(T, torch.float32)
    linear = DecoderLM(ModelConfig(vocab_size=VOCAB, d_model=d, n_layers=2, mixer="linear_attention",
                                   mixer_kwargs={"linear_attention": {"num_heads": 2, "feature_map": "elu"}}))
    per_layer = 2 * 16 * (16 + 1) * 4  # H · K · (V + 1 normaliser column), fp32
    for dtype in (torch.float32, torch.bfloat16):
        assert linear.state_bytes(T, dtype) == linear.state_bytes(1000 * T, dtype) == 2 * per_layer
