"""Batched unit lower-triangular inverses for the chunked delta-rule families (the UT / WY transform).

``torch.linalg.solve_triangular`` on a CPU runs one small LAPACK call per matrix; for the thousands of
64 × 64 chunk matrices of a batch it is several times slower than a matmul of the same size. Here the
inverse T = (I + L)⁻¹ of a unit lower-triangular matrix (L strictly lower) is built explicitly:
forward substitution on 16 × 16 diagonal blocks (once a row of the inverse is final, one batched
multiply-add takes its multiples from all the rows below), then the blocks merged
pairwise up to the full size with

    [[T₁₁, 0], [L₂₁, T₂₂]]⁻¹ = [[T₁₁⁻¹, 0], [−T₂₂⁻¹ L₂₁ T₁₁⁻¹, T₂₂⁻¹]],

after which X = T R is one batched matmul. Its gradients need no second solve: dR = Tᵀ dX and
dL = −strictly-lower(dR Xᵀ); the delta-rule backwards (``kernels/delta``, ``kernels/dplr``) apply
them in a shorter form that their scans allow.
"""
from __future__ import annotations

import torch

DIAGONAL_BLOCK = 16


def unit_lower_inverse(L: torch.Tensor) -> torch.Tensor:
    """(I + strictly-lower(L))⁻¹ for L ``[..., n, n]``; the diagonal and upper triangle of L are ignored.
    n must be a power of two times the diagonal block (or at most one block)."""
    n = L.shape[-1]
    b = min(n, DIAGONAL_BLOCK)
    if n % b or (n // b) & (n // b - 1):
        raise ValueError(f"unit_lower_inverse: size {n} must be {b} times a power of two")
    nb = n // b
    blocks = L.unflatten(-2, (nb, b)).unflatten(-1, (nb, b))  # [..., nb, b, nb, b]
    diag = torch.diagonal(blocks, dim1=-4, dim2=-2).movedim(-1, -3).contiguous()  # [..., nb, b, b]
    inv = torch.eye(b, dtype=L.dtype, device=L.device).expand_as(diag).contiguous()
    for j in range(b - 1):  # row j is final: take L[i, j] times it from every row i below
        inv[..., j + 1:, :].addcmul_(diag[..., j + 1:, j, None], inv[..., j, None, :], value=-1.0)
    if nb == 1:
        return inv.view_as(L)
    T = torch.zeros_like(L)
    for j in range(nb):
        T[..., j * b:(j + 1) * b, j * b:(j + 1) * b] = inv[..., j, :, :]
    size = b
    while size < n:
        for start in range(0, n, 2 * size):
            top, bottom = slice(start, start + size), slice(start + size, start + 2 * size)
            T[..., bottom, top] = -(T[..., bottom, bottom] @ (L[..., bottom, top] @ T[..., top, top]))
        size *= 2
    return T
