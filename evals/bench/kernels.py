"""Kernel benchmarks: ``python -m recall_lm.evals.bench.kernels [--T 512 2048 8192] [--repeats 3]``.

Prints a markdown table and writes it to ``evals/results/bench_kernels_{cpu,cuda}.md``. Each family is a
"section": a function ``(Settings) -> list[Row]`` appended to ``SECTIONS`` (gated linear attention here;
sliding-window attention adds its own). Times are in milliseconds, the median of ``repeats`` rounds
after ``warmup`` untimed ones; "fwd+bwd" is one forward plus ``backward()`` of a random projection of the
output. Every op of a section at one T (ours, SDPA, the token loop, fla) is timed in the same rounds,
one call each in turn, so a slow spell of a shared machine falls on all of them and their ratios hold.

``OMP_WAIT_POLICY`` is left as the caller sets it, and recorded: on 2 idle cores ``PASSIVE`` (OpenMP
workers sleep between ops) made the chunked kernels ≈ 40 % slower than the default, while beside another
job the default's spinning workers can be far worse. Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from recall_lm.evals.common import ROOT, cpu_name
from recall_lm.kernels.cpu_memory import retain_freed_memory

RESULTS = ROOT / "evals" / "results"


@dataclass
class Settings:
    device: torch.device
    T: list[int]
    B: int = 4
    H: int = 4
    D: int = 64
    repeats: int = 3
    warmup: int = 1
    recurrent_T: int = 512  # the token loop is only timed at this length
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    malloc_retained: bool = False  # recall_lm.kernels.cpu_memory.retain_freed_memory took effect
    matmul_rates: str = ""  # filled by matmul_rates()


@dataclass
class Row:
    section: str
    op: str
    impl: str
    T: int
    dtype: str
    fwd_ms: float | None
    fwdbwd_ms: float | None
    note: str = ""


def timeit(fn, s: Settings) -> float:
    """Median wall time of ``fn()`` in ms."""
    sync = torch.cuda.synchronize if s.device.type == "cuda" else (lambda: None)
    for _ in range(s.warmup):
        fn()
    sync()
    times = []
    for _ in range(s.repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def matmul_rates(s: Settings) -> str:
    """The matmul rate every chunked kernel here works under: GFLOP/s of 512 batched 64×64 by 64×64
    products (the chunk shape) and of one 2048³ product, median of 5."""
    dtype = torch.bfloat16 if s.device.type == "cuda" else torch.float32
    rates = []
    for batch, n in ((512, 64), (1, 2048)):
        a, b = (torch.randn(batch, n, n, device=s.device, dtype=dtype) for _ in range(2))
        ms = timeit(lambda: a @ b, replace(s, repeats=5, warmup=2))
        shape = f"{batch} × {n}×{n}·{n}×{n}" if batch > 1 else f"{n}×{n}·{n}×{n}"
        rates.append(f"{shape} {2 * batch * n**3 / ms / 1e6:.0f} GFLOP/s")
    return f"{str(dtype).replace('torch.', '')} matmul rate: " + ", ".join(rates)


@dataclass
class Case:
    """One op to time: ``call(*make_inputs())`` returns the output first."""

    op: str
    impl: str
    make_inputs: Callable
    call: Callable
    ratio_note: bool = True  # note the backward / forward ratio


def time_cases(cases: list[Case], s: Settings, errors: list | None = None) -> list[tuple[float, float]]:
    """(forward ms under no_grad, forward+backward ms) of every case: the median of ``s.repeats`` rounds,
    each round timing every case once in turn (after ``s.warmup`` untimed rounds). With ``errors`` (a
    list), a case that raises while it is set up (e.g. out of memory) gets NaN times and its exception
    appended there (None for the others) instead of stopping the others."""
    sync = torch.cuda.synchronize if s.device.type == "cuda" else (lambda: None)
    steps = []
    for case in cases:
        try:
            steps.append(_prepare(case))
            if errors is not None:
                errors.append(None)
        except Exception as error:
            if errors is None:
                raise
            steps.append(None)
            errors.append(error)
    times = [([], []) for _ in cases]
    for round_ in range(s.warmup + s.repeats):
        for step, (fwd_ms, fb_ms) in zip(steps, times):
            for fn, out in () if step is None else zip(step, (fwd_ms, fb_ms)):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                if round_ >= s.warmup:
                    out.append((time.perf_counter() - t0) * 1e3)
    nan = float("nan")
    return [(statistics.median(f), statistics.median(b)) if f else (nan, nan) for f, b in times]


def _prepare(case: Case):
    """The (forward, forward+backward) callables of one case, each called once here."""
    inputs = case.make_inputs()
    leaves = [x.detach().requires_grad_() if x is not None and x.is_floating_point() else x for x in inputs]
    with torch.no_grad():
        do = torch.randn_like(case.call(*inputs)[0])

    def forward():
        with torch.no_grad():
            case.call(*inputs)

    def forward_backward():
        for t in leaves:
            if isinstance(t, torch.Tensor):
                t.grad = None
        case.call(*leaves)[0].backward(do)

    forward_backward()
    return forward, forward_backward


def timed_rows(section: str, T: int, dtype: str, cases: list[Case], s: Settings) -> list[Row]:
    rows = []
    for case, (fwd, fb) in zip(cases, time_cases(cases, s)):
        note = f"backward/forward {(fb - fwd) / fwd:.1f}x" if case.ratio_note else ""
        rows.append(Row(section, case.op, case.impl, T, dtype, fwd, fb, note))
    return rows


def _gla_inputs(s: Settings, T: int, gate: str | None, dtype, use_u=False):
    def make():
        B, H, D, dev = s.B, s.H, s.D, s.device
        q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dtype) for _ in range(3))
        g = None
        if gate == "head":
            g = F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dtype) / 16
        elif gate == "channel":
            g = F.logsigmoid(torch.randn(B, T, H, D, device=dev)).to(dtype) / 16
        u = torch.randn(H, D, device=dev, dtype=dtype) if use_u else None
        return q, k, v, g, u

    return make


def _sdpa_inputs(s: Settings, T: int, dtype):
    def make():
        return tuple(torch.randn(s.B, s.H, T, s.D, device=s.device, dtype=dtype) for _ in range(3))

    return make


def _sdpa(q, k, v):
    return (F.scaled_dot_product_attention(q, k, v, is_causal=True),)


GATES = {"linear attention (g=None)": None, "per-head g (RetNet)": "head", "per-channel g (GLA)": "channel"}


def gla_section(s: Settings) -> list[Row]:
    """Gated linear attention: our backends against softmax attention (SDPA) and, on CUDA, fla."""
    from recall_lm.kernels.ops import gated_linear_attention

    rows = []
    cuda = s.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    dname = str(dtype).replace("torch.", "")
    backend = "triton" if cuda else "torch"

    def ours(q, k, v, g, u):
        return gated_linear_attention(q, k, v, g, u, backend=backend)

    def recurrent(q, k, v, g, u):
        return gated_linear_attention(q, k, v, g, u, backend="recurrent")

    for T in s.T:
        cases = [Case(op, backend, _gla_inputs(s, T, gate, dtype), ours) for op, gate in GATES.items()]
        cases += [
            Case(f"Mamba-3 trapezoidal, {label}", backend, _mamba3_inputs(s, T, rank, dtype), _mamba3)
            for label, rank in (("SISO", 1), ("MIMO R=4", 4))
        ]
        if cuda:
            try:
                cases += _fla_cases(s, T, dtype, ours)
            except RuntimeError as e:  # still time ours, and say why fla's rows are missing
                rows.append(Row("gla", "fla", "unavailable", T, dname, None, None, str(e)[:80]))
        cases.append(
            Case("softmax attention (causal)", "torch SDPA", _sdpa_inputs(s, T, dtype), _sdpa, False)
        )
        if T == s.recurrent_T:
            cases.append(
                Case(
                    "per-head g (RetNet)",
                    "recurrent (token loop)",
                    _gla_inputs(s, T, "head", dtype),
                    recurrent,
                    False,
                )
            )
        rows += _note_fla_ratios(timed_rows("gla", T, dname, cases, s))
    return rows


def _mamba3_inputs(s: Settings, T: int, rank: int, dtype):
    """Mamba-3's core inputs (recall_lm.layers.mamba3.trapezoidal_scan): q, k [B, T, R, H, D] (d_state = D),
    v [B, T, R, H, D], and per-head log-decay, λ and Δ [B, T, H]."""

    def make():
        B, H, D, dev = s.B, s.H, s.D, s.device
        q, k, v = (torch.randn(B, T, rank, H, D, device=dev, dtype=dtype) for _ in range(3))
        dt = F.softplus(torch.randn(B, T, H, device=dev) - 3)
        log_alpha = -F.softplus(torch.randn(B, T, H, device=dev)) * dt
        return q, k * D**-0.5, v, log_alpha, torch.rand(B, T, H, device=dev), dt

    return make


def _mamba3(q, k, v, log_alpha, lam, dt):
    from recall_lm.layers.mamba3 import trapezoidal_scan

    return trapezoidal_scan(q, k, v, log_alpha, lam, dt)


def _fla_cases(s: Settings, T: int, dtype, ours) -> list[Case]:
    """fla's chunked Triton kernels at the same shapes (and ours with RWKV-6's bonus u, to compare)."""
    try:
        from fla.ops.gla import chunk_gla
        from fla.ops.rwkv6 import chunk_rwkv6
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as e:  # pragma: no cover - fla is a dependency
        raise RuntimeError(f"fla's ops are needed for the CUDA rows: {e!r}") from e
    rwkv6 = _gla_inputs(s, T, "channel", dtype, use_u=True)
    return [
        Case(
            "per-head g (RetNet)",
            "fla",
            _gla_inputs(s, T, "head", dtype),
            lambda q, k, v, g, u: chunk_simple_gla(q, k, v, g=g),
        ),
        Case(
            "per-channel g (GLA)",
            "fla",
            _gla_inputs(s, T, "channel", dtype),
            lambda q, k, v, g, u: chunk_gla(q, k, v, g),
        ),
        Case("per-channel g + u (RWKV-6)", "triton", rwkv6, ours),
        Case("per-channel g + u (RWKV-6)", "fla", rwkv6, lambda q, k, v, g, u: chunk_rwkv6(q, k, v, g, u)),
    ]


def _note_fla_ratios(rows: list[Row]) -> list[Row]:
    """fla rows get the ratio fla time / our (triton) time of the same op and T."""
    for r in rows:
        mine = next((m for m in rows if m.op == r.op and m.T == r.T and m.impl == "triton"), None)
        if r.impl == "fla" and mine and mine.fwd_ms and mine.fwdbwd_ms:
            r.note = (
                f"fla/ours: fwd {r.fwd_ms / mine.fwd_ms:.2f}x, fwd+bwd {r.fwdbwd_ms / mine.fwdbwd_ms:.2f}x"
            )
    return rows


def gla_summary(rows: list[Row], s: Settings) -> list[str]:
    """The CPU targets at T=2048: torch backend (per-head g) vs SDPA and vs the token recurrence."""
    lines = []
    T = 2048 if 2048 in s.T else max(s.T)

    def find(op, impl, t):
        return next((r for r in rows if r.op == op and r.impl == impl and r.T == t), None)

    impl = "torch" if s.device.type == "cpu" else "triton"
    ours = find("per-head g (RetNet)", impl, T)
    rec = find("per-head g (RetNet)", "recurrent (token loop)", s.recurrent_T)
    for op in ("per-head g (RetNet)", "per-channel g (GLA)"):
        ratios = [(t, find(op, impl, t), find("softmax attention (causal)", "torch SDPA", t)) for t in s.T]
        ratios = [
            f"T={t} forward {sdpa.fwd_ms / r.fwd_ms:.1f}x, "
            f"forward+backward {sdpa.fwdbwd_ms / r.fwdbwd_ms:.1f}x"
            for t, r, sdpa in ratios
            if r and sdpa
        ]
        if ratios:
            lines.append(f"- chunked ({impl}, {op}) vs SDPA causal: " + "; ".join(ratios))
    if ours and rec:
        factor = T / rec.T
        lines.append(
            f"- chunked ({ours.impl}, per-head g) vs the token recurrence at T={T}: forward "
            f"{rec.fwd_ms * factor / ours.fwd_ms:.0f}x faster, forward+backward "
            f"{rec.fwdbwd_ms * factor / ours.fwdbwd_ms:.0f}x (recurrence measured at T={rec.T} and "
            f"extrapolated linearly x{factor:g})"
        )
    return lines


def _delta_inputs(s: Settings, T: int, op: str, dtype):
    """Inputs of one delta-rule op: (q, k, v, beta, g) for the gated delta rule, (q, k, v, a, b, gk)
    RWKV-7-style (a = −κ̂, b = κ̂ ⊙ iclr, per-channel decay) for the DPLR rule, (q, k, v, beta, gk) for
    KDA, and for Gated DeltaProduct (q, k, v, beta, g) with two keys, values and βs per token."""
    family, gated = DELTA_OPS[op]

    def make():
        B, H, D, dev = s.B, s.H, s.D, s.device
        q = torch.randn(B, T, H, D, device=dev, dtype=dtype)
        k = F.normalize(torch.randn(B, T, H, D, device=dev, dtype=torch.float32), dim=-1).to(dtype)
        v = torch.randn(B, T, H, D, device=dev, dtype=dtype)
        if family == "dplr":
            iclr = torch.rand(B, T, H, D, device=dev, dtype=dtype)
            gk = (F.logsigmoid(torch.randn(B, T, H, D, device=dev)) / 16).to(dtype)
            return q, k * D**-0.5, v, -k, k * iclr, gk
        if family == "kda":
            gk = (F.logsigmoid(torch.randn(B, T, H, D, device=dev)) / 16).to(dtype)
            return q, k, v, torch.rand(B, T, H, device=dev, dtype=dtype), gk
        n = 2 if family == "product" else 1  # Householder steps per token
        if n > 1:
            k = F.normalize(torch.randn(B, n * T, H, D, device=dev), dim=-1).to(dtype)
            v = torch.randn(B, n * T, H, D, device=dev, dtype=dtype)
        beta = torch.rand(B, n * T, H, device=dev, dtype=dtype)
        g = (F.logsigmoid(torch.randn(B, T, H, device=dev)) / 16).to(dtype) if gated else None
        return q, k, v, beta, g

    return make


KDA_VIA_DPLR = "torch, DPLR path (a = α ⊙ k, b = −β k)"
DELTA_OPS = {
    "delta rule (DeltaNet)": ("delta", False),
    "gated delta rule (Gated DeltaNet)": ("delta", True),
    "DPLR delta rule (RWKV-7)": ("dplr", None),
    "KDA (per-channel gated delta rule)": ("kda", None),
    "Gated DeltaProduct (n_h = 2, delta rule over 2T)": ("product", True),
}


def _delta_call(op: str, backend: str):
    from recall_lm.kernels.ops import dplr_delta_rule, gated_delta_rule, kda_delta_rule

    family = DELTA_OPS[op][0]
    if family == "product":  # the layer's interleaving: gate on each token's first step, q on its last

        def product(q, k, v, beta, g):
            z = torch.zeros_like(q)
            q2 = torch.stack([z, q], 2).flatten(1, 2)
            g2 = torch.stack([g, torch.zeros_like(g)], 2).flatten(1, 2)
            o, _ = gated_delta_rule(q2, k, v, beta, g2, backend=backend)
            return o[:, 1::2], None

        return product
    fn = {"dplr": dplr_delta_rule, "kda": kda_delta_rule}.get(family, gated_delta_rule)
    return lambda *x: fn(*x, backend=backend)


def delta_section(s: Settings) -> list[Row]:
    """The delta-rule families: the chunked backend against softmax attention (SDPA), the token loop, and
    on CUDA the triton backend and fla's chunk_delta_rule / chunk_gated_delta_rule."""
    rows = []
    cuda = s.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    dname = str(dtype).replace("torch.", "")
    for T in s.T:
        cases = []
        for op, (family, gated) in DELTA_OPS.items():
            make = _delta_inputs(s, T, op, dtype)
            cases.append(Case(op, "torch", make, _delta_call(op, "torch")))
            if family == "kda":  # the same op through the general DPLR path, side by side
                cases.append(Case(op, KDA_VIA_DPLR, make, _delta_call(op, "dplr_torch")))
            if cuda:
                cases.append(Case(op, "triton", make, _delta_call(op, "triton")))
            if cuda and family != "dplr":
                try:
                    cases.append(Case(op, "fla", make, _fla_delta_call(family, gated), False))
                except RuntimeError as e:
                    rows.append(Row("delta", op, "fla unavailable", T, dname, None, None, str(e)[:80]))
            if T == s.recurrent_T:
                cases.append(Case(op, "recurrent (token loop)", make, _delta_call(op, "recurrent"), False))
        cases.append(
            Case("softmax attention (causal)", "torch SDPA", _sdpa_inputs(s, T, dtype), _sdpa, False)
        )
        rows += timed_rows("delta", T, dname, cases, s)
    return rows


