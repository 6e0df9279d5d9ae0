"""Training-step benchmark: \
``python -m recall_lm.evals.bench.train --config configs/zoology/based.yaml [...]``.

For each config (model, data and trainer settings as ``train.py`` builds them), three loops train the
same model on the same batches from the same initialisation:

* ``lightning``: a Lightning ``Trainer`` with the config's gradient clipping (no logger, checkpoint,
  progress bar or validation), each step split by callback hooks into forward (``training_step`` up
  to ``on_before_backward``, which includes ``zero_grad``), backward, optimizer (clipping and ``step``)
  and loop overhead (data loading, hooks, logging: the rest of the wall time between the ends of
  consecutive steps);
* ``bare``: the same ``LanguageModelTask._loss`` and AdamW in a plain PyTorch ``for`` loop;
* ``bare, full head`` (sparse labels: MQAR): as ``bare``, but the LM head and the loss over every
  position, the computation before the head was restricted to labelled positions (the same loss);
* ``bare, no document mask`` (text configs with document masking) instead: as ``bare`` on the same
  blocks packed with no masking, so the two rows give the cost of document-masked packing.

A second table splits the bare step by component: forward + backward of the mixers, the MLPs and the
head with its loss, each timed alone on the activations the step feeds it (captured by hooks), and
the rest (embedding, norms, residuals, optimizer) as the step less those.

Each figure is the median over ``--steps`` steps after ``--warmup`` steps (overhead: the median step
less the medians of the other phases, so that the split adds up). "Lightning overhead" is
the lightning step's excess over the bare step. The table (with the command, date, machine and load
average) goes to ``evals/results/bench_train_<device>.md``.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from recall_lm.evals.common import ROOT
from recall_lm.kernels.cpu_memory import retain_freed_memory

RESULTS = ROOT / "evals" / "results"
PHASES = ("forward", "backward", "optimizer", "overhead")


class StepTimer:
    """Lightning callback: per-step wall times of the phases in ``PHASES`` (ms), via hook timestamps."""

    def __init__(self):
        import lightning as L

        class _Callback(L.Callback):
            def on_train_batch_start(cb, trainer, module, batch, batch_idx):
                self._mark("start")

            def on_before_backward(cb, trainer, module, loss):
                self._mark("forward")

            def on_after_backward(cb, trainer, module):
                self._mark("backward")

            def on_train_batch_end(cb, trainer, module, outputs, batch, batch_idx):
                self._mark("end")
                self._close_step()

        self.callback = _Callback()
        self.steps: list[dict[str, float]] = []
        self._marks: dict[str, float] = {}
        self._last_end: float | None = None

    def _mark(self, name: str):
        self._marks[name] = time.perf_counter()

    def _close_step(self):
        m = self._marks
        phases = {"forward": m["forward"] - m["start"], "backward": m["backward"] - m["forward"],
                  "optimizer": m["end"] - m["backward"]}
        if self._last_end is not None:
            phases["step"] = m["end"] - self._last_end
            self.steps.append({k: 1e3 * v for k, v in phases.items()})
        self._last_end = m["end"]


def build(config: str, overrides: list[str]):
    """(task, datamodule, trainer) from a train.py config, as ``train.py fit`` would build them."""
    from recall_lm.training import cli as train_cli

    cli = train_cli.main(["--config", config, *overrides, "--trainer.logger", "false"], run=False)
    return cli.model, cli.datamodule, cli.trainer


def lightning_steps(task, datamodule, configured, n: int) -> list[dict[str, float]]:
    """``n`` steps of a Trainer with the configured run's clipping and epoch count (the LR schedule's
    length)."""
    import lightning as L

    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=n,
        max_epochs=configured.max_epochs,
        gradient_clip_val=configured.gradient_clip_val,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=configured.default_root_dir,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer.callback],
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
    )
    trainer.fit(task, datamodule=datamodule)
    return timer.steps


def bare_steps(task, batches, clip, full_head: bool) -> list[float]:
    """Step times (ms) of a plain loop: loss, backward, optional clipping, AdamW step, zero_grad."""
    from recall_lm.models.config import IGNORE_INDEX

    optimizer = task.build_optimizer()
    task.train()
    times, last = [], time.perf_counter()
    for batch in batches:
        if full_head:
            logits = task.model(batch[0]).logits
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), batch[1].flatten(), ignore_index=IGNORE_INDEX
            )
        else:
            loss, _ = task._loss(batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(task.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        now = time.perf_counter()
        times.append(1e3 * (now - last))
        last = now
    return times


def median_after(values: list[float], warmup: int) -> float:
    return statistics.median(values[warmup:] if len(values) > warmup else values)


def bench_config(config: str, steps: int, warmup: int, overrides: list[str]) -> list[dict]:
    task, datamodule, configured = build(config, overrides)
    clip = configured.gradient_clip_val
    fresh = copy.deepcopy(task)  # the same initialisation for every loop
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = list(itertools.islice(itertools.cycle(loader), warmup + steps + 1))
    input_ids = batches[0][0]
    tokens = input_ids.numel()
    name = Path(config).with_suffix("").as_posix().split("configs/")[-1]
    rows = []
    lightning = lightning_steps(task, datamodule, configured, warmup + steps + 1)
    med = {
        p: median_after([s[p] for s in lightning], warmup)
        for p in ("forward", "backward", "optimizer", "step")
    }
    med["overhead"] = (
        med["step"] - med["forward"] - med["backward"] - med["optimizer"]
    )  # so the split adds up
    rows.append({"config": name, "loop": "lightning", "step_ms": med["step"], **{p: med[p] for p in PHASES}})
    masked = len(batches[0]) == 3  # document-masked text: dense labels, so no "full head" comparison
    for full_head in (False,) if masked else (False, True):
        t = median_after(bare_steps(copy.deepcopy(fresh), batches, clip, full_head), warmup + 1)
        rows.append({"config": name, "loop": "bare, full head" if full_head else "bare", "step_ms": t})
    if masked:  # the same blocks with no mask
        unmasked = [b[:2] for b in batches]
        t = median_after(bare_steps(copy.deepcopy(fresh), unmasked, clip, full_head=False), warmup + 1)
        rows.append({"config": name, "loop": "bare, no document mask", "step_ms": t})
    for row in rows:
        row.update(tokens_per_step=tokens, batch=tuple(input_ids.shape),
                   tokens_per_s=tokens / row["step_ms"] * 1e3, steps_per_s=1e3 / row["step_ms"])
    bare = rows[1]["step_ms"]
    rows[0]["lightning_overhead"] = (rows[0]["step_ms"] - bare) / rows[0]["step_ms"]
    rows[2]["vs_masked" if masked else "vs_labelled"] = rows[2]["step_ms"] / bare
    split = component_split(copy.deepcopy(fresh), batches[warmup:warmup + min(steps, 5)])
    rows[1]["split"] = {**split, "rest": bare - sum(split.values())}
    return rows


def _timed_fwd_bwd(fn, inputs: list[torch.Tensor], repeats: int = 1) -> float:
    """Median ms of forward + backward of ``fn(*inputs)`` against a fixed random output gradient."""
    inputs = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    grad = torch.randn_like(out)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times[1:])


def component_split(task, batches) -> dict[str, float]:
    """Forward + backward ms per step of the mixers, the MLPs and the head + loss, each run alone on the
    inputs the model gives it in a training step of ``batches`` (hooks capture them; median over batches)."""
    from recall_lm.models.config import IGNORE_INDEX

    model = task.model
    task.train()
    per_batch = {"mixers": [], "MLPs": [], "head + loss": []}
    for batch in batches:
        captured: dict[str, list] = {"mixers": [], "MLPs": [], "head": []}
        hooks = []
        for block in model.blocks:
            hooks.append(block.mixer.register_forward_pre_hook(
                lambda m, args, kwargs: captured["mixers"].append((m, args, kwargs)), with_kwargs=True))
            if block.mlp is not None:
                hooks.append(block.mlp.register_forward_pre_hook(
                    lambda m, args, kwargs: captured["MLPs"].append((m, args, kwargs)), with_kwargs=True))
        hooks.append(model.norm.register_forward_hook(lambda m, args, out: captured["head"].append(out)))
        with torch.no_grad():
            task._loss(batch)
        for h in hooks:
            h.remove()
        for part in ("mixers", "MLPs"):
            per_batch[part].append(sum(
                _timed_fwd_bwd(lambda x, m=m, a=args, k=kwargs: m(x, *a[1:], **k), [args[0]])
                for m, args, kwargs in captured[part]))
        labels = batch[1].reshape(-1)
        keep = labels != IGNORE_INDEX
        hidden = captured["head"][-1].reshape(-1, model.config.d_model)
        if hidden.shape[0] == labels.numel():  # the head saw every position (chunked loss or full head)
            hidden = hidden[keep]
        per_batch["head + loss"].append(_timed_fwd_bwd(
            lambda h: F.cross_entropy(model.head(h).float(), labels[keep]), [hidden]))
    return {part: statistics.median(v) for part, v in per_batch.items()}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| config | loop | batch [B, T] | step ms | steps/s | tokens/s | forward | backward | optimizer "
             "| overhead | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        phases = [f"{r[p]:.1f}" if p in r else "" for p in PHASES]
        note = ""
        if "lightning_overhead" in r:
            note = f"Lightning overhead {100 * r['lightning_overhead']:+.1f} % of the step"
        if "vs_labelled" in r:
            note = f"{r['vs_labelled']:.2f}× the labelled-positions step"
        if "vs_masked" in r:
            note = f"the document-masked step takes {100 * (1 / r['vs_masked'] - 1):+.1f} % longer"
        lines.append(
            f"| {r['config']} | {r['loop']} | {list(r['batch'])} | {r['step_ms']:.1f} | "
            f"{r['steps_per_s']:.1f} | {r['tokens_per_s']:,.0f} | " + " | ".join(phases) + f" | {note} |"
        )
    split_rows = [r for r in rows if "split" in r]
    if split_rows:
        parts = list(split_rows[0]["split"])
        lines += [
            "",
            "Where the bare step goes (forward + backward of each component timed alone on the step's own "
            "activations; rest = the step less those: embedding, norms, residuals, optimizer):",
            "",
            "| config | bare step ms | " + " | ".join(parts) + " |",
            "|---|---|" + "---|" * len(parts),
        ]
        for r in split_rows:
            cells = [f"{r['split'][p]:.1f} ({100 * r['split'][p] / r['step_ms']:.0f} %)" for p in parts]
            lines.append(f"| {r['config']} | {r['step_ms']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="a train.py config (repeatable)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--out", default=None, help="markdown output (default evals/results/bench_train_<device>.md)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="train.py overrides after --, e.g. -- --model.architecture.d_model 128"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be ≥ 1 and --warmup ≥ 0, got {args.steps}, {args.warmup}")
    for config in args.config:
        if not Path(config).is_file():
            parser.error(f"--config {config}: no such file")
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = (
        "freed blocks retained (recall_lm.kernels.cpu_memory)"
        if retain_freed_memory()
        else "the C library's defaults"
    )
    load_before = os.getloadavg()
    rows = []
    for config in args.config:
        rows += bench_config(config, args.steps, args.warmup, args.overrides)
    load_after = os.getloadavg()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    header = (
        f"# Training-step benchmark ({device})\n\n"
        f"`python -m recall_lm.evals.bench.train {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, malloc: {malloc}, torch {torch.__version__}; "
        "load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after. Median of {args.steps} steps after "
        f"{args.warmup} warm-up steps, milliseconds."
    )
    text = markdown(rows, header)
    print(text)
    out = Path(args.out) if args.out else RESULTS / f"bench_train_{device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
