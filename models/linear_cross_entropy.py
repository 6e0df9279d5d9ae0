"""The LM head and its cross-entropy in row chunks, without the [N, vocab] logits tensor.

``linear_cross_entropy(hidden, weight, labels)`` equals ``F.cross_entropy(hidden @ weight.T, labels,
reduction="sum")`` (labels = -100 ignored) and also returns whether each row's argmax is its label. The
forward keeps only one [chunk_rows, vocab] block of logits at a time and saves the per-row log-sum-exp;
the backward recomputes each block's logits, so peak memory is O(chunk_rows · vocab) instead of
O(N · vocab) — at a vocabulary of 65,536 the full fp32 logits of 8k tokens alone take 2 GiB.
"""
from __future__ import annotations

import torch

from recall_lm.models.config import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_rows):
        N = hidden.shape[0]
        cdt = torch.promote_types(hidden.dtype, torch.float32)  # fp32 at least (fp64 stays fp64)
        lse = hidden.new_empty(N, dtype=cdt)
        loss = hidden.new_zeros((), dtype=cdt)
        correct = torch.zeros(N, dtype=torch.bool, device=hidden.device)
        for start in range(0, N, chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = (hidden[rows] @ weight.T).to(cdt)  # [n, V]
            lse[rows] = torch.logsumexp(logits, -1)
            y = labels[rows]
            valid = y != IGNORE_INDEX
            target = logits.gather(1, y.clamp(min=0)[:, None]).squeeze(1)
            loss += ((lse[rows] - target) * valid).sum()
            correct[rows] = (logits.argmax(-1) == y) & valid
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.chunk_rows = chunk_rows
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, dloss, dcorrect):
        hidden, weight, labels, lse = ctx.saved_tensors
        dh = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        cdt = lse.dtype
        dw = torch.zeros(weight.shape, dtype=cdt, device=weight.device) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            h = hidden[rows]
            y = labels[rows]
            valid = y != IGNORE_INDEX
            grad = torch.exp((h @ weight.T).to(cdt) - lse[rows, None])  # softmax, [n, V]
            grad[torch.arange(len(y), device=y.device)[valid], y[valid]] -= 1.0
            grad *= (dloss * valid)[:, None]
            if dh is not None:
                dh[rows] = (grad.to(weight.dtype) @ weight).to(hidden.dtype)
            if dw is not None:
                dw += grad.T @ h.to(cdt)
        return dh, (None if dw is None else dw.to(weight.dtype)), None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [N, D], weight [V, D] (the LM head), labels [N] (-100: ignored) -> (summed loss, a scalar in
    fp32 or wider; correct [N] bool: argmax == label at labelled rows). ``chunk_rows`` rows of logits at a
    time."""
    if chunk_rows < 1:
        raise ValueError(f"linear_cross_entropy: chunk_rows must be ≥ 1, got {chunk_rows}")
    if (
        hidden.ndim != 2
        or weight.ndim != 2
        or hidden.shape[1] != weight.shape[1]
        or labels.shape != hidden.shape[:1]
    ):
        raise ValueError(f"linear_cross_entropy: need hidden [N, D], weight [V, D], labels [N]; got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(labels.shape)}")
    return _LinearCrossEntropy.apply(hidden, weight, labels, int(chunk_rows))
