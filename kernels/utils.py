"""Small helpers shared by the kernel families: input checks, Triton availability, varlen tables."""
from __future__ import annotations

import functools
import inspect
import os

import torch


def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET`` set to 1, true, yes or on,
    as Triton itself reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - triton is a dependency, but keep CPU paths alive without it
        return False
    return True


def triton_available_for(tensor: torch.Tensor) -> bool:
    """Whether Triton kernels can run on ``tensor``: CUDA tensors, or CPU tensors under the interpreter."""
    if not triton_importable():
        return False
    if tensor.is_cuda:
        return True
    return tensor.device.type == "cpu" and interpreter_enabled()


def autocast_aware(*cast: str):
    """Make a public op behave under ``torch.autocast`` as autocast's own matmuls do.

    When autocast is on for the first argument's device, the named floating-point arguments (the
    activations, e.g. q, k, v) are cast to autocast's dtype, and the op runs with autocast off: it
    already computes in fp32 where its precision needs it (decays, scans, the state), which autocast
    would otherwise override op by op, mixing dtypes inside the kernels. Decays, write strengths and
    states pass through unchanged. Outside autocast the op is called as is."""

    def decorate(op):
        names = list(inspect.signature(op).parameters)
        positions = [names.index(name) for name in cast]

        @functools.wraps(op)
        def wrapper(*args, **kwargs):
            device = (args[0] if args else kwargs[names[0]]).device.type
            if not torch.is_autocast_enabled(device):
                return op(*args, **kwargs)
            dtype = torch.get_autocast_dtype(device)

            def lower(x):
                return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

            args = tuple(lower(x) if i in positions else x for i, x in enumerate(args))
            kwargs = {name: lower(x) if name in cast else x for name, x in kwargs.items()}
            with torch.autocast(device, enabled=False):
                return op(*args, **kwargs)

        return wrapper

    return decorate


