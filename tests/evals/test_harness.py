"""recall_lm.evals.lmeval.harness: the lm-eval ``recall-lm`` model against hand computations with the same
model, task YAMLs over local JSONL written here (offline), the shipped recall tasks, the plain ``lm_eval``
command, and errors that name the problem."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from recall_lm.data.recall_tasks import load_recall_task, write_fixture
from recall_lm.data.tokenizers import ByteTokenizer
from recall_lm.evals.lmeval import harness
from recall_lm.evals.probes.recall_tasks_eval import evaluate_recall
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

CONFIG = ModelConfig(vocab_size=256, d_model=32, n_layers=2, mixer=["base_conv", "gated_deltanet"],
                     mixer_kwargs={"gated_deltanet": {"num_heads": 2}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = DecoderLM(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path_factory.mktemp("export") / "model"
    model.save_pretrained(folder, ByteTokenizer())
    return folder, model


def _request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@torch.no_grad()
def _logprob(model, ids, n_target):
    """Hand computation: log p(last n_target ids | the ones before) in one forward."""
    logits = model(torch.tensor([ids[:-1]])).logits[0]
    scores = F.log_softmax(logits.float(), -1)[len(ids) - 1 - n_target:]
    target = torch.tensor(ids[-n_target:])
    return float(scores.gather(-1, target[:, None]).sum()), bool((scores.argmax(-1) == target).all())


def test_requests_match_hand_computations(exported):
    folder, model = exported
    lm = harness.RecallLM(ckpt=str(folder), batch_size=3)
    tok = ByteTokenizer()
    pairs = [("The capital of France is", " Paris"), ("", "hello"), ("a" * 30, "b"), ("x", " yz")]
    got = lm.loglikelihood([_request("loglikelihood", c, t) for c, t in pairs])
    for (context, target), (score, greedy) in zip(pairs, got):
        ids = (tok.encode(context) or [tok.eos_token_id]) + tok.encode(target)
        want, want_greedy = _logprob(model, ids, len(tok.encode(target)))
        assert math.isclose(score, want, rel_tol=1e-5, abs_tol=1e-5) and greedy == want_greedy
    (rolling,) = lm.loglikelihood_rolling([_request("loglikelihood_rolling", "short text")])
    assert math.isclose(
        rolling, _logprob(model, [tok.eos_token_id] + tok.encode("short text"), 10)[0], rel_tol=1e-5
    )

    prompts = ["Name: Ada\nYear:", "Q", "a longer prompt than the others, on purpose"]
    outs = lm.generate_until(
        [_request("generate_until", p, {"until": ["\n", "zz"], "max_gen_toks": 12}) for p in prompts]
    )
    for prompt, out in zip(prompts, outs):
        ids = torch.tensor(tok.encode(prompt))
        full = model.generate([ids], 12, temperature=0.0, eos_token_id=tok.eos_token_id)[0]
        text = tok.decode([t for t in full[ids.numel():].tolist() if t != tok.eos_token_id])
        for stop in ("\n", "zz"):
            text = text.split(stop, 1)[0]
        assert out == text


def _write_tasks(folder, data):
    rows = [
        {"question": f"Item {i}:", "choices": [" red", " green", " blue"], "gold": i % 3} for i in range(6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: {json.dumps(str(data))}\n"
        "validation_split: validation\n"
    )
    (folder / "local_choice.yaml").write_text(
        "task: local_choice\n" + common + "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: gold\nmetric_list:\n  - metric: acc\n")
    (folder / "local_generate.yaml").write_text(
        "task: local_generate\n" + common + "output_type: generate_until\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: '{{choices[gold]}}'\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n")
    return rows


def test_local_task_yamls_score_like_the_hand_computation(exported, tmp_path):
    folder, model = exported
    rows = _write_tasks(tmp_path, tmp_path / "items.jsonl")
    results = harness.evaluate(str(folder), ["local_choice", "local_generate"], [str(tmp_path)])["results"]
    tok = ByteTokenizer()
    correct = 0
    for r in rows:  # multiple choice: the choice of highest log-likelihood
        scores = [
            _logprob(model, tok.encode(r["question"]) + tok.encode(c), len(tok.encode(c)))[0]
            for c in r["choices"]
        ]
        correct += int(max(range(3), key=scores.__getitem__) == r["gold"])
    assert results["local_choice"]["acc,none"] == pytest.approx(correct / len(rows))
    matches = 0
    for r in rows:
        ids = torch.tensor(tok.encode(r["question"]))
        new = model.generate([ids], 8, temperature=0.0, eos_token_id=0)[0][ids.numel():].tolist()
        matches += int(tok.decode([t for t in new if t]).split("\n", 1)[0] == r["choices"][r["gold"]])
    assert results["local_generate"]["exact_match,none"] == pytest.approx(matches / len(rows))


def test_shipped_recall_task_offline_equals_evals_recall_tasks(exported, tmp_path):
    folder, model = exported
    files = write_fixture(tmp_path / "data", "jsonl")
    out = tmp_path / "res"
    results = harness.main(
        [
            "--ckpt",
            str(folder),
            "--tasks",
            "recall_swde",
            "--data-files",
            str(files["swde"]),
            "--out",
            str(out),
            "--max-length",
            "4096",
        ]
    )
    ours, _ = evaluate_recall(model, ByteTokenizer(), load_recall_task("swde", data_files=files["swde"]),
                              context_len=4096)
    assert results["results"]["recall_swde"]["contains,none"] == pytest.approx(ours)
    assert json.loads(out.with_suffix(".json").read_text())["results"]["recall_swde"]
    assert "recall_swde" in out.with_suffix(".md").read_text()
    jrt, _ = harness.prepare_tasks(["recall_swde"], True, None, tmp_path)
    assert jrt == ["recall_swde_jrt"]


@pytest.mark.parametrize("argv, match", [
    (["--ckpt", "/nonexistent/run", "--tasks", "recall_swde"], "no checkpoint at /nonexistent/run"),
    (["--tasks", "no_such_task"], "unknown lm-eval task"),
    (["--tasks", "recall_fda", "--data-files", "/nonexistent.jsonl"], "no such file"),
])
def test_errors_name_the_problem(exported, argv, match, capsys):
    folder, _ = exported
    argv = argv if "--ckpt" in argv else ["--ckpt", str(folder), *argv]
    with pytest.raises(SystemExit):
        harness.main(argv)
    assert match in capsys.readouterr().err


def test_tokenizer_vocabulary_mismatch_is_named(tmp_path):
    DecoderLM(ModelConfig(vocab_size=100, d_model=16, n_layers=1)).save_pretrained(
        tmp_path / "m", ByteTokenizer()
    )
    with pytest.raises(ValueError, match="has 256 ids but the model only 100"):
        harness.RecallLM(ckpt=str(tmp_path / "m"))


def test_recall_lm_eval_command_runs_recall_lm(exported, tmp_path):
    """`recall-lm-eval` (the console script `make install` installs) is lm-eval's CLI with recall-lm
    registered."""
    folder, _ = exported
    _write_tasks(tmp_path, tmp_path / "items.jsonl")
    command = os.path.join(os.path.dirname(sys.executable), "recall-lm-eval")
    done = subprocess.run(
        [
            command,
            "--model",
            "recall-lm",
            "--model_args",
            f"ckpt={folder}",
            "--include_path",
            str(tmp_path),
            "--tasks",
            "local_choice",
            "--limit",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "local_choice" in done.stdout and "acc" in done.stdout