def _fla_delta_call(family: str, gated: bool):
    """fla's chunked op for the same inputs: chunk_delta_rule, chunk_gated_delta_rule, chunk_kda (state
    key-major, gate given), chunk_gated_delta_product (n_h = 2)."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.gated_delta_product import chunk_gated_delta_product
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.kda import chunk_kda
    except Exception as e:  # pragma: no cover - fla is a dependency
        raise RuntimeError(f"fla's ops are needed for the CUDA rows: {e!r}") from e
    if family == "kda":
        return lambda q, k, v, beta, gk: chunk_kda(q, k, v, gk, beta)
    if family == "product":
        return lambda q, k, v, beta, g: chunk_gated_delta_product(q, k, v, g, beta, num_householder=2)
    if gated:
        return lambda q, k, v, beta, g: chunk_gated_delta_rule(q, k, v, g, beta)
    return lambda q, k, v, beta, g: chunk_delta_rule(q, k, v, beta)


def delta_summary(rows: list[Row], s: Settings) -> list[str]:
    """The CPU targets at T=2048: ≥ 3× SDPA causal, ≥ 50× the token loop, backward ≤ 2.5× the forward."""
    lines = []
    T = 2048 if 2048 in s.T else max(s.T)

    def find(op, impl, t):
        return next((r for r in rows if r.op == op and r.impl == impl and r.T == t), None)

    sdpa = find("softmax attention (causal)", "torch SDPA", T)
    for op in DELTA_OPS:
        ours, rec = find(op, "torch", T), find(op, "recurrent (token loop)", s.recurrent_T)
        if ours and sdpa:
            lines.append(
                f"- {op}, torch vs SDPA causal at T={T}: forward {sdpa.fwd_ms / ours.fwd_ms:.1f}x faster, "
                f"forward+backward {sdpa.fwdbwd_ms / ours.fwdbwd_ms:.1f}x; backward "
                f"{(ours.fwdbwd_ms - ours.fwd_ms) / ours.fwd_ms:.1f}x its forward"
            )
        if ours and rec:
            factor = T / rec.T
            lines.append(
                f"- {op}, torch vs the token recurrence at T={T}: "
                f"forward {rec.fwd_ms * factor / ours.fwd_ms:.0f}x "
                f"faster, forward+backward {rec.fwdbwd_ms * factor / ours.fwdbwd_ms:.0f}x (recurrence at "
                f"T={rec.T}, extrapolated linearly x{factor:g})"
            )
        via_dplr = [(t, find(op, "torch", t), find(op, KDA_VIA_DPLR, t)) for t in s.T]
        via_dplr = [f"T={t} forward {d.fwd_ms / r.fwd_ms:.1f}x, "
                    f"forward+backward {d.fwdbwd_ms / r.fwdbwd_ms:.1f}x" for t, r, d in via_dplr if r and d]
        if via_dplr:
            lines.append(f"- {op}, its own chunked path vs the DPLR path (same inputs, same rounds), "
                         "faster by: " + "; ".join(via_dplr))
        for t in s.T:  # CUDA only: the target is ≤ 1.0x fla's time
            triton_row, fla = find(op, "triton", t), find(op, "fla", t)
            if triton_row and fla and fla.fwd_ms:
                lines.append(
                    f"- {op}, triton vs fla at T={t}: "
                    f"forward {triton_row.fwd_ms / fla.fwd_ms:.2f}x fla's time, "
                    f"forward+backward {triton_row.fwdbwd_ms / fla.fwdbwd_ms:.2f}x"
                )
    return lines


FOX_OP = "forgetting attention (FoX)"


def _fox_inputs(s: Settings, T: int, dtype):
    def make():
        q, k, v = (torch.randn(s.B, T, s.H, s.D, device=s.device, dtype=dtype) for _ in range(3))
        return q, k, v, F.logsigmoid(torch.randn(s.B, T, s.H, device=s.device) + 3)

    return make


def fox_section(s: Settings) -> list[Row]:
    """Forgetting attention (O(T²) work like softmax attention): ours against SDPA causal and, on CUDA,
    fla's parallel_forgetting_attn."""
    from recall_lm.kernels.ops import forgetting_attention

    section, rows = "Forgetting attention", []
    cuda = s.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    dname = str(dtype).replace("torch.", "")

    def ours(backend):
        return lambda *x: (forgetting_attention(*x, backend=backend),)

    for T in s.T:
        make = _fox_inputs(s, T, dtype)
        cases = [Case(FOX_OP, "torch", make, ours("torch"))]
        if cuda:
            cases.append(Case(FOX_OP, "triton", make, ours("triton")))
            try:
                from fla.ops.forgetting_attn.parallel import parallel_forgetting_attn

                cases.append(Case(FOX_OP, "fla", make, lambda *x: (parallel_forgetting_attn(*x),), False))
            except ImportError as e:
                rows.append(Row(section, FOX_OP, "fla unavailable", T, dname, None, None, str(e)[:80]))
        sdpa = _sdpa_inputs(s, T, dtype)
        cases.append(Case("softmax attention (causal)", "torch SDPA", sdpa, _sdpa, False))
        rows += timed_rows(section, T, dname, cases, s)
    return rows


