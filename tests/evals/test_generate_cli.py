"""python -m recall_lm.evals.tools.generate on tiny checkpoints written in train.py's format.

The printed continuation must equal what ``DecoderLM.generate`` gives the same model directly
(decoded with the same byte tokenizer), for greedy and seeded sampling; runs without a saved
tokenizer take ``--prompt-ids``; bad input ends with a one-line error, not a stack trace.
"""
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from recall_lm.data.tokenizers import load_tokenizer
from recall_lm.evals.tools.generate import main
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

ROOT = Path(__file__).resolve().parents[2]


def save_run(run_dir: Path, vocab_size: int, with_tokenizer: bool) -> tuple[Path, DecoderLM]:
    """A DecoderLM saved as train.py saves it: <run>/checkpoints/last.ckpt (+ <run>/tokenizer/)."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=vocab_size,
        d_model=32,
        n_layers=2,
        mixer=["based", "attention"],
        mixer_kwargs={"based": {"num_heads": 2, "feature_dim": 4}, "attention": {"num_heads": 2}},
        init_std=0.3,
    )
    model = DecoderLM(config).eval()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": asdict(config), "lr": 1e-3}, "global_step": 1}, ckpt)
    if with_tokenizer:
        load_tokenizer("byte").save(run_dir / "tokenizer")
    return ckpt, model


def expected_text(model, prompt: str, n: int, **kwargs) -> str:
    tok = load_tokenizer("byte")
    ids = torch.tensor(tok.encode(prompt))[None]
    new = model.generate(ids, n, eos_token_id=tok.eos_token_id, **kwargs)[0][ids.shape[1]:].tolist()
    if new and new[-1] == tok.eos_token_id:
        new = new[:-1]
    return tok.decode(new)


def test_greedy_text_equals_direct_generate(tmp_path, capsys):
    ckpt, model = save_run(tmp_path / "run", 256, with_tokenizer=True)
    want = expected_text(model, "Hello, world", 12, temperature=0)
    for where in (ckpt, tmp_path / "run"):  # a checkpoint file, or the run folder
        got = main(
            ["--ckpt", str(where), "--prompt", "Hello, world", "--max-new-tokens", "12", "--temperature", "0"]
        )
        assert got == want and capsys.readouterr().out == want + "\n"
    assert len(load_tokenizer("byte").encode(want)) >= 1


def test_seeded_sampling_equals_direct_generate(tmp_path, capsys):
    ckpt, model = save_run(tmp_path / "run", 256, with_tokenizer=True)
    want = expected_text(model, "abc", 10, temperature=0.8, top_k=50, top_p=0.9, seed=7)
    got = main(["--ckpt", str(ckpt), "--prompt", "abc", "--max-new-tokens", "10", "--temperature", "0.8",
                "--top-k", "50", "--top-p", "0.9", "--seed", "7"])
    assert got == want


def test_prompt_ids_without_tokenizer(tmp_path, capsys):
    ckpt, model = save_run(tmp_path / "mqar", 61, with_tokenizer=False)
    ids = torch.tensor([[3, 14, 15, 9, 2]])
    want = model.generate(ids, 8, temperature=0)[0][5:].tolist()
    got = main(
        ["--ckpt", str(ckpt), "--prompt-ids", "3 14 15 9 2", "--max-new-tokens", "8", "--temperature", "0"]
    )
    assert got == " ".join(map(str, want))
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(ckpt), "--prompt", "hi"])
    assert exit_info.value.code == 2
    assert "--prompt-ids" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--ckpt", str(ckpt), "--prompt-ids", "3 99"])  # 99 ≥ vocabulary 61
    assert "outside the model's vocabulary" in capsys.readouterr().err


def test_tokenizer_override_and_missing_checkpoint(tmp_path, capsys):
    ckpt, model = save_run(tmp_path / "run", 256, with_tokenizer=False)
    got = main(["--ckpt", str(ckpt), "--prompt", "xy", "--max-new-tokens", "5", "--temperature", "0",
                "--tokenizer", "byte"])
    assert got == expected_text(model, "xy", 5, temperature=0)
    with pytest.raises(SystemExit):
        main(["--ckpt", str(tmp_path / "nowhere"), "--prompt", "x"])
    assert "no checkpoint" in capsys.readouterr().err


def test_module_runs_as_a_command(tmp_path):
    ckpt, model = save_run(tmp_path / "run", 256, with_tokenizer=True)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recall_lm.evals.tools.generate",
            "--ckpt",
            str(ckpt),
            "--prompt",
            "The",
            "--max-new-tokens",
            "6",
            "--temperature",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_text(model, "The", 6, temperature=0) + "\n"
