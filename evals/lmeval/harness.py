"""EleutherAI's lm-evaluation-harness on our checkpoints: the ``recall-lm`` model and its command.

    python -m recall_lm.evals.lmeval.harness --ckpt runs/lm/tiny --tasks recall_swde recall_fda --limit 200
    # read-twice prompts
    python -m recall_lm.evals.lmeval.harness --ckpt runs/lm/tiny --tasks recall_swde --jrt
    # offline
    python -m recall_lm.evals.lmeval.harness --ckpt EXPORTED_DIR --tasks recall_fda --data-files my_fda.jsonl
    recall-lm-eval --model recall-lm --model_args ckpt=runs/lm/tiny --include_path evals/lmeval/tasks \\
        --tasks recall_swde

``RecallLM`` (registered with lm-eval as ``recall-lm`` when this module is imported; ``recall-lm-eval``,
``recall_lm.evals.lmeval.cli``, is lm-eval's own CLI after that import) loads a ``train.py``
checkpoint, run folder or exported folder (``python -m recall_lm.models.export``) with its tokenizer and
answers the three request types:

* ``loglikelihood(context, continuation)``: the continuation's summed log-probability and whether it is
  the greedy continuation, from one forward of context + continuation (left-truncated to
  ``max_length``; an empty context starts from EOS). Requests of a batch are right-padded into one
  forward: the model is causal, so the padding never reaches a scored position.
* ``loglikelihood_rolling(text)``: the whole text's log-probability, in disjoint windows of at most
  ``max_length`` scored tokens, each after the preceding ``max_length`` tokens of context (EOS first).
* ``generate_until(context, {until, max_gen_toks, ...})``: greedy (or sampled, ``do_sample``) decoding
  with the model's O(1)-per-token recurrent state, ragged prompts batched
  (``recall_lm.models.generation.generate``), the prompt left-truncated to ``max_length − max_gen_toks``
  tokens, the continuation cut at the first ``until`` string.

The shipped tasks (``evals/lmeval/tasks/``): SWDE and FDA as in the BASED paper (greedy, 48 new tokens, cut at
a newline, the "contains" metric), and their JRT variants (the document twice before the question;
here the whole prompt is left-truncated like every lm-eval task, whereas
``recall_lm.evals.probes.recall_tasks_eval --jrt`` cuts each copy to half the budget). Results go to
``evals/results/harness/<run>.json`` (lm-eval's output) and ``.md`` (its table).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from recall_lm.evals.common import ROOT

TASKS_DIR = ROOT / "evals" / "lmeval" / "tasks"
RESULTS = ROOT / "evals" / "results" / "harness"
SHIPPED = {"recall_swde", "recall_fda", "recall_swde_jrt", "recall_fda_jrt"}


class RecallLM(LM):
    """lm-eval model over a DecoderLM checkpoint. ``model_args``: ckpt (required), tokenizer (a
    ``recall_lm.data.tokenizers.load_tokenizer`` spec; default the one saved with the run), max_length
    (default 2048), batch_size, device."""

    def __init__(self, ckpt: str | None = None, tokenizer: str | None = None, max_length: int = 2048,
                 batch_size: int | str = 8, device: str = "cpu", **unused):
        super().__init__()
        if ckpt is None:
            raise ValueError("recall-lm needs model_args ckpt=<checkpoint, run folder or exported folder>")
        from recall_lm.data.tokenizers import load_tokenizer, tokenizer_for_checkpoint
        from recall_lm.models.checkpoint import load_model

        if str(device).startswith("cuda") and not torch.cuda.is_available():
            print(f"recall-lm: device {device!r} is not available here; running on the CPU", file=sys.stderr)
            device = "cpu"
        self.model, _ = load_model(ckpt, map_location=device)
        self.tok = load_tokenizer(tokenizer) if tokenizer else tokenizer_for_checkpoint(ckpt)
        if self.tok is None:
            raise ValueError(f"no tokenizer saved with {ckpt} (looked for tokenizer/ beside it): pass "
                             "model_args tokenizer=<spec>, e.g. tokenizer=byte")
        vocab = self.model.config.vocab_size
        if self.tok.vocab_size > vocab:
            raise ValueError(
                f"tokenizer {self.tok.name!r} has {self.tok.vocab_size} ids but the model only {vocab}: "
                f"not the tokenizer checkpoint {ckpt} was trained with"
            )
        self.max_length = int(max_length)
        self.batch_size = max(1, int(batch_size)) if str(batch_size).isdigit() else 8
        self._device = torch.device(device)

    @property
    def device(self):
        return self._device

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_token_id

    # ---- scoring --------------------------------------------------------------------------------

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (log p(continuation | context), continuation is greedy),
        in batches of right-padded rows (each left-truncated to max_length + 1 tokens)."""
        out = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            rows = [(ctx + cont)[-(self.max_length + 1):] for ctx, cont in chunk]
            width = max(len(r) for r in rows) - 1
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r) - 1] = torch.tensor(r[:-1])
            logprobs = F.log_softmax(self.model(ids.to(self._device)).logits.float(), dim=-1).cpu()
            for b, ((_, cont), r) in enumerate(zip(chunk, rows)):
                n = len(cont)
                positions = torch.arange(len(r) - 1 - n, len(r) - 1)
                target = torch.tensor(r[-n:])
                scores = logprobs[b, positions]
                out.append(
                    (
                        float(scores.gather(-1, target[:, None]).sum()),
                        bool((scores.argmax(-1) == target).all()),
                    )
                )
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = []
        for req in requests:
            context, continuation = req.args
            ctx = self.tok.encode(context) if context else []
            cont = self.tok.encode(continuation)
            if not cont:
                raise ValueError(f"loglikelihood: the continuation {continuation!r} encodes to no tokens")
            pairs.append((ctx or [self.eot_token_id], cont))
        results = self._score(pairs)
        for req, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        results = []
        for req in requests:
            (text,) = req.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok.encode(text), prefix_token=self.eot_token_id,
                max_seq_len=self.max_length, context_len=1)]
            total = sum(score for score, _ in self._score([(list(c), list(t)) for c, t in windows if t]))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
            results.append(total)
        return results

    # ---- generation -----------------------------------------------------------------------------

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        from recall_lm.models.generation import generate

        results: list[str | None] = [None] * len(requests)
        order = sorted(
            range(len(requests)), key=lambda i: -len(requests[i].args[0])
        )  # similar lengths together
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            kwargs = [dict(requests[i].args[1] or {}) for i in idx]
            max_new = max(int(k.get("max_gen_toks", 256)) for k in kwargs)
            budget = max(1, self.max_length - max_new)
            prompts = [torch.tensor((self.tok.encode(requests[i].args[0]) or [self.eot_token_id])[-budget:])
                       for i in idx]
            sample = any(k.get("do_sample", False) for k in kwargs)
            temperature = float(kwargs[0].get("temperature", 1.0)) if sample else 0.0
            outs = generate(
                self.model, prompts, max_new, temperature=temperature, eos_token_id=self.eot_token_id
            )
            for i, k, prompt, out in zip(idx, kwargs, prompts, outs):
                new = out[prompt.numel():][: int(k.get("max_gen_toks", 256))].tolist()
                text = self.tok.decode([t for t in new if t != self.eot_token_id])
                until = k.get("until") or []
                for stop in [until] if isinstance(until, str) else until:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
                results[i] = text
        return results


