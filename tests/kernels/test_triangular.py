"""kernels.triangular: the blocked unit lower-triangular inverse and solve against LAPACK, in fp64."""
import pytest
import torch

from kernels.triangular import unit_lower_inverse, unit_lower_solve


def _strict_lower(n, batch=(3, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(*batch, n, 8, generator=gen, dtype=torch.float64), dim=-1)
    beta = torch.rand(*batch, n, 1, generator=gen, dtype=torch.float64)
    # a delta-rule chunk matrix β_i k_iᵀ k_j, plus junk on and above the diagonal that must be ignored
    return beta * (k @ k.transpose(-1, -2)) + torch.randn(*batch, n, n, generator=gen, dtype=torch.float64).triu(0)


@pytest.mark.parametrize("n", [4, 16, 32, 64, 128, 256])
def test_inverse_matches_lapack(n):
    L = _strict_lower(n)
    eye = torch.eye(n, dtype=torch.float64)
    expected = torch.linalg.solve_triangular(L.tril(-1) + eye, eye.expand_as(L), upper=False)
    torch.testing.assert_close(unit_lower_inverse(L), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [16, 64])
def test_solve_value_and_gradients(n):
    L = _strict_lower(n, batch=(2,)).requires_grad_()
    rhs = torch.randn(2, n, 5, dtype=torch.float64, requires_grad=True)
    X = unit_lower_solve(L, rhs)
    expected = torch.linalg.solve_triangular(L.tril(-1) + torch.eye(n, dtype=torch.float64), rhs, upper=False)
    torch.testing.assert_close(X, expected, rtol=1e-10, atol=1e-10)
    dX = torch.randn_like(X)
    dL, drhs = torch.autograd.grad(X, (L, rhs), dX)
    L2, rhs2 = L.detach().clone().requires_grad_(), rhs.detach().clone().requires_grad_()
    ref = torch.linalg.solve_triangular(L2.tril(-1) + torch.eye(n, dtype=torch.float64), rhs2, upper=False)
    dL_ref, drhs_ref = torch.autograd.grad(ref, (L2, rhs2), dX)
    torch.testing.assert_close(dL, dL_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(drhs, drhs_ref, rtol=1e-9, atol=1e-10)
    assert torch.all(dL.triu(0) == 0)


def test_gradcheck():
    L = (0.3 * _strict_lower(32, batch=(1,))).requires_grad_()
    rhs = torch.randn(1, 32, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: unit_lower_solve(a.tril(-1), b), (L, rhs))


def test_rejects_sizes_off_the_block_grid():
    with pytest.raises(ValueError, match="size 48"):
        unit_lower_inverse(torch.zeros(48, 48))
