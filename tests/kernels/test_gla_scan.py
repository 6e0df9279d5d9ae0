"""The chunked torch backend's inter-chunk scans (kernels/gla/chunked_torch_scan.py) against plain
loops over chunks in fp64: forward states and the reverse (state-gradient) scan, with no decay, a
per-head decay and a per-key-channel one, one chunk and several; the inputs are left unchanged."""
import pytest
import torch

from recall_lm.kernels.gla.chunked_torch_scan import scan_states, scan_states_reverse

K, V = 4, 5


def inputs(NT, decay, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kv = torch.randn(3, NT, K, V, dtype=torch.float64, generator=gen)
    rows = {"none": 0, "head": 1, "channel": K}[decay]
    d = None if not rows else torch.exp(-3 * torch.rand(3, NT, rows, 1, dtype=torch.float64, generator=gen))
    h = torch.randn(3, K, V, dtype=torch.float64, generator=gen)
    return kv, d, h


@pytest.mark.parametrize("NT", [1, 2, 5, 35])
@pytest.mark.parametrize("decay", ["none", "head", "channel"])
def test_forward_scan_matches_loop(NT, decay):
    kv, d, h0 = inputs(NT, decay)
    copies = [x.clone() for x in (kv, h0)]
    want, h = torch.empty_like(kv), h0.clone()
    for c in range(NT):  # h_{c+1} = d_c ⊙ h_c + kv_c (d_c scales the rows of the K x V state)
        want[:, c] = h
        h = (1 if d is None else d[:, c]) * h + kv[:, c]
    states, final = scan_states(kv, d, h0)
    torch.testing.assert_close(states, want)
    torch.testing.assert_close(final, h)
    assert all(torch.equal(x, y) for x, y in zip((kv, h0), copies))


@pytest.mark.parametrize("NT", [1, 2, 5, 35])
@pytest.mark.parametrize("decay", ["none", "head", "channel"])
def test_reverse_scan_matches_loop(NT, decay):
    U, d, dht = inputs(NT, decay, seed=1)
    copies = [x.clone() for x in (U, dht)]
    want, g = torch.empty_like(U), dht.clone()
    for c in range(NT - 1, -1, -1):  # dh_end[c-1] = d_c ⊙ dh_end[c] + U_c
        want[:, c] = g
        g = (1 if d is None else d[:, c]) * g + U[:, c]
    dh_end, first = scan_states_reverse(U, d, dht)
    torch.testing.assert_close(dh_end, want)
    torch.testing.assert_close(first, g)
    assert all(torch.equal(x, y) for x, y in zip((U, dht), copies))
