"""The `swa` mixer against a direct masked softmax with rotary positions (fp64), and its ring-buffer cache."""
import math

import pytest
import torch

from recall_lm.layers.registry import build_mixer
from tests.layers.test_attention import rope_reference


def swa_reference(mixer, x, rope=rope_reference):
    """softmax over keys j with i - w < j ≤ i of q_i·k_j/√D, q and k rotated at positions 0..T-1, full
    T×T mask."""
    B, T, d = x.shape
    H, D, w = mixer.num_heads, mixer.head_dim, mixer.window_size
    q, k, v = mixer.qkv(x).view(B, T, 3, H, D).unbind(2)
    q, k = rope(q), rope(k)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(D)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    scores = scores.masked_fill(~((j <= i) & (i - j < w)), float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)
    return mixer.out(o.reshape(B, T, d))


def make(window_size, num_heads=2, d=16, seed=0):
    torch.manual_seed(seed)
    mixer = build_mixer("swa", d, num_heads=num_heads, window_size=window_size).double()
    with torch.no_grad():  # sharper attention than the 0.02-std init, so the window matters
        mixer.qkv.weight.normal_(0, 0.5)
        mixer.out.weight.normal_(0, 0.5)
    return mixer


@pytest.mark.parametrize("window_size", [1, 4, 9, 40])
@pytest.mark.parametrize("own_rope", [False, True])
def test_matches_masked_softmax_with_rotary(window_size, own_rope):
    """Against a masked softmax in fp64, with the independent RoPE of test_attention and with the mixer's
    own."""
    mixer = make(window_size)
    x = torch.randn(2, 29, 16, dtype=torch.float64, requires_grad=True)
    y, state = mixer(x)
    assert state is None
    expected = swa_reference(mixer, x, rope=mixer.rotary if own_rope else rope_reference)
    torch.testing.assert_close(y, expected)
    params = [x, mixer.qkv.weight, mixer.out.weight]
    g1 = torch.autograd.grad((y * torch.cos(y)).sum(), params)
    g2 = torch.autograd.grad((expected * torch.cos(expected)).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_window_changes_the_output():
    """The test above can fail: a window shorter than T must differ from full causal attention."""
    x = torch.randn(1, 20, 16, dtype=torch.float64)
    assert not torch.allclose(make(4)(x)[0], make(64)(x)[0])


def test_decoding_past_the_window_matches_chunked_and_state_is_constant():
    w = 6
    mixer = make(w)
    T = 3 * w
    x = torch.randn(2, T, 16, dtype=torch.float64)
    y_full, _ = mixer(x)
    state = mixer.init_state(2, None, torch.float64)
    assert not state.valid().any()
    sizes = set()
    steps = []
    for t in range(T):
        y_t, state = mixer(x[:, t : t + 1], state)
        steps.append(y_t)
        sizes.add(state.numel_per_sequence())
        assert int(state.valid().sum()) == min(t + 1, w)
    torch.testing.assert_close(torch.cat(steps, 1), y_full, atol=1e-10, rtol=1e-10)
    assert sizes == {mixer.state_size(1)} == {mixer.state_size(10**6)} == {2 * w * 16 + 1}  # + the counter


@pytest.mark.parametrize("chunks", [[5, 1, 2, 9, 1, 12, 3], [13, 14, 3], [1, 30]])
def test_prefill_with_an_existing_state(chunks):
    """Chunks shorter and longer than the window (the masked and the banded-kernel paths) after a state."""
    w = 7
    mixer = make(w)
    x = torch.randn(2, sum(chunks), 16, dtype=torch.float64)
    y_full, _ = mixer(x)
    state = mixer.init_state(2, None, torch.float64)
    outs, start = [], 0
    for n in chunks:
        y, state = mixer(x[:, start : start + n], state)
        outs.append(y)
        start += n
    torch.testing.assert_close(torch.cat(outs, 1), y_full, atol=1e-10, rtol=1e-10)
    assert state.seen.tolist() == [sum(chunks)] * 2


def test_ring_buffer_holds_the_last_window_of_rotated_keys():
    w, T = 5, 13
    mixer = make(w, num_heads=1)
    x = torch.randn(1, T, 16, dtype=torch.float64)
    _, state = mixer(x, mixer.init_state(1, None, torch.float64))
    _, k, v = mixer.qkv(x).view(1, T, 3, 1, 16).unbind(2)
    k = mixer.rotary(k)
    for p in range(T - w, T):
        torch.testing.assert_close(state.k[:, p % w], k[:, p])
        torch.testing.assert_close(state.v[:, p % w], v[:, p])


def test_cache_is_updated_out_of_place():
    mixer = make(4)
    state = mixer.init_state(1, None, torch.float64)
    _, state = mixer(torch.randn(1, 3, 16, dtype=torch.float64), state)
    k_before, v_before, seen = state.k.clone(), state.v.clone(), state.seen.clone()
    mixer(torch.randn(1, 2, 16, dtype=torch.float64), state)
    assert torch.equal(state.seen, seen)
    torch.testing.assert_close(state.k, k_before)
    torch.testing.assert_close(state.v, v_before)


def test_fp32_cache_with_bf16_inputs_runs():
    mixer = make(4).float().to(torch.bfloat16)
    x = torch.randn(2, 9, 16, dtype=torch.bfloat16)
    y_full, _ = mixer(x)
    state = mixer.init_state(2, None, torch.float32)
    y1, state = mixer(x[:, :6], state)
    y2, state = mixer(x[:, 6:], state)
    assert state.k.dtype == torch.float32 and y2.dtype == torch.bfloat16
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("window_size", [0, -3, 2.5, True])
def test_bad_window_is_named(window_size):
    with pytest.raises(ValueError, match="window_size"):
        build_mixer("swa", 16, window_size=window_size)
