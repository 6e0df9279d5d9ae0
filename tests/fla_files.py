"""Load single torch-only files of fla (flash-linear-attention) as independent references in tests."""
import importlib.util
from pathlib import Path

import pytest


def load_fla_file(relative_path: str):
    """One torch-only file of fla, loaded without importing the fla package (which takes tens of seconds)."""
    spec = importlib.util.find_spec("fla")
    if spec is None:
        pytest.skip("fla is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not path.exists():
        pytest.skip(f"this fla version has no {relative_path}")
    module_spec = importlib.util.spec_from_file_location(f"_fla_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def install_fla_interpreter_shims():
    """Let fla's Triton ops run under ``TRITON_INTERPRET=1`` (call after importing them, in a process of
    its own: it changes Triton's autotuner for everyone). Three shims: an autotuned kernel runs its first
    config without benchmarking (benchmarking needs a GPU driver); the kernels' Python ``range`` yields
    interpreter tensors, as the compiler's loop variables are (fla calls ``.to()`` on them); and
    ``gather`` imported by name from ``triton.language`` is looked up at call time, where the
    interpreter has patched it."""
    import sys

    import numpy as np
    import triton.language as tl
    from triton.runtime import autotuner, interpreter

    def first_config(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        config = self.best_config = self.configs[0]
        if config.pre_hook is not None:
            config.pre_hook({**self.nargs, **kwargs, **config.all_kwargs()})
        try:
            return self.fn.run(*args, **kwargs, **config.all_kwargs())
        finally:
            self.nargs = None

    def as_int(x):
        if isinstance(x, tl.tensor):
            return int(np.asarray(x.handle.data).reshape(-1)[0])
        return int(x.value) if isinstance(x, tl.constexpr) else int(x)

    def tensor_range(*args):
        for i in range(*(as_int(a) for a in args)):
            yield interpreter._implicit_cvt(i)

    def late_gather(src, index, axis, **kwargs):
        return tl.gather(src, index, axis)

    autotuner.Autotuner.run = first_config
    for name, module in list(sys.modules.items()):
        if name.startswith("fla.ops") and module is not None:
            module.range = tensor_range
            if getattr(module, "gather", None) is tl.gather:
                module.gather = late_gather


def run_fla_comparison(script, *args: str) -> dict:
    """Run ``script`` (a test file whose ``__main__`` prints a JSON dict of max abs differences between
    fla's Triton op and ours) with ``args`` in a child process under the Triton interpreter; return that
    dict."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("fla")
    root = Path(__file__).resolve().parents[1]
    module = ".".join(Path(script).resolve().relative_to(root).with_suffix("").parts)
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=root, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_matches_fla(script, tolerance: float, *args: str) -> None:
    """Run ``script``'s comparison (see :func:`run_fla_comparison`): every max abs difference of every case
    must be below ``tolerance``."""
    for case, diffs in run_fla_comparison(script, *args).items():
        for name, err in diffs.items():
            assert err < tolerance, f"{case} {name}: fla vs ours max abs diff {err:.2e}"


def copy_weights_and_compare(fla, ours, x, dy, rename: dict, randomise=("conv1d.weight", "o_norm.weight")):
    """Give ``ours`` fla's weights (our parameter names mapped by ``rename``, ours -> fla's), first moving
    fla's parameters whose names end in ``randomise`` away from their inits (norm weights around 1, the
    rest around 0); run both on x [B, T, d] with the output gradient dy. Returns, per tensor (the output
    ``y``, ``dx`` and ``d<fla's parameter name>``), the max difference relative to fla's largest entry."""
    import torch

    fla_params = dict(fla.named_parameters())
    with torch.no_grad():
        for name, p in fla_params.items():
            if name.endswith(randomise):
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("norm.weight") else 0.0))
        assert {rename.get(n, n) for n, _ in ours.named_parameters()} == set(fla_params)
        for name, p in ours.named_parameters():
            p.copy_(fla_params[rename.get(name, name)])
    results = []
    for module in (fla, ours):
        xi = x.clone().requires_grad_()
        y = module(xi)[0]
        (y * dy).sum().backward()
        names = rename if module is ours else {}
        grads = {f"d{names.get(n, n)}": p.grad for n, p in module.named_parameters()}
        results.append({"y": y.detach(), "dx": xi.grad, **grads})
    want, got = results
    return {n: ((want[n] - got[n]).abs().max() / want[n].abs().max()).item() for n in want}


def relative_errors_on_cuda(fla, ours, u) -> tuple[float, float]:
    """Run fla's layer and ours on u (CUDA) with the loss mean(y²); the max differences of the output and
    of the input gradient, each relative to fla's largest entry."""
    results = []
    for layer in (fla, ours):
        ui = u.clone().requires_grad_()
        y = layer(ui)[0]
        y.float().square().mean().backward()
        results.append((y.float(), ui.grad.float()))
    (y_fla, dx_fla), (y, dx) = results
    return (((y - y_fla).abs().max() / y_fla.abs().max()).item(),
            ((dx - dx_fla).abs().max() / dx_fla.abs().max()).item())