def check_ndim_shape(name: str, tensor, expected: tuple, what: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a tensor of shape ``expected`` (None = any size).

    ``what`` describes the expected layout in words, e.g. ``"[B, T, H, K]"``.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {what}, got {type(tensor).__name__}")
    if tensor.ndim != len(expected):
        raise ValueError(f"{name} must have {len(expected)} dims {what}, got shape {tuple(tensor.shape)}")
    for got, want in zip(tensor.shape, expected):
        if want is not None and got != want:
            raise ValueError(f"{name} must have shape {what} = {tuple(expected)}, got {tuple(tensor.shape)}")


def check_cu_seqlens(cu_seqlens, batch_size: int, total_len: int, device=None) -> list[int]:
    """Validate packed-sequence offsets ``[N+1]`` (non-decreasing integers from 0 to T, with B = 1, on
    ``device`` when given) and return them as a Python list (one host sync)."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [N+1] of sequence offsets")
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype.is_complex or cu_seqlens.dtype == torch.bool:
        raise ValueError(f"cu_seqlens must be an integer tensor, got {cu_seqlens.dtype}")
    if batch_size != 1:
        raise ValueError(f"cu_seqlens requires packed inputs with batch size B = 1, got B = {batch_size}")
    if device is not None and cu_seqlens.device != torch.device(device):
        raise ValueError(f"cu_seqlens must be on {device}, got {cu_seqlens.device}")
    offsets = [int(x) for x in cu_seqlens.tolist()]
    if offsets[0] != 0 or offsets[-1] != total_len:
        raise ValueError(f"cu_seqlens must start at 0 and end at T = {total_len}, "
                         f"got {offsets[0]}..{offsets[-1]}")
    if any(b < a for a, b in zip(offsets, offsets[1:])):
        raise ValueError("cu_seqlens must be non-decreasing")
    return offsets


def triton_device_error(q: torch.Tensor) -> ValueError:
    """The error for ``backend='triton'`` on a tensor Triton cannot run on (every op family raises it)."""
    hint = " Set TRITON_INTERPRET=1 before importing triton." if not interpreter_enabled() else ""
    return ValueError(f"backend='triton' needs CUDA tensors (or CPU tensors under the Triton interpreter); "
                      f"got a {q.device.type} tensor.{hint}")


def check_chunked_layout(q, v, chunk_size, cu_seqlens, initial_state) -> list[int] | None:
    """The checks every chunked op family shares: non-empty H, K, V, a power-of-two chunk size in
    [16, 256], valid ``cu_seqlens`` and an ``initial_state`` of shape [N, H, K, V]. Returns the packed
    offsets (a list) or None."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    if K == 0 or V == 0 or H == 0:
        raise ValueError(f"q and v need non-empty H, K, V dims, got q {tuple(q.shape)}, v {tuple(v.shape)}")
    if not (isinstance(chunk_size, int) and 16 <= chunk_size <= 256 and chunk_size & (chunk_size - 1) == 0):
        raise ValueError(f"chunk_size must be a power of two in [16, 256], got {chunk_size!r}")
    offsets = None if cu_seqlens is None else check_cu_seqlens(cu_seqlens, B, T)
    N = B if offsets is None else len(offsets) - 1
    if initial_state is not None:
        check_ndim_shape("initial_state", initial_state, (N, H, K, V),
                         "[N, H, K, V] (N = B, or the number of sequences in cu_seqlens)")
    return offsets


def check_triton_scan_backend(q: torch.Tensor, chunk_size: int, max_k: int) -> None:
    """The limits of the delta-rule families' ``triton`` backend (Triton scans, fp32 inside): a device
    Triton can run on, chunk_size ≤ 64, key width ≤ ``max_k``, no fp64."""
    if not triton_available_for(q):
        raise triton_device_error(q)
    if chunk_size > 64 or q.shape[-1] > max_k:
        raise ValueError(
            f"backend='triton' supports chunk_size ≤ 64 and K ≤ {max_k}, got {chunk_size}, {q.shape[-1]}"
        )
    if q.dtype == torch.float64:
        raise ValueError("backend='triton' computes in fp32; use backend='torch' for fp64 inputs")


def chunk_tables(offsets: list[int], chunk_size: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Chunk-index tables for packed sequences.

    Returns ``chunk_indices`` int32 ``[NT, 2]`` (sequence id, chunk id within that sequence) for every
    chunk of every sequence, ``chunk_offsets`` int32 ``[N+1]`` (index of each sequence's first chunk),
    and ``NT`` the total number of chunks. Empty sequences own no chunk.
    """
    indices, starts = [], [0]
    for n, (bos, eos) in enumerate(zip(offsets, offsets[1:])):
        nt = -(-(eos - bos) // chunk_size)
        indices.extend((n, i) for i in range(nt))
        starts.append(starts[-1] + nt)
    table = torch.tensor(indices if indices else [[0, 0]], dtype=torch.int32, device=device)
    starts_t = torch.tensor(starts, dtype=torch.int32, device=device)
    return table[: len(indices)].contiguous(), starts_t, len(indices)


def to_chunks(x: torch.Tensor, C: int, dtype: torch.dtype, scale: float | None = None) -> torch.Tensor:
    """``[B, T, H, *D]`` -> ``[B*H, NT, C, *D]`` in ``dtype`` (one copy, times ``scale`` if given),
    zero-padded to a multiple of C."""
    B, T, H = x.shape[:3]
    nt = -(-T // C)
    out = torch.empty((B, H, nt * C) + tuple(x.shape[3:]), dtype=dtype, device=x.device)
    if scale is None:
        out[:, :, :T] = x.movedim(1, 2)
    else:
        torch.mul(x.movedim(1, 2), scale, out=out[:, :, :T])
    if nt * C > T:
        out[:, :, T:] = 0
    return out.view((B * H, nt, C) + tuple(x.shape[3:]))


def from_chunks(
    x: torch.Tensor, B: int, T: int, dtype: torch.dtype, scale: float | None = None
) -> torch.Tensor:
    """``[B*H, NT, C, *D]`` -> ``[B, T, H, *D]`` in ``dtype`` (one copy, times ``scale`` if given)."""
    BH, nt, C = x.shape[:3]
    x = x.view((B, BH // B, nt * C) + tuple(x.shape[3:]))[:, :, :T].movedim(1, 2)
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    return out.copy_(x) if scale is None else torch.mul(x, scale, out=out)


def length_buckets(lengths: list[int], chunk_size: int) -> list[list[int]]:
    """Group sequence indices so that padding each group to its longest member wastes at most about half:
    lengths rounded up to whole chunks fall in classes (C·2^(j-1), C·2^j]. Returns the non-empty groups,
    longest class first."""
    classes: dict[int, list[int]] = {}
    for n, length in enumerate(lengths):
        chunks = max(1, -(-length // chunk_size))
        classes.setdefault((chunks - 1).bit_length(), []).append(n)
    return [classes[j] for j in sorted(classes, reverse=True)]


def run_padded_varlen(run, cu_seqlens: torch.Tensor, tensors, initial_state, chunk_size: int):
    """Varlen for the chunked backends: the packed sequences are cut into length buckets
    (:func:`length_buckets`), each bucket is zero-padded into a dense batch ``[n, L, ...]`` and run as
    ``run(padded_tensors, h0) -> (o [n, L, H, V], final [n, H, K, V])``, and the outputs are put back.
    Zero inputs must leave a state unchanged (true of every family's padding). ``tensors``: the
    per-token inputs ``[1, T, ...]`` (None stays None); ``initial_state`` ``[N, H, K, V]`` or None.
    Returns o ``[1, T, H, V]`` and the final states ``[N, H, K, V]``; differentiable throughout."""
    offsets = cu_seqlens.tolist()
    lengths = [e - s for s, e in zip(offsets, offsets[1:])]
    ref = next(x for x in tensors if x is not None)
    device, T = ref.device, ref.shape[1]
    out, finals, order = None, [], []
    for members in length_buckets(lengths, chunk_size):
        width = max(1, max(lengths[n] for n in members))
        rows = [torch.arange(offsets[n], offsets[n] + lengths[n], device=device) for n in members]
        token = torch.cat(rows)  # packed position of each real token of the bucket
        slot = torch.cat([i * width + torch.arange(lengths[n], device=device) for i, n in enumerate(members)])
        idx = torch.tensor(members, device=device)

        def pad(x):
            if x is None:
                return None
            flat = x.new_zeros((len(members) * width,) + tuple(x.shape[2:])).index_copy(0, slot, x[0, token])
            return flat.unflatten(0, (len(members), width))

        o, final = run([pad(x) for x in tensors], None if initial_state is None else initial_state[idx])
        o = o.flatten(0, 1)[slot]
        if out is None:
            out = o.new_zeros((T,) + tuple(o.shape[1:]))
        out = out.index_copy(0, token, o)
        finals.append(final)
        order.extend(members)
    inverse = torch.empty(len(order), dtype=torch.long, device=device)
    inverse[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
    return out[None], torch.cat(finals)[inverse]


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def loop_over_sequences(
    fn, *tensors, scale, initial_state, output_final_state, cu_seqlens, per_token: int = 4
):
    """Varlen by the plainest means, for the reference backends: call ``fn(*tensors, scale=...,
    initial_state=..., output_final_state=True)`` on each packed sequence of ``cu_seqlens`` and
    concatenate the outputs ``[1, T, H, V]`` and final states ``[N, H, K, V]``. The first ``per_token``
    tensors ([1, T, ...] or None) are cut per sequence, the rest (e.g. GLA's bonus u) passed whole."""
    outs, states = [], []
    offsets = cu_seqlens.tolist()
    for n, (bos, eos) in enumerate(zip(offsets, offsets[1:])):
        cut = [None if x is None else x[:, bos:eos] for x in tensors[:per_token]]
        o_n, s_n = fn(
            *cut, *tensors[per_token:],
            scale=scale, initial_state=None if initial_state is None else initial_state[n : n + 1],
            output_final_state=True,
        )
        outs.append(o_n)
        states.append(s_n)
    return torch.cat(outs, 1), (torch.cat(states, 0) if output_final_state else None)