def fox_summary(rows: list[Row], s: Settings) -> list[str]:
    """Our forgetting attention against SDPA causal (the same O(T²) work without the gate) at each T."""
    impl = "torch" if s.device.type == "cpu" else "triton"
    lines = []
    for t in s.T:
        found = {r.impl: r for r in rows if r.T == t and r.section == "Forgetting attention"}
        ours, sdpa, fla = found.get(impl), found.get("torch SDPA"), found.get("fla")
        if ours and sdpa:
            lines.append(f"- {FOX_OP}, {impl} at T={t}: forward {ours.fwd_ms / sdpa.fwd_ms:.1f}x SDPA "
                         f"causal's time, forward+backward {ours.fwdbwd_ms / sdpa.fwdbwd_ms:.1f}x"
                         + (f"; {ours.fwdbwd_ms / fla.fwdbwd_ms:.2f}x fla's forward+backward" if fla else ""))
    return lines

LOG_LINEAR_OP = "log-linear attention (Mamba-2 form)"


def log_linear_section(s: Settings) -> list[Row]:
    """Log-linear attention (O(T log T) work) against SDPA causal and the plain gated linear attention it
    generalises (one level); on CUDA our Triton kernels and fla's chunk_log_linear_attn beside it."""
    from recall_lm.kernels.log_linear import num_levels
    from recall_lm.kernels.ops import gated_linear_attention, log_linear_attention

    section, rows = "Log-linear attention", []
    cuda = s.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    dname = str(dtype).replace("torch.", "")
    for T in s.T:
        def make(T=T):
            q, k, v = (torch.randn(s.B, T, s.H, s.D, device=s.device, dtype=dtype) for _ in range(3))
            g = F.logsigmoid(torch.randn(s.B, T, s.H, device=s.device)) / 16
            lam = torch.rand(s.B, T, s.H, num_levels(T), device=s.device)
            return q, k, v, g, lam

        cases = [Case(LOG_LINEAR_OP, "torch", make, lambda *x: log_linear_attention(*x, backend="torch"))]
        if cuda:
            triton_op = lambda *x: log_linear_attention(*x, backend="triton")  # noqa: E731
            cases.append(Case(LOG_LINEAR_OP, "triton", make, triton_op))
            try:
                from fla.ops.log_linear_attn import chunk_log_linear_attn

                cases.append(Case(LOG_LINEAR_OP, "fla", make, lambda *x: chunk_log_linear_attn(*x), False))
            except ImportError as e:
                rows.append(Row(section, LOG_LINEAR_OP, "fla unavailable", T, dname, None, None, str(e)[:80]))
        cases.append(Case("gated linear attention (per-head g)", "torch", make,
                          lambda q, k, v, g, lam: gated_linear_attention(q, k, v, g, backend="torch"), False))
        sdpa = _sdpa_inputs(s, T, dtype)
        cases.append(Case("softmax attention (causal)", "torch SDPA", sdpa, _sdpa, False))
        rows += timed_rows(section, T, dname, cases, s)
    return rows


