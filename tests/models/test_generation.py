"""generate(): greedy decoding equals argmax over a teacher-forced full forward, for every mixer
and a hybrid; unequal prompt lengths in one batch equal one-by-one generation."""
import copy

import pytest
import torch

from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from tests.layers.mixer_cases import MIXER_CASES

VOCAB = 61
MODEL_CASES = {name: {"mixer": name, "mixer_kwargs": {name: cases[0]}} for name, cases in MIXER_CASES.items()}
MODEL_CASES["hybrid"] = {
    "mixer": ["attention", "linear_attention"],
    "mixer_kwargs": {
        "attention": MIXER_CASES["attention"][0],
        "linear_attention": MIXER_CASES["linear_attention"][1],
    },
}


def build(case, seed=0):
    torch.manual_seed(seed)
    model = DecoderLM(
        ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, init_std=0.3, **MODEL_CASES[case])
    )
    return model.eval()


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_greedy_equals_argmax_of_full_forward(case):
    model = build(case)
    prompt = torch.randint(0, VOCAB, (1, 7))
    generated = model.generate(prompt, 9, temperature=0)[0]
    sequence = prompt[0]
    for _ in range(9):
        logits = model(sequence[None]).logits[0, -1]
        sequence = torch.cat([sequence, logits.argmax()[None]])
    assert torch.equal(generated, sequence)


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_unequal_prompts_batched_equal_one_by_one(case):
    model = build(case, seed=1)
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (5, 1, 11)]
    batched = model.generate(prompts, 6, temperature=0)
    for prompt, out in zip(prompts, batched):
        assert torch.equal(out, model.generate([prompt], 6, temperature=0)[0])


def test_eos_stops_and_sampling_is_seeded():
    model = build("attention")
    prompt = torch.randint(0, VOCAB, (2, 4))
    a = model.generate(prompt, 20, temperature=1.0, top_k=10, top_p=0.9, seed=3)
    b = model.generate(prompt, 20, temperature=1.0, top_k=10, top_p=0.9, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    eos = int(a[0][6])  # a token the seeded run samples at step 3
    c = model.generate(prompt, 20, temperature=1.0, top_k=10, top_p=0.9, seed=3, eos_token_id=eos)
    assert c[0][-1].item() == eos and len(c[0]) <= 7


def test_bad_arguments():
    model = build("attention")
    with pytest.raises(ValueError, match="non-empty"):
        model.generate([torch.tensor([], dtype=torch.long)], 3)


def test_compiled_decode_equals_eager_greedy_generation():
    """generate(compile=True) (torch.compile'd decode step; the KV cache grows, so shapes change) gives
    the eager tokens for a hybrid with a KV cache and a recurrent state, unequal prompts included."""
    model = build("hybrid")
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (5, 8)]
    eager = model.generate(prompts, 12, temperature=0)
    compiled = model.generate(prompts, 12, temperature=0, compile=True)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


@pytest.fixture
def eager_backend_compile(monkeypatch):
    """decode_step(compile=True) through dynamo with the eager backend: the same guards and caching as
    inductor, without its compile time."""
    import recall_lm.models.generation as generation

    torch._dynamo.reset()
    monkeypatch.setattr(generation, "_compiled_step", torch.compile(generation._step, backend="eager"))
    yield
    torch._dynamo.reset()


def _steps(step, state, tokens):
    """Feed tokens [B, n] one at a time; returns the logits [B, n, V] and the last state."""
    logits = []
    for t in range(tokens.shape[1]):
        out, state = step(tokens[:, t : t + 1], state)
        logits.append(out)
    return torch.stack(logits, 1), state


@torch.no_grad()
def test_compiled_step_skips_guards_only_for_a_repeating_signature(eager_backend_compile):
    """A fixed-size state: after two guarded calls with the same signature the rest skip guard
    evaluation and still equal the eager step; a new batch size, a cast of the model, or a KV cache
    (its length changes every token) are evaluated with guards, and give the eager results too."""
    from recall_lm.models.generation import decode_step

    model = build("gated_deltanet")
    tokens = torch.randint(0, VOCAB, (2, 8))
    step = decode_step(model, compile=True)
    want, _ = _steps(decode_step(model), model.init_state(1), tokens[:1])
    got, state = _steps(step, model.init_state(1), tokens[:1])
    torch.testing.assert_close(got, want)
    # two guarded calls per signature; init_state's strides may differ from the step's outputs (one more)
    assert 8 - 3 <= step.unguarded_calls <= 8 - 2

    skipped = step.unguarded_calls  # autocast switched on mid-loop: a new signature, which warms up again
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = _steps(decode_step(model), copy.deepcopy(state), tokens[:1])
        got, _ = _steps(step, state, tokens[:1])
    assert got.dtype == want.dtype == torch.bfloat16 and 8 - 2 <= step.unguarded_calls - skipped <= 8 - 1
    torch.testing.assert_close(got, want)

    skipped = step.unguarded_calls
    want, _ = _steps(decode_step(model), model.init_state(2), tokens)
    got, _ = _steps(step, model.init_state(2), tokens)  # batch 2: a new signature
    torch.testing.assert_close(got, want)
    assert 8 - 3 <= step.unguarded_calls - skipped <= 8 - 2  # a new signature warms up again

    model.double()
    skipped = step.unguarded_calls
    state = model.init_state(1, dtype=torch.float64)
    got, _ = _steps(step, state, tokens[:1, :1])
    want, _ = _steps(decode_step(model), model.init_state(1, dtype=torch.float64), tokens[:1, :1])
    assert got.dtype == torch.float64 and step.unguarded_calls == skipped
    torch.testing.assert_close(got, want)

    attention = build("attention")
    step = decode_step(attention, compile=True)
    got, _ = _steps(step, attention.init_state(1), tokens[:1])
    want, _ = _steps(decode_step(attention), attention.init_state(1), tokens[:1])
    torch.testing.assert_close(got, want)
    assert step.unguarded_calls == 0
