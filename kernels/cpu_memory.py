"""CPU memory: keep freed large buffers inside the process instead of handing them back to the OS.

glibc's malloc serves every block above its mmap threshold (adaptive, at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``, so each large tensor is page-faulted and zeroed by the kernel again
on first touch. At T = 8192, B4 H4 D64 fp32 (33.5 MiB per ``[B, T, H, D]`` tensor) that made elementwise
ops run 3× below the memory bandwidth (``python -m recall_lm.evals.bench.kernels`` measures both
settings). Raising the mmap and trim thresholds lets freed blocks be reused, which is what PyTorch's
caching allocator does on a GPU; the resident memory then stays near its peak rather than shrinking
after each step.

The training and benchmark entry points call :func:`retain_freed_memory`; ``RECALL_LM_MALLOC=system``
keeps the C library's defaults (``retain``, the default, raises the thresholds).
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
RETAIN_BYTES = 1 << 30


@functools.lru_cache(maxsize=None)
def retain_freed_memory() -> bool:
    """Keep blocks up to 1 GiB in malloc's heap after they are freed (glibc on Linux only). Returns
    whether the setting took effect: False elsewhere, with ``RECALL_LM_MALLOC=system``, or if mallopt
    refuses it (some glibc versions cap the threshold at 32 MiB;
    2.36 takes 1 GiB)."""
    choice = os.environ.get("RECALL_LM_MALLOC", "").strip().lower()
    if choice not in ("", "retain", "system"):
        raise ValueError(f"RECALL_LM_MALLOC must be 'retain' (the default) or 'system', got {choice!r}")
    if choice == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, RETAIN_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, RETAIN_BYTES)
    )