def log_linear_summary(rows: list[Row], s: Settings) -> list[str]:
    impl = "torch" if s.device.type == "cpu" else "triton"
    lines = []
    for t in s.T:
        found = {(r.op, r.impl): r for r in rows if r.T == t and r.section == "Log-linear attention"}
        ours, fla = found.get((LOG_LINEAR_OP, impl)), found.get((LOG_LINEAR_OP, "fla"))
        sdpa = found.get(("softmax attention (causal)", "torch SDPA"))
        gla = found.get(("gated linear attention (per-head g)", "torch"))
        if ours and sdpa and gla:
            lines.append(f"- {LOG_LINEAR_OP}, {impl} at T={t}: forward+backward "
                         f"{ours.fwdbwd_ms / sdpa.fwdbwd_ms:.1f}x SDPA causal's time, "
                         f"{ours.fwdbwd_ms / gla.fwdbwd_ms:.1f}x the one-level gated linear attention's"
                         + (f"; {ours.fwdbwd_ms / fla.fwdbwd_ms:.2f}x fla's forward+backward"
                            if fla and fla.fwdbwd_ms else ""))
    return lines


# Each section: (name, run(settings) -> rows, summary(rows, settings) -> lines). Sliding-window attention
# has its own command, `python -m recall_lm.evals.bench.swa` (both run in `make bench`).
SECTIONS = [
    ("Gated linear attention", gla_section, gla_summary),
    ("Delta rules", delta_section, delta_summary),
    ("Forgetting attention", fox_section, fox_summary),
    ("Log-linear attention", log_linear_section, log_linear_summary),
]