def prepare_tasks(
    names: list[str], jrt: bool, data_files: str | None, workdir: Path
) -> tuple[list[str], list[str]]:
    """(task names, include paths) for lm-eval. ``jrt``: the shipped recall tasks' read-twice variants.
    ``data_files`` (a local .jsonl / .parquet): the shipped tasks re-pointed at it, as YAMLs in ``workdir``
    that include the shipped ones and override only the dataset (lm-eval's own ``include`` mechanism)."""
    names = [n + "_jrt" if jrt and n in SHIPPED and not n.endswith("_jrt") else n for n in names]
    if data_files is None:
        return names, [str(TASKS_DIR)]
    if not Path(data_files).is_file():
        raise FileNotFoundError(f"--data-files {data_files}: no such file")
    foreign = [n for n in names if n not in SHIPPED]
    if foreign:
        raise ValueError(f"--data-files applies to the shipped tasks {sorted(SHIPPED)}, not {foreign}")
    builder = "parquet" if str(data_files).endswith(".parquet") else "json"
    workdir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (workdir / f"{name}.yaml").write_text(
            f"include: {json.dumps(str(TASKS_DIR / (name + '.yaml')))}\n"
            f"dataset_path: {builder}\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {json.dumps(str(Path(data_files).resolve()))}\n"
        )
    return names, [str(workdir)]


def evaluate(
    ckpt: str, tasks: list[str], include_paths: list[str], limit: int | None = None, **model_args
) -> dict:
    """lm-eval's results dict for ``tasks`` on the checkpoint (``model_args``: see RecallLM)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_paths)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown}; the shipped ones are {sorted(SHIPPED)} "
                         "(`lm_eval ls tasks` lists the rest)")
    lm = RecallLM(ckpt=ckpt, **model_args)
    return simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager, log_samples=False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a train.py checkpoint, run folder or exported folder")
    parser.add_argument(
        "--tasks", nargs="+", required=True, help="lm-eval task names (shipped: evals/lmeval/tasks/)"
    )
    parser.add_argument("--limit", type=int, default=None, help="examples per task (default: all)")
    parser.add_argument("--jrt", action="store_true", help="the shipped recall tasks' read-twice prompts")
    parser.add_argument("--data-files", default=None, help="a local .jsonl/.parquet for the shipped tasks")
    parser.add_argument("--include-path", default=None, help="a folder of further lm-eval task YAMLs")
    parser.add_argument(
        "--tokenizer", default=None, help="override the run's tokenizer (a load_tokenizer spec)"
    )
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", default=None, help="output stem (default evals/results/harness/<run>_<tasks>)"
    )
    args = parser.parse_args(argv)
    import tempfile

    from lm_eval.utils import handle_non_serializable, make_table

    try:
        with tempfile.TemporaryDirectory() as workdir:
            tasks, include = prepare_tasks(args.tasks, args.jrt, args.data_files, Path(workdir))
            include += [args.include_path] if args.include_path else []
            results = evaluate(args.ckpt, tasks, include, args.limit, tokenizer=args.tokenizer,
                               max_length=args.max_length, batch_size=args.batch_size, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    from recall_lm.evals.probes.report import run_name

    stem = (
        Path(args.out)
        if args.out
        else RESULTS / f"{run_name(args.ckpt)}_{'_'.join(sorted(results['results']))}"
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps(results, indent=2, default=handle_non_serializable) + "\n"
    )
    table = make_table(results)
    command = "python -m recall_lm.evals.lmeval.harness " + " ".join(sys.argv[1:] if argv is None else argv)
    stem.with_suffix(".md").write_text(
        f"# lm-evaluation-harness: {run_name(args.ckpt)}\n\n`{command}`\n\n{table}\n"
    )
    print(table)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return results


if (
    __name__ == "__main__"
):  # run as recall_lm.evals.lmeval.harness, so lm-eval sees one RecallLM class (the task utils import it)
    from recall_lm.evals.lmeval.harness import main as _main

    _main()
else:
    register_model("recall-lm")(RecallLM)
