"""Inference throughput and memory of softmax attention vs recurrent and hybrid language models.

Why: the point of the fixed-state mixers is cheap decoding. This measures, for models of
comparable parameter count (every model's SwiGLU / channel-mix width is solved so its total matches
the attention model's), at each context length and batch size:

* prefill tokens/s: one chunked forward over a [B, L] prompt (``model(ids, state)``);
* decode tokens/s: B·N / time of N greedy single-token steps after a prefill of L tokens
  (``model(next_ids [B, 1], state)``, argmax fed back), after ``--warmup-tokens`` untimed steps;
* ``--compile``: the same, with the single-token step through ``torch.compile`` (compiled during the
  warm-up steps), which removes most of eager PyTorch's per-operator overhead;
* the memory-bandwidth floor of a decode step: every parameter and every sequence's state (KV cache,
  ring buffer or recurrent memory) is read at least once per step, so a step takes at least
  (parameter bytes + B · state bytes) / the machine's read bandwidth (measured at the start: the
  median time of ``sum`` over a 256 MiB tensor with the same thread count). At small d_model this,
  not the FLOPs, bounds decoding, and it bounds the speed-up over attention too: a recurrent model
  can decode at most (parameters + KV cache) / (parameters + its state) times faster;
* state memory: ``DecoderLM.state_bytes(L, dtype)`` per sequence (KV cache / ring buffer /
  recurrent memories; tested equal to the tensors held), and the measured peak memory of the decode
  loop above the memory in use before the state was built (CPU: peak RSS via /proc/self/status
  VmHWM, reset through /proc/self/clear_refs after ``malloc_trim``; CUDA: max_memory_allocated).

Prefill at batch B is timed only when B·L ≤ ``--max-prefill-tokens``; for larger B·L the decode
state is the B=1 prefill's state replicated B times, which is exactly the state a batch of B
identical prompts would reach (the decode itself is then a real batched decode). Writes
``<out>/<name>.csv``, ``.md`` (settings, machine, load, command, pivot tables, ratios to attention)
and ``.png`` (decode tokens/s per batch size and state memory vs context length, log-x).

CPU default (6.4 min of CPU time on one core, 13 min wall on a loaded machine):
                                            python -m recall_lm.evals.bench.throughput
Quick smoke run (seconds):                  python -m recall_lm.evals.bench.throughput --quick
BASED-paper-style GPU setting:               python -m recall_lm.evals.bench.throughput --preset based-gpu
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import datetime
import gc
import math
import os
import re
import resource
import shlex
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from recall_lm.evals.common import ROOT, cpu_name
from recall_lm.kernels.cpu_memory import retain_freed_memory
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from recall_lm.models.generation import decode_step
from recall_lm.models.state import ModelState

RESULTS_DIR = ROOT / "evals" / "results"
MODELS = ("attention", "swa", "fox", "linear_attention", "based", "retnet", "rwkv6", "rwkv7", "mamba2",
          "loglinear_mamba2", "mamba3", "deltanet", "gated_deltanet", "gated_deltaproduct", "kda", "mom",
          "based+attention")
COLUMNS = (
    "model",
    "mixers",
    "params",
    "d_model",
    "n_layers",
    "vocab_size",
    "device",
    "dtype",
    "batch",
    "context",
    "new_tokens",
    "prefill_tok_s",
    "prefill_peak_mb",
    "decode_tok_s",
    "decode_ms_per_step",
    "state_bytes_per_seq",
    "state_mb",
    "decode_peak_mb",
    "floor_ms_per_step",
    "of_floor",
    "note",
)

PRESETS = {
    # CPU: small models, where per-token framework overhead is large; 512 → 16k context.
    "cpu": dict(models=list(MODELS), contexts=[512, 1024, 2048, 4096, 8192, 16384], batch_sizes=[1, 8],
                d_model=256, n_layers=4, vocab_size=256, new_tokens=16, warmup_tokens=2, dtype="float32",
                max_prefill_tokens=8192, device="cpu"),
    # Seconds, for tests and smoke runs.
    "quick": dict(models=list(MODELS), contexts=[32, 64, 128], batch_sizes=[1, 2], d_model=64, n_layers=2,
                  vocab_size=64, new_tokens=4, warmup_tokens=1, dtype="float32", max_prefill_tokens=256,
                  device="cpu"),
    # BASED (Arora et al., 2024, Fig. 4): 1.3B-parameter models, 1024 generated tokens, batch sizes up to 128.
    # Scaled to fit one GPU: d_model 2048 × 24 layers (≈1.3B with the GPT-NeoX vocabulary), bf16.
    "based-gpu": dict(models=["attention", "based"], contexts=[1024, 4096], batch_sizes=[1, 8, 32, 64],
                      d_model=2048, n_layers=24, vocab_size=50277, new_tokens=1024, warmup_tokens=8,
                      dtype="bfloat16", max_prefill_tokens=16384, device="cuda"),
}


# --------------------------------------------------------------------------------------------- models
def model_config(
    name: str, d_model: int, n_layers: int, vocab_size: int, mlp_hidden: int | None = None
) -> ModelConfig:
    """The benchmark's ModelConfig for ``name`` (heads of dimension 64, as the papers' models)."""
    heads = max(1, d_model // 64)
    head_size = d_model // heads
    kwargs = {
        "attention": dict(mixer="attention", mixer_kwargs={"attention": {"num_heads": heads}}),
        "swa": dict(mixer="swa", mixer_kwargs={"swa": {"num_heads": heads, "window_size": 256}}),
        "linear_attention": dict(
            mixer="linear_attention",
            mixer_kwargs={"linear_attention": {"num_heads": heads, "feature_map": "elu"}},
        ),
        # configs/lm/based-tiny.yaml's layer mix: base_conv, based, swa (window 64), base_conv, base_conv.
        "based": dict(
            mixer=["base_conv", "based", "swa", "base_conv", "base_conv"],
            mixer_kwargs={
                "base_conv": {"kernel_size": 3, "expand": 4},
                "based": {"num_heads": heads, "feature_dim": 16},
                "swa": {"num_heads": heads, "window_size": 64},
            },
        ),
        "fox": dict(mixer="fox", mixer_kwargs={"fox": {"num_heads": heads}}),
        "retnet": dict(mixer="retnet", mixer_kwargs={"retnet": {"num_heads": heads}}),
        "rwkv6": dict(mixer="rwkv6", mixer_kwargs={"rwkv6": {"head_size": head_size}}, mlp="rwkv6_cmix"),
        "rwkv7": dict(mixer="rwkv7", mixer_kwargs={"rwkv7": {"head_size": head_size}}, mlp="rwkv7_cmix"),
        "mamba2": dict(mixer="mamba2", mixer_kwargs={"mamba2": {"d_state": 64, "head_dim": 64}}),
        "deltanet": dict(mixer="deltanet", mixer_kwargs={"deltanet": {"num_heads": heads}}),
        "gated_deltanet": dict(mixer="gated_deltanet", mixer_kwargs={"gated_deltanet": {"num_heads": heads}}),
        "gated_deltaproduct": dict(
            mixer="gated_deltaproduct", mixer_kwargs={"gated_deltaproduct": {"num_heads": heads}}
        ),
        "kda": dict(mixer="kda", mixer_kwargs={"kda": {"num_heads": heads}}),
        "mamba3": dict(mixer="mamba3", mixer_kwargs={"mamba3": {"d_state": 64, "head_dim": 64}}),
        # 20 levels: contexts up to 2^19 tokens (the layer's default 15 stops at 16,384)
        "loglinear_mamba2": dict(mixer="loglinear_mamba2", mixer_kwargs={
            "loglinear_mamba2": {"d_state": 64, "head_dim": 64, "num_levels": 20}}),
        "mom": dict(mixer="mom", mixer_kwargs={"mom": {"num_heads": heads}}),
        # Half BASED layers, half softmax attention: a KV cache on every other layer.
        "based+attention": dict(
            mixer=["based", "attention"],
            mixer_kwargs={
                "based": {"num_heads": heads, "feature_dim": 16},
                "attention": {"num_heads": heads},
            },
        ),
    }
    if name not in kwargs:
        raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(kwargs)}")
    spec = kwargs[name]
    mlp_kwargs = {} if mlp_hidden is None else {"hidden_size": int(mlp_hidden)}
    return ModelConfig(
        vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mlp_kwargs=mlp_kwargs, **spec
    )


def count_parameters(config: ModelConfig) -> int:
    # Large models are built on the meta device (no memory, no initialisation); small ones on the CPU,
    # because the first meta-device initialisation imports torch._dynamo (seconds).
    rough = 16 * config.d_model**2 * config.n_layers + config.vocab_size * config.d_model
    with torch.device("meta" if rough > 5e7 else "cpu"):
        return DecoderLM(config).num_parameters()


def matched_config(
    name: str, d_model: int, n_layers: int, vocab_size: int, target: int | None
) -> ModelConfig:
    """``name``'s config with the MLP width (multiple of 32, ≥ 32) whose parameter count is nearest
    ``target``.

    Parameters are affine in the MLP width, so two counts give the slope. Mixers larger than the
    target on their own (MoM) end at the smallest width and stay above it; the table prints counts.
    """
    if target is None:
        return model_config(name, d_model, n_layers, vocab_size)
    lo, hi = count_parameters(model_config(name, d_model, n_layers, vocab_size, 32)), \
        count_parameters(model_config(name, d_model, n_layers, vocab_size, 64))
    width = 32 + (target - lo) * 32 / (hi - lo)
    width = max(32, 32 * round(width / 32))
    return model_config(name, d_model, n_layers, vocab_size, width)


def build(config: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> DecoderLM:
    torch.manual_seed(seed)
    with torch.device(device):
        model = DecoderLM(config)
    return model.to(dtype).eval()


def repeat_state(state: ModelState, batch_size: int) -> ModelState:
    """A batch-1 ModelState repeated ``batch_size`` times (every state tensor has the batch first)."""

    def rep(s):
        if s is None:
            return None
        tensors = {f.name: getattr(s, f.name) for f in fields(s) if torch.is_tensor(getattr(s, f.name))}
        return replace(s, **{k: t.expand(batch_size, *t.shape[1:]).contiguous() for k, t in tensors.items()})

    return ModelState([rep(s) for s in state.mixers], [rep(s) for s in state.mlps])


# --------------------------------------------------------------------------------------------- memory
class MemoryMeter:
    """Peak memory added by a block of work: CUDA allocator statistics, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.available = device.type == "cuda" or self._can_reset_rss()
        self.base = 0

    @staticmethod
    def _can_reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return MemoryMeter._status_kb("VmHWM") is not None
        except OSError:
            return False

    @staticmethod
    def _status_kb(field: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def start(self) -> None:
        """Free what can be freed, then remember the memory in use and reset the peak."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        if not self.available:
            return
        try:  # give freed heap pages back to the OS so the baseline RSS is what is really in use
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        self.base = self._status_kb("VmRSS") * 1024

    def peak_mb(self) -> float:
        """Peak bytes above the baseline since ``start``, in MiB (NaN where it cannot be measured)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if not self.available:
            return math.nan
        return (self._status_kb("VmHWM") * 1024 - self.base) / 2**20


# --------------------------------------------------------------------------------------------- timing
def read_bandwidth(device: torch.device, mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second that ``sum`` reads from a ``mib`` MiB fp32 tensor (median of ``repeats``), with
    the current thread count: the rate at which a decode step can stream its weights and states."""
    x = torch.ones(mib * 2**20 // 4, device=device)
    x.sum()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        x.sum()
        _sync(device)
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / sorted(times)[len(times) // 2]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode(step, state: ModelState, logits: torch.Tensor, steps: int):
    """``steps`` greedy single-token steps from ``logits`` [B, V] and ``state`` through ``step``
    (``recall_lm.models.generation.decode_step``); returns (logits, state)."""
    for _ in range(steps):
        logits, state = step(logits.argmax(-1, keepdim=True), state)
    return logits, state


def prefill(model: DecoderLM, ids: torch.Tensor, dtype: torch.dtype):
    """ids [B, L] -> (last logits [B, V], state, seconds)."""
    _sync(ids.device)
    start = time.perf_counter()
    out = model(ids, model.init_state(ids.shape[0], ids.device, dtype))
    _sync(ids.device)
    return out.logits[:, -1], out.state, time.perf_counter() - start


def measure_model(name: str, config: ModelConfig, params: int, args, device, dtype) -> list[dict]:
    """Every (context, batch) point of one model; prints a line per point.

    Per context L: one batch-1 prefill (timed: the B=1 prefill throughput) whose state seeds every
    batch size's decode; batches with B·L ≤ max_prefill_tokens also get their own timed prefill.
    The decode state is a fresh copy made inside the memory window, so ``decode_peak_mb`` counts
    the state itself plus what decoding allocates on top (e.g. the KV cache's growth and copies);
    a warm-up on another copy comes first, so compiling stays outside it.
    """
    model = build(config, device, dtype)
    if args.compile:
        # a fresh compile cache per model: its recompiles (shapes) count against it alone
        torch._dynamo.reset()
    step = decode_step(model, args.compile)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    meter = MemoryMeter(device)
    generator = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        warm_ids = torch.randint(
            0, config.vocab_size, (1, min(128, args.contexts[0])), generator=generator
        ).to(device)
        logits, state, _ = prefill(model, warm_ids, dtype)  # first calls: allocator, kernels, caches
        decode(step, state, logits, max(2, args.warmup_tokens))
        del logits, state
        for L in args.contexts:
            ids = torch.randint(0, config.vocab_size, (max(args.batch_sizes), L), generator=generator).to(
                device
            )
            one = None
            for B in args.batch_sizes:
                row = dict(model=name, mixers="+".join(config.layer_mixers()), params=params,
                           d_model=config.d_model, n_layers=config.n_layers, vocab_size=config.vocab_size,
                           device=device.type, dtype=str(dtype).replace("torch.", ""), batch=B, context=L,
                           new_tokens=args.new_tokens, prefill_tok_s="", prefill_peak_mb="", decode_tok_s="",
                           decode_ms_per_step="", state_bytes_per_seq=model.state_bytes(L, dtype),
                           decode_peak_mb="", floor_ms_per_step="", of_floor="", note="")
                row["floor_ms_per_step"] = (
                    1e3 * (param_bytes + B * row["state_bytes_per_seq"]) / args.bandwidth
                )
                row["state_mb"] = B * row["state_bytes_per_seq"] / 2**20
                try:
                    if one is None:
                        meter.start()
                        logits, state, seconds = prefill(model, ids[:1], dtype)
                        one = (logits, state, L / seconds, meter.peak_mb())
                        del logits, state
                    if B == 1:
                        row["prefill_tok_s"], row["prefill_peak_mb"] = one[2], one[3]
                    elif B * L <= args.max_prefill_tokens:
                        meter.start()
                        out = prefill(model, ids[:B], dtype)
                        row["prefill_tok_s"], row["prefill_peak_mb"] = B * L / out[2], meter.peak_mb()
                        del out
                    # warm-up on a throwaway copy first, so that compiling for this batch and state
                    # layout (torch.compile) stays out of the measured memory
                    decode(
                        step, repeat_state(one[1], B), one[0].expand(B, -1).contiguous(), args.warmup_tokens
                    )
                    meter.start()
                    logits, state = one[0].expand(B, -1).contiguous(), repeat_state(one[1], B)
                    logits, state = decode(step, state, logits, args.warmup_tokens)
                    rounds = []
                    for _ in range(args.repeats):  # the median round: this machine's noise is not the model's
                        _sync(device)
                        start = time.perf_counter()
                        logits, state = decode(step, state, logits, args.new_tokens)
                        _sync(device)
                        rounds.append(time.perf_counter() - start)
                    seconds = sorted(rounds)[len(rounds) // 2]
                    row["decode_peak_mb"] = meter.peak_mb()
                    row["decode_tok_s"] = B * args.new_tokens / seconds
                    row["decode_ms_per_step"] = 1e3 * seconds / args.new_tokens
                    row["of_floor"] = row["floor_ms_per_step"] / row["decode_ms_per_step"]
                    del logits, state
                except torch.cuda.OutOfMemoryError:
                    row["note"] = "out of memory"
                    logits = state = out = None  # noqa: F841  (frees what did not fit before the next row)
                rows.append(row)
                print(_line(row), flush=True)
            del one
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def median_pass(passes: list[list[dict]]) -> list[dict]:
    """One row per (model, context, batch) point: the pass whose decode tokens/s is the median of that
    point's passes (its prefill and memory figures come with it), in the first pass's order; with more
    than one pass the note gives the range over passes."""
    if len(passes) == 1:
        return passes[0]
    by_point: dict[tuple, list[dict]] = {}
    for rows in passes:
        for row in rows:
            by_point.setdefault((row["model"], row["context"], row["batch"]), []).append(row)
    out = []
    for row in passes[0]:
        runs = by_point[(row["model"], row["context"], row["batch"])]
        timed = sorted((r for r in runs if r["decode_tok_s"] != ""), key=lambda r: r["decode_tok_s"])
        if not timed:
            out.append(runs[0])
            continue
        pick = dict(timed[(len(timed) - 1) // 2])
        spread = (
            f"median of {len(timed)} passes: "
            f"{timed[0]['decode_tok_s']:,.0f}–{timed[-1]['decode_tok_s']:,.0f} tok/s"
        )
        pick["note"] = "; ".join(x for x in (pick["note"], spread) if x)
        out.append(pick)
    return out


def _pass_range(note: str) -> str:
    """'a–b' from a note written by :func:`median_pass` (empty if there is none)."""
    found = re.search(r"passes: ([\d,]+–[\d,]+) tok/s", note)
    return found.group(1) if found else ""


def _fmt(x, digits=1):
    if x == "" or x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _line(row: dict) -> str:
    return (
        f"{row['model']:>16} B={row['batch']:<3} L={row['context']:<6} "
        f"prefill {_fmt(row['prefill_tok_s'], 0):>9} tok/s"
        f"  decode {_fmt(row.get('decode_tok_s', ''), 0):>8} tok/s  "
        f"state {row['state_bytes_per_seq'] / 2**20:8.3f} MiB/seq"
        f"  decode peak {_fmt(row.get('decode_peak_mb', ''))} MiB  {row['note']}"
    )


# --------------------------------------------------------------------------------------------- reports
def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {os.cpu_count()} logical cores visible"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _pivot(rows, models, contexts, value, batch=None) -> list[str]:
    """A markdown table: one row per model, one column per context length."""
    lines = ["| model | " + " | ".join(f"{L:,}" for L in contexts) + " |", "|---|" + "---:|" * len(contexts)]
    for m in models:
        cells = []
        for L in contexts:
            match = [
                r
                for r in rows
                if r["model"] == m and r["context"] == L and (batch is None or r["batch"] == batch)
            ]
            cells.append(value(match[0]) if match else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _num(x) -> float:
    return x if isinstance(x, (int, float)) and x != "" else math.nan


def summary_lines(rows: list[dict], models: list[str], contexts: list[int], batches: list[int]) -> list[str]:
    """Ratios to attention at the context nearest 4k, and whether each model's state is flat in L."""
    lines = []
    if "attention" in models and len(models) > 1:  # ratios need attention and something to compare with it
        L = min(contexts, key=lambda c: abs(math.log(c / 4096)))
        for B in batches:
            ref = [r for r in rows if r["model"] == "attention" and r["batch"] == B and r["context"] == L]
            ref_tps = _num(ref[0]["decode_tok_s"]) if ref else math.nan
            ref_floor = _num(ref[0]["floor_ms_per_step"]) if ref else math.nan
            ratios, bounds = [], []
            for m in models:
                if m == "attention":
                    continue
                r = [r for r in rows if r["model"] == m and r["batch"] == B and r["context"] == L]
                ratio = _num(r[0]["decode_tok_s"]) / ref_tps if r else math.nan
                ratios.append(f"{m} {ratio:.1f}×" + (" ✓" if ratio >= 10 else ""))
                bounds.append(f"{m} {ref_floor / _num(r[0]['floor_ms_per_step']) if r else math.nan:.1f}×")
            lines.append(
                f"- decode tokens/s relative to attention (KV cache) at L={L:,}, B={B}: "
                + ", ".join(ratios)
                + "  (✓ = the issue's ≥ 10× target)"
            )
            lines.append(
                f"- the most the bytes allow at L={L:,}, B={B} (attention's floor / the model's floor): "
                + ", ".join(bounds)
            )
    measured = sorted({r["context"] for r in rows})
    if len(measured) < 2:  # one context length says nothing about how the state scales with it
        at = f" (L={measured[0]:,})" if measured else ""
        lines.append(f"- state memory per sequence measured at one context length only{at}: "
                     "run two or more --contexts to see which states grow")
        return lines
    flat = [m for m in models if len({r["state_bytes_per_seq"] for r in rows if r["model"] == m}) == 1]
    growing = [m for m in models if m not in flat]
    lines.append(f"- state memory per sequence constant in context length: {', '.join(flat) or 'none'}; "
                 f"growing (KV caches): {', '.join(growing) or 'none'}")
    return lines


def write_markdown(rows, meta: dict, params: dict, args, path: Path) -> None:
    models = [m for m in args.models if any(r["model"] == m for r in rows)]
    ctx, batches = args.contexts, args.batch_sizes
    lines = [
        f"# Inference throughput and memory ({meta['device']}, {meta['dtype']})",
        "",
        f"- date: {meta['date']}; machine: {meta['machine']}; torch {meta['torch']}, "
        f"{meta['threads']} intra-op thread(s); "
        f"malloc: {meta.get('malloc', 'not recorded')}",
        f"- load average (1 min) at start {meta['load_start']}, at end {meta['load_end']}; "
        f"wall time {meta['wall_s']:.0f} s, "
        f"of which this process ran on a CPU {meta['cpu_s']:.0f} s (the rest: waiting for a core)",
        f"- command: `{meta['command']}`",
        f"- read bandwidth (``sum`` over 256 MiB, {meta['threads']} thread(s)): "
        f"{meta['bandwidth_gbs']:.1f} GB/s",
        f"- settings: d_model {args.d_model}, {args.n_layers} layers, "
        f"vocabulary {args.vocab_size}, {args.dtype}; "
        f"contexts {ctx}; batch sizes {batches}; "
        f"{args.new_tokens} timed decode steps after {args.warmup_tokens} "
        f"untimed ones (median of {args.repeats} round(s); "
        f"median of {args.passes} pass(es) over the models in "
        f"alternating order); prefill timed at B·L ≤ {args.max_prefill_tokens:,}; MLP widths solved to match "
        f"attention's parameter count",
        f"- decode step: {'torch.compile (inductor) of the single-token step, compiled in the warm-up' if args.compile else 'eager PyTorch'}; "  # noqa: E501
        "the KV cache grows in place (buffers doubled when full)",
        "- decode tok/s = B × steps / time of the greedy single-token loop (torch.inference_mode), after a "
        "prefill of L tokens (the batch-1 prefill's state replicated over the batch); state = "
        "`DecoderLM.state_bytes(L)` per sequence; decode peak = measured peak memory of the decode loop "
        "above what was in use before its state was copied in, after a warm-up on another copy (compiling "
        "excluded; CPU: peak RSS, VmHWM; CUDA: max_memory_allocated)",
        "",
        "## Models",
        "",
        "| model | layers | parameters | MLP width |",
        "|---|---|---:|---:|",
    ]
    for m in models:
        lines.append(f"| {m} | {params[m]['mixers']} | {params[m]['params']:,} | {params[m]['mlp_width']} |")
    lines += ["", "## Summary", ""] + summary_lines(rows, models, ctx, batches)
    for B in batches:
        lines += ["", f"## Decode tokens/s, batch {B}", ""]
        lines += _pivot(
            rows,
            models,
            ctx,
            lambda r: _fmt(r["decode_tok_s"], 0) if r["decode_tok_s"] != "" else r["note"] or "–",
            B,
        )
    if args.passes > 1:
        for B in batches:
            lines += ["", f"## Decode tokens/s, batch {B}: the range over the {args.passes} passes", ""]
            lines += _pivot(rows, models, ctx, lambda r: _pass_range(r["note"]) or "–", B)
    if "attention" in models:
        for B in batches:
            ref = {
                r["context"]: _num(r["decode_tok_s"])
                for r in rows
                if r["model"] == "attention" and r["batch"] == B
            }
            lines += ["", f"## Decode speed-up over attention, batch {B}", ""]
            lines += _pivot(
                rows,
                models,
                ctx,
                lambda r: f"{_num(r['decode_tok_s']) / ref.get(r['context'], math.nan):.1f}×",
                B,
            )
    for B in batches:
        lines += [
            "",
            f"## Share of the memory-bandwidth floor reached (floor ms / measured ms per step), batch {B}",
            "",
        ]
        lines += _pivot(
            rows,
            models,
            ctx,
            lambda r: f"{100 * _num(r['of_floor']):.0f} % of {_fmt(r['floor_ms_per_step'], 2)} ms",
            B,
        )
    lines += ["", "## State per sequence (MiB)", ""]
    lines += _pivot(rows, models, ctx, lambda r: f"{r['state_bytes_per_seq'] / 2**20:.3f}", batches[0])
    for B in batches:
        lines += [
            "",
            f"## Measured decode peak memory (MiB), batch {B} (state for the batch: MiB in brackets)",
            "",
        ]
        lines += _pivot(rows, models, ctx, lambda r: f"{_fmt(r['decode_peak_mb'])} ({r['state_mb']:.1f})", B)
    for B in batches:
        if any(r["prefill_tok_s"] != "" for r in rows if r["batch"] == B):
            lines += ["", f"## Prefill tokens/s, batch {B}", ""]
            lines += _pivot(rows, models, ctx, lambda r: _fmt(r["prefill_tok_s"], 0), B)
    lines += [
        "",
        f"Full data: `{path.with_suffix('.csv').name}`; plot: `{path.with_suffix('.png').name}`.",
        "",
    ]
    path.write_text("\n".join(lines))


def _context_ticks(ax, contexts) -> None:
    ax.set_xticks(contexts, [f"{c // 1024}k" if c >= 1024 and c % 1024 == 0 else str(c) for c in contexts])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.grid(True, which="major", alpha=0.3)


def write_plot(rows, args, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, faster import

    models = [m for m in args.models if any(r["model"] == m for r in rows)]
    panels = len(args.batch_sizes) + 1
    fig = Figure(figsize=(5 * panels, 4.2))
    axes = fig.subplots(1, panels, squeeze=False)
    for ax, B in zip(axes[0], args.batch_sizes):
        for m in models:
            pts = [
                (r["context"], _num(r["decode_tok_s"])) for r in rows if r["model"] == m and r["batch"] == B
            ]
            pts = [(x, y) for x, y in pts if not math.isnan(y)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set(xscale="log", yscale="log", xlabel="context length (tokens)", ylabel="decode tokens/s",
               title=f"decode throughput, batch {B}")
        _context_ticks(ax, args.contexts)
    ax = axes[0][-1]
    for m in models:
        pts = [
            (r["context"], r["state_bytes_per_seq"] / 2**20)
            for r in rows
            if r["model"] == m and r["batch"] == args.batch_sizes[0]
        ]
        ax.plot(*zip(*pts), marker="o", label=m)
    ax.set(xscale="log", yscale="log", xlabel="context length (tokens)", ylabel="MiB per sequence",
           title="decoding state (KV cache / memories)")
    _context_ticks(ax, args.contexts)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(
        left=0.06, right=0.99, bottom=0.13, top=0.84, wspace=0.25
    )  # tight_layout costs seconds
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------- CLI
def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(
        prog="python -m recall_lm.evals.bench.throughput",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="defaults for every setting below (cpu unless --device cuda or --quick)")
    p.add_argument(
        "--quick", action="store_true", help="= --preset quick: tiny sizes, seconds (tests, smoke runs)"
    )
    p.add_argument(
        "--models", type=lambda s: [m for m in s.replace(",", " ").split()], help=f"from {', '.join(MODELS)}"
    )
    p.add_argument("--contexts", type=_ints, help="context (prefill) lengths, e.g. 512,1024,4096")
    p.add_argument("--batch-sizes", type=_ints)
    p.add_argument("--new-tokens", type=int, help="timed decode steps")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed rounds of --new-tokens decode steps each; the median round is reported")
    p.add_argument(
        "--passes",
        type=int,
        default=1,
        help="measure every model this many times, in alternating order (forward, reversed, ...), and "
        "report each point's median pass: a slow spell of a shared machine then lands on every "
        "model instead of on the ones that happened to run during it",
    )
    p.add_argument(
        "--warmup-tokens", type=int, help="untimed decode steps before them (at least 4 with --compile)"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="decode through torch.compile (inductor) of the single-token step; compiling happens in "
        "the untimed warm-up steps",
    )
    p.add_argument("--d-model", type=int)
    p.add_argument("--n-layers", type=int)
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--device")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--max-prefill-tokens", type=int, help="time a batched prefill only when B·L is at most this"
    )
    p.add_argument("--no-match-params", action="store_true", help="keep the default MLP widths")
    p.add_argument(
        "--threads", type=int, help="torch.set_num_threads (default: torch's, i.e. OMP_NUM_THREADS)"
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--name", help="file stem of the outputs (default throughput_<device> or throughput_<preset>)"
    )
    args = p.parse_args(argv)
    preset = (
        "quick"
        if args.quick
        else args.preset or ("based-gpu" if (args.device or "").startswith("cuda") else "cpu")
    )
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.preset = preset
    for key in ("new_tokens", "repeats", "passes", "d_model", "n_layers", "vocab_size", "max_prefill_tokens"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be ≥ 1, got {getattr(args, key)}")
    if args.warmup_tokens < 0:
        raise SystemExit(f"--warmup-tokens must be ≥ 0, got {args.warmup_tokens}")
    if (
        args.compile
    ):  # a growing KV cache recompiles a few times (static, then dynamic shapes) before it settles
        args.warmup_tokens = max(4, args.warmup_tokens)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    if args.name is None:
        args.name = {"cpu": "throughput_cpu", "based-gpu": "throughput_based_gpu"}.get(
            preset, f"throughput_{preset}"
        )
        if preset == "cpu" and not args.device.startswith("cpu"):
            args.name = f"throughput_{args.device.split(':')[0]}"
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (use --device cpu)")
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_retained = retain_freed_memory()
    args.batch_sizes = sorted(set(args.batch_sizes))
    args.contexts = sorted(set(args.contexts))
    command = " ".join(
        [
            "python -m recall_lm.evals.bench.throughput",
            *map(shlex.quote, sys.argv[1:] if argv is None else argv),
        ]
    )
    meta = dict(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        machine=machine_description(device),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        device=device.type,
        dtype=args.dtype,
        load_start=f"{os.getloadavg()[0]:.2f}",
        command=command,
        malloc="freed blocks retained (recall_lm.kernels.cpu_memory)"
        if malloc_retained
        else "the C library's defaults",
    )
    print(f"{meta['date']} {meta['machine']}; torch {meta['torch']}, {meta['threads']} thread(s); "
          f"load {meta['load_start']}; preset {args.preset}", flush=True)

    args.bandwidth = read_bandwidth(device)
    meta["bandwidth_gbs"] = args.bandwidth / 1e9
    print(f"read bandwidth {meta['bandwidth_gbs']:.1f} GB/s", flush=True)
    reference = None if args.no_match_params else \
        count_parameters(model_config("attention", args.d_model, args.n_layers, args.vocab_size))
    configs, params = {}, {}
    for name in args.models:
        config = matched_config(name, args.d_model, args.n_layers, args.vocab_size, reference)
        configs[name] = config
        params[name] = dict(params=count_parameters(config), mixers=", ".join(config.layer_mixers()),
                            mlp_width=config.mlp_kwargs.get("hidden_size", "default"))
        print(f"{name:>16}: {params[name]['params']:>13,} parameters  (layers: {params[name]['mixers']}; "
              f"MLP width {params[name]['mlp_width']})", flush=True)

    started = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_started = usage.ru_utime + usage.ru_stime
    passes = []
    for p in range(args.passes):
        order = args.models if p % 2 == 0 else args.models[::-1]
        passes.append(
            [
                row
                for name in order
                for row in measure_model(name, configs[name], params[name]["params"], args, device, dtype)
            ]
        )
    rows = median_pass(passes)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    meta.update(load_end=f"{os.getloadavg()[0]:.2f}", wall_s=time.time() - started,
                cpu_s=usage.ru_utime + usage.ru_stime - cpu_started)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / args.name
    write_csv(rows, stem.with_suffix(".csv"))
    write_markdown(rows, meta, params, args, stem.with_suffix(".md"))
    write_plot(rows, args, stem.with_suffix(".png"),
               f"{meta['machine']} · torch {meta['torch']} · {meta['threads']} thread(s) · {args.dtype} · "
               f"d_model {args.d_model} × {args.n_layers} layers · {meta['date']}")
    print("\n".join(summary_lines(rows, [m for m in args.models], args.contexts, args.batch_sizes)))
    print(f"wrote {stem}.csv, .md, .png ({meta['wall_s']:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