def _cpu_model() -> str:
    return cpu_name()


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def to_markdown(rows: list[Row], s: Settings, sections_run, started: float, command: str = "") -> str:
    dev = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else _cpu_model()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = [
        "# Kernel benchmarks",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `{command}`" if command else "",
        f"- torch {torch.__version__}, device: {s.device.type} ({dev}), threads: {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, malloc: "
        + (
            "freed blocks retained (recall_lm.kernels.cpu_memory)"
            if s.malloc_retained
            else "the C library's defaults"
        ),
        f"- shapes: B={s.B} H={s.H} D(head)={s.D}; T in {s.T}; "
        f"median of {s.repeats} after {s.warmup} warm-up; "
        f"chunk size 64; the token recurrence only at T={s.recurrent_T}",
        f"- {s.matmul_rates}" if s.matmul_rates else "",
        f"- load average at the end (other jobs share this machine): {load[0]:.1f}" if load else "",
        f"- wall time of the whole benchmark: {time.time() - started:.0f} s",
        "",
    ]
    for name, _, summary in sections_run:
        section_rows = [r for r in rows if r.section == name]
        if not section_rows:
            continue
        out += [
            f"## {name}",
            "",
            "| op | implementation | T | dtype | forward (ms) | forward+backward (ms) | note |",
            "|---|---|---:|---|---:|---:|---|",
        ]
        for r in section_rows:
            out.append(
                f"| {r.op} | {r.impl} | {r.T} | {r.dtype} | {_fmt(r.fwd_ms)} | {_fmt(r.fwdbwd_ms)} | "
                f"{r.note} |"
            )
        out += [""] + summary(section_rows, s) + [""]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--B", type=int, default=4, help="batch size (fla's README benchmarks: 8)")
    parser.add_argument("--H", type=int, default=4, help="heads (fla's README benchmarks: 32)")
    parser.add_argument("--D", type=int, default=64, help="head width (fla's README benchmarks: 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--sections",
        nargs="*",
        default=None,
        metavar="NAME",
        help="sections to run (default: all): " + ", ".join(repr(name) for name, *_ in SECTIONS),
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("B", "H", "D", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.warmup < 0 or min(args.T) < 1:
        parser.error(f"--warmup must be ≥ 0 and every --T ≥ 1, got {args.warmup} and {args.T}")
    unknown = sorted(set(args.sections or ()) - {name for name, *_ in SECTIONS})
    if unknown:
        parser.error(f"unknown --sections {unknown}; known: {[name for name, *_ in SECTIONS]}")

    s = Settings(
        device=torch.device(args.device),
        T=args.T,
        B=args.B,
        H=args.H,
        D=args.D,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    torch.set_num_threads(s.threads)
    s.malloc_retained = retain_freed_memory()
    s.matmul_rates = matmul_rates(s)
    started = time.time()
    chosen = [sec for sec in SECTIONS if args.sections is None or sec[0] in args.sections]
    rows = []
    for name, run, _ in chosen:
        for r in run(s):
            r.section = name
            rows.append(r)
            print(
                f"{name} | {r.op} | {r.impl} | T={r.T} | fwd {_fmt(r.fwd_ms)} ms | "
                f"fwd+bwd {_fmt(r.fwdbwd_ms)} ms",
                flush=True,
            )
    args_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = to_markdown(
        rows, s, chosen, started, f"python -m recall_lm.evals.bench.kernels {args_text}".strip()
    )
    print(text)
    out = args.out or RESULTS / f"bench_kernels_{s.device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
