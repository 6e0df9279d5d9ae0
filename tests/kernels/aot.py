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


def compile_in_pool(compile_case, cases: list) -> int:
    """Run ``compile_case`` (a module-level function, so it pickles) over ``cases`` on every core; returns
    the number of cases. An exception in any case propagates."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in pool.map(compile_case, cases):
            pass
    return len(cases)


def run_compile_child(module: str, full: bool) -> None:
    """``python -m <module> [--all]`` with the interpreter off (the GPU compiler needs real ``triton.jit``
    functions), from the repository root; asserts it exits 0 and reports "compiled"."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", module] + (["--all"] if full else [])
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert "compiled" in result.stdout
