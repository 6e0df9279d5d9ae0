"""The chunked torch backend's inter-chunk scans (kernels/gla/chunked_torch_scan.py) against plain
loops over chunks in fp64: forward states, the reverse (state-gradient) scan, with and without decay,
chunk counts below, at and across the block size (padding)."""
import pytest
import torch

from kernels.gla.chunked_torch_scan import BLOCK, scan_scalar, scan_scalar_reverse


def inputs(NT, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kv = torch.randn(3, NT, 4, 5, dtype=torch.float64, generator=gen)
    gamma = -3 * torch.rand(3, NT, dtype=torch.float64, generator=gen)
    h = torch.randn(3, 4, 5, dtype=torch.float64, generator=gen)
    return kv, gamma, h


@pytest.mark.parametrize("NT", [1, 5, BLOCK, 2 * BLOCK + 3])
@pytest.mark.parametrize("decay", [True, False])
def test_forward_scan_matches_loop(NT, decay):
    kv, gamma, h0 = inputs(NT)
    gamma = gamma if decay else None
    want, h = torch.empty_like(kv), h0.clone()
    for c in range(NT):  # h_{c+1} = exp(gamma_c) h_c + kv_c
        want[:, c] = h
        h = (1 if gamma is None else gamma[:, c].exp()[:, None, None]) * h + kv[:, c]
    states, final = scan_scalar(kv, gamma, h0)
    torch.testing.assert_close(states, want)
    torch.testing.assert_close(final, h)


@pytest.mark.parametrize("NT", [1, 5, BLOCK, 2 * BLOCK + 3])
@pytest.mark.parametrize("decay", [True, False])
def test_reverse_scan_matches_loop(NT, decay):
    U, gamma, dht = inputs(NT, seed=1)
    gamma = gamma if decay else None
    want, d = torch.empty_like(U), dht.clone()
    for c in range(NT - 1, -1, -1):  # dh_end[c-1] = exp(gamma_c) dh_end[c] + U_c
        want[:, c] = d
        d = (1 if gamma is None else gamma[:, c].exp()[:, None, None]) * d + U[:, c]
    dh_end, first = scan_scalar_reverse(U, gamma, dht)
    torch.testing.assert_close(dh_end, want)
    torch.testing.assert_close(first, d)
