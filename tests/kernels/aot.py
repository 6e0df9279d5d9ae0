"""Ahead-of-time compilation of Triton kernels for real GPUs, without a GPU.

The interpreter (``TRITON_INTERPRET=1``) is more forgiving than the GPU compiler, so every
kernel is also compiled to PTX/cubin for Hopper (sm_90) and Ampere (sm_80) at its real block
sizes, and its shared-memory use is checked against the card's limit.
"""
from __future__ import annotations

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# Opt-in shared memory per block (bytes): H100/H200 228 KiB - 1 KiB reserved, A100 164 KiB - 1 KiB.
SHARED_MEMORY_LIMIT = {90: 232448, 80: 166912}


def compile_for(
    kernel, signature: dict, constexprs: dict, capability: int, num_warps: int = 4, num_stages: int = 2
):
    """Compile ``kernel`` (a ``@triton.jit`` function, or an autotuned/heuristics wrapper of one).

    ``signature`` maps every runtime argument name to a Triton type (``"*fp32"``, ``"i32"``...);
    ``constexprs`` maps every ``tl.constexpr`` argument name to its value. Returns the compiled
    kernel; ``compiled.metadata.shared`` is its static shared memory in bytes.
    """
    fn = kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):
        fn = fn.fn
    full_signature = dict(signature)
    full_signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn, signature=full_signature, constexprs=dict(constexprs))
    options = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def assert_compiles_and_fits(
    kernel, signature: dict, constexprs: dict, num_warps: int = 4, num_stages: int = 2
):
    """Compile for sm_90 and sm_80 and assert that the shared memory fits each card."""
    for capability, limit in SHARED_MEMORY_LIMIT.items():
        compiled = compile_for(kernel, signature, constexprs, capability, num_warps, num_stages)
        assert compiled.asm.get("cubin"), f"no cubin for sm_{capability}"
        shared = compiled.metadata.shared
        assert shared <= limit, f"{kernel} needs {shared} B shared memory on sm_{capability} (limit {limit})"
