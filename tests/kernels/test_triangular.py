"""recall_lm.kernels.triangular: the blocked unit lower-triangular inverse against LAPACK, in fp64."""
import pytest
import torch

from recall_lm.kernels.triangular import unit_lower_inverse


def _strict_lower(n, batch=(3, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(*batch, n, 8, generator=gen, dtype=torch.float64), dim=-1)
    beta = torch.rand(*batch, n, 1, generator=gen, dtype=torch.float64)
    # a delta-rule chunk matrix β_i k_iᵀ k_j, plus junk on and above the diagonal that must be ignored
    return beta * (k @ k.transpose(-1, -2)) + torch.randn(
        *batch, n, n, generator=gen, dtype=torch.float64
    ).triu(0)


@pytest.mark.parametrize("n", [4, 16, 32, 64, 128, 256])
def test_inverse_matches_lapack(n):
    L = _strict_lower(n)
    eye = torch.eye(n, dtype=torch.float64)
    expected = torch.linalg.solve_triangular(L.tril(-1) + eye, eye.expand_as(L), upper=False)
    torch.testing.assert_close(unit_lower_inverse(L), expected, rtol=1e-10, atol=1e-10)


def test_rejects_sizes_off_the_block_grid():
    with pytest.raises(ValueError, match="size 48"):
        unit_lower_inverse(torch.zeros(48, 48))
