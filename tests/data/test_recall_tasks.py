"""SWDE/FDA: the offline fixture through the real loader, truncation, JRT prompts, contains, and the
evaluator with scripted models that answer right (score 1) or wrong (score 0)."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recall_lm.data.recall_tasks import (
    FIXTURE_DOCS,
    RecallExample,
    load_recall_task,
    split_question,
    write_fixture,
)
from recall_lm.data.tokenizers import load_tokenizer
from recall_lm.evals.probes.recall_tasks_eval import (
    build_prompt,
    contains,
    evaluate_recall,
    resolve_tokenizer,
)
from recall_lm.models.decoder import LMOutput

BYTE = load_tokenizer("byte")


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("recall"))


@pytest.mark.parametrize("task", ["swde", "fda"])
def test_fixture_loads_through_the_dataset_path(task, fixture_files, tmp_path):
    examples = load_recall_task(task, data_files=str(fixture_files[task]))
    expected = [(doc, k, v) for doc, attrs in FIXTURE_DOCS[task] for k, v in attrs.items()]
    assert [(e.doc_id, e.key, e.value) for e in examples] == expected
    for e in examples:
        assert e.question == f"{e.key}:" and not e.context.rstrip().endswith(f"{e.key}:")
        assert e.value in e.context  # the answer is in the document: a recall task
    jsonl = write_fixture(tmp_path, fmt="jsonl")[task]
    assert [(e.context, e.question, e.value) for e in load_recall_task(task, data_files=str(jsonl))] == \
        [(e.context, e.question, e.value) for e in examples]
    assert len(load_recall_task(task, data_files={"validation": str(jsonl)}, limit=2)) == 2


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown recall task"):
        load_recall_task("squad")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_recall_task("swde", data_files=str(tmp_path / "nope.parquet"))


def test_split_question():
    assert split_question("doc body\nYear:  ", "year") == ("doc body\n", "Year:")
    assert split_question("doc body", "year") == ("doc body\n", "year:")


def test_contains_is_case_insensitive_substring():
    assert contains(" the Quiet harbour, 1987", "The Quiet Harbour")
    assert contains("a+b (c)", "+b (c")  # regex characters are literal
    assert not contains("Quiet Harb", "Quiet Harbour")


def test_truncation_keeps_the_end_and_the_budget():
    example = RecallExample(
        context="".join(chr(97 + i % 26) for i in range(500)), question="Key:", value="x", key="key"
    )
    ids = build_prompt(BYTE, example, context_len=100, max_new_tokens=20)
    assert len(ids) == 80 and BYTE.decode(ids) == example.context[-76:] + "Key:"
    short = RecallExample(context="short doc. ", question="Key:", value="x", key="key")
    assert BYTE.decode(build_prompt(BYTE, short, 100, 20)) == "short doc. Key:"  # nothing cut when it fits
    jrt = BYTE.decode(build_prompt(BYTE, example, 100, 20, jrt=True))
    half = (80 - 4 - 1) // 2
    assert jrt == example.context[-half:] + "\n" + example.context[-half:] + "Key:" and len(jrt) <= 80
    assert BYTE.decode(build_prompt(BYTE, short, 100, 20, jrt=True)) == "short doc. \nshort doc. Key:"
    with pytest.raises(ValueError, match="context_len"):
        build_prompt(BYTE, example, context_len=24, max_new_tokens=20)


class ScriptedLM(nn.Module):
    """A stand-in with DecoderLM's interface whose greedy continuation of row b is ``scripts[b]``:
    the logits after the t-th token of row b point at script token t − prompt_len_b (then newline)."""

    def __init__(self, prompt_lens: list[int], scripts: list[list[int]], vocab_size: int = 256):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.prompt_lens, self.scripts = prompt_lens, [s + [10] for s in scripts]
        self.config = SimpleNamespace(vocab_size=vocab_size)

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return SimpleNamespace(seen=0)

    def forward(self, ids, state=None):
        B, T = ids.shape
        seen = state.seen if state is not None else 0
        logits = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            for t in range(T):
                k = seen + t + 1 - self.prompt_lens[b]  # index of the token this position predicts
                if 0 <= k < len(self.scripts[b]):
                    logits[b, t, self.scripts[b][k]] = 1.0
        new = SimpleNamespace(seen=seen + T) if state is not None else None
        return LMOutput(logits, new, logits.new_zeros(()))

    def generate(self, input_ids, max_new_tokens, **kwargs):
        from recall_lm.models.generation import generate

        return generate(self, input_ids, max_new_tokens, **kwargs)


@pytest.mark.parametrize("jrt", [False, True])
def test_evaluator_scores_right_and_wrong_answers(fixture_files, jrt):
    examples = load_recall_task("swde", data_files=str(fixture_files["swde"]))
    prompts = [build_prompt(BYTE, e, 256, 32, jrt) for e in examples]
    lens = [len(p) for p in prompts]
    right = ScriptedLM(lens, [list((" " + e.value.upper()).encode()) for e in examples])
    score, rows = evaluate_recall(right, BYTE, examples, 256, 32, jrt, batch_size=len(examples))
    assert score == 1.0 and all(r["prediction"] == e.value.upper() for r, e in zip(rows, examples))
    wrong = ScriptedLM(lens, [list(b" nothing here") for _ in examples])
    assert evaluate_recall(wrong, BYTE, examples, 256, 32, jrt, batch_size=3)[0] == 0.0
    # An answer after the first newline does not count (generation is cut there).
    late = ScriptedLM(lens, [list(("\n" + e.value).encode()) for e in examples])
    assert evaluate_recall(late, BYTE, examples, 256, 32, jrt, batch_size=len(examples))[0] == 0.0


def test_tokenizer_required(tmp_path):
    with pytest.raises(ValueError, match="no saved tokenizer"):
        resolve_tokenizer(tmp_path, None, 256)
    with pytest.raises(ValueError, match="not the model's tokenizer"):
        resolve_tokenizer(tmp_path, "byte", 128)
    assert resolve_tokenizer(tmp_path, "byte", 256).vocab_size == 256


def test_cli_end_to_end_with_the_runs_saved_tokenizer(fixture_files, tmp_path):
    """An (untrained) byte-level checkpoint in a run folder with tokenizer/: the CLI finds the
    tokenizer, reads the fixture through --data-files, generates, and writes its tables."""
    from dataclasses import asdict

    from recall_lm.evals.probes import recall_tasks_eval as recall_tasks
    from recall_lm.models.config import ModelConfig
    from recall_lm.models.decoder import DecoderLM

    config = ModelConfig(vocab_size=256, d_model=16, n_layers=1, mixer="attention",
                         mixer_kwargs={"attention": {"num_heads": 1}}, mlp="none")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": {"model": asdict(config)},
                "state_dict": {"model." + k: v for k, v in DecoderLM(config).state_dict().items()}}, ckpt)
    with pytest.raises(SystemExit, match="^error: .*no saved tokenizer"):
        recall_tasks.main(["--ckpt", str(ckpt), "--task", "fda", "--data-files", str(fixture_files["fda"])])
    BYTE.save(tmp_path / "run" / "tokenizer")
    out = tmp_path / "fda_out"
    score = recall_tasks.main(
        [
            "--ckpt",
            str(ckpt),
            "--task",
            "fda",
            "--data-files",
            str(fixture_files["fda"]),
            "--context-len",
            "128",
            "--max-new-tokens",
            "4",
            "--jrt",
            "--out",
            str(out),
        ]
    )
    assert 0.0 <= score <= 1.0
    lines = out.with_suffix(".csv").read_text().splitlines()
    assert lines[0] == "doc_id,key,value,prediction,correct,prompt_tokens" and len(lines) == 1 + 8
    assert "jrt True" in out.with_suffix(".md").read_text()


def test_rows_with_an_empty_value_are_left_out_with_a_warning(tmp_path):
    import json

    rows = [{"text": "doc one\nYear: 1987", "key": "year", "value": "1987", "doc_id": "a"},
            {"text": "doc two\nGenre:", "key": "genre", "value": "  ", "doc_id": "b"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="left out 1 row"):
        examples = load_recall_task("swde", data_files=str(path))
    assert [e.doc_id for e in examples] == ["a"]
