"""Top-k token routing for Mixture-of-Memories: router weights, the load-balancing loss, and the
packing of each memory's tokens into variable-length segments for one varlen kernel call.

Packed layout (``pack_by_memory``): for B sequences of T tokens, top-k routing over M memories and an
optional shared memory (index M, every token), the packed rows are grouped into segments
``n = m·B + b`` (memory-major, then sequence), each holding the tokens of sequence b routed to
memory m in time order. Memory-major order keeps every memory's rows contiguous, so its own key /
value / gate projection is one matmul over one slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Routing:
    """probs [B, T, M]: softmax of the router logits (fp32, or fp64 for fp64 logits);
    memories [B, T, k] long: the chosen memories;
    weights [B, T, k] (dtype of probs): their probabilities renormalised to sum to 1 over the k."""

    probs: torch.Tensor
    memories: torch.Tensor
    weights: torch.Tensor


def route_top_k(logits: torch.Tensor, top_k: int) -> Routing:
    """Softmax over the memories, keep the top-k, renormalise. logits: [B, T, M]."""
    if not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"top_k must be in [1, num_memories={logits.shape[-1]}], got {top_k}")
    probs = F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    top, memories = probs.topk(top_k, dim=-1)
    return Routing(probs, memories, top / top.sum(-1, keepdim=True))


def load_balancing_loss(probs: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer balance loss ``M · Σ_m f_m · P_m`` (Fedus et al., 2021).

    f_m: fraction of routed token-slots (all B·T·k) that went to memory m (no gradient);
    P_m: mean router probability of memory m over the B·T tokens (carries the gradient).
    Uniform routing (f = P = 1/M) gives exactly 1; all slots and probability on one memory give M.
    probs: [..., M]; memories: [..., k] long.
    """
    M = probs.shape[-1]
    f = torch.bincount(memories.reshape(-1), minlength=M).to(probs.dtype) / memories.numel()
    P = probs.reshape(-1, M).mean(0)
    return M * (f * P).sum()


@dataclass
class Packing:
    """Where every packed row comes from and where the segments start.

    token: [N] long, index (b·T + t) of the token behind each packed row;
    cu_seqlens: [S + 1] int32 segment offsets, S = M_total·B segments, segment n = m·B + b (with packed
        documents: M_total·N segments, n = m·N + d);
    lengths: [S] long, the number of rows of each segment;
    memory_offsets: M_total + 1 Python ints, rows of memory m are memory_offsets[m]:memory_offsets[m+1];
    slot_rows: [B, T, k] long, packed row of each routed slot (the inverse of the packing permutation);
    shared_rows: the first row of the shared memory's segments (rows shared_rows + b·T + t), or None.
    """

    token: torch.Tensor
    cu_seqlens: torch.Tensor
    lengths: torch.Tensor
    memory_offsets: list[int]
    slot_rows: torch.Tensor
    shared_rows: int | None


def pack_by_memory(memories: torch.Tensor, num_memories: int, shared: bool, documents=None) -> Packing:
    """Group the routed token-slots ``memories`` [B, T, k] by (memory, sequence), keeping time order.

    The sequences are the B rows, or, with packed ``documents`` (``recall_lm.layers.documents.Documents``,
    B = 1), the N documents of the row: then segment n = m·N + d and every segment lies within one document.

    The sort key ``m·B·T + b·T + t`` is unique per slot (a token picks k distinct memories), so the
    order is deterministic. With ``shared``, B more segments of T rows (every token, memory index M)
    follow the routed ones. One host sync (the segment lengths), which the varlen kernel needs anyway.
    """
    B, T, k = memories.shape
    device = memories.device
    positions = torch.arange(B * T, device=device)
    if documents is None:
        n_seq, sequence, seq_lengths = B, positions // T, torch.full((B,), T, device=device)
    else:
        n_seq, sequence = len(documents.lengths), documents.index
        seq_lengths = torch.tensor(documents.lengths, device=device)
    key = (memories.reshape(B * T, k) * (B * T) + positions[:, None]).reshape(-1)
    order = key.argsort()  # packed row -> routed slot (b·T + t)·k + j
    token = order // k
    slot_rows = torch.empty_like(order)
    slot_rows[order] = torch.arange(order.numel(), device=device)
    segment = (memories.reshape(B * T, k) * n_seq + sequence[:, None]).reshape(-1)  # m·n_seq + sequence
    lengths = torch.bincount(segment, minlength=num_memories * n_seq)
    if shared:
        token = torch.cat([token, positions])
        lengths = torch.cat([lengths, seq_lengths.to(lengths.dtype)])
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    offsets = cu_seqlens.tolist()
    shared_rows = B * T * k if shared else None
    return Packing(token, cu_seqlens, lengths, offsets[::n_seq], slot_rows.view(B, T, k), shared_rows)


def conv_segments(conv, rows: torch.Tensor, lengths: torch.Tensor, history: torch.Tensor | None):
    """Run a causal short convolution over each packed segment separately, from its own history.

    conv: a ``recall_lm.layers.short_conv.ShortConvolution`` of kernel size W (state-free call only);
    rows: [N, C] packed rows; lengths: [S] rows per segment (summing to N); history: [S, W-1, C], the
    last W-1 inputs before each segment (oldest first), or None for zeros.
    Each segment is laid out right-aligned as ``[zeros, history, rows]`` in a dense [S, L_max+W-1, C]
    batch, so the filter of a row sees only its own segment's previous rows and history (never the
    padding, which lies further back than W-1). Returns the convolved rows [N, C] and the new history
    [S, W-1, C] (the last W-1 entries of ``[history, rows]`` per segment).
    """
    S, (N, C), W1 = lengths.numel(), rows.shape, conv.kernel_size - 1
    if history is None:
        history = rows.new_zeros(S, W1, C)
    width = int(lengths.max()) + W1 if N else W1
    start = width - W1 - lengths  # where each segment's history begins in its dense row
    segment = torch.repeat_interleave(torch.arange(S, device=rows.device), lengths)
    first = F.pad(lengths.cumsum(0), (1, 0))[:-1]
    row_at = segment * width + start[segment] + W1 + torch.arange(N, device=rows.device) - first[segment]
    segment_start = torch.arange(S, device=rows.device) * width + start
    hist_at = segment_start[:, None] + torch.arange(W1, device=rows.device)
    index = torch.cat([hist_at.reshape(-1), row_at])
    source = torch.cat([history.to(rows.dtype).reshape(-1, C), rows])
    dense = rows.new_zeros(S * width, C).index_copy(0, index, source)
    dense = dense.view(S, width, C)
    out, _ = conv(dense)
    return out.reshape(S * width, C)[row_at], dense[:, width - W1 :]
