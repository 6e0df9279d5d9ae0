"""recall_lm.evals.bench.throughput: a --quick run writes the CSV / markdown / PNG with the expected columns;
state memory is flat in context length for recurrent models and linear for attention; the replicated
batch-1 state decodes exactly like a batch of identical prompts; the memory meter sees allocations."""
import csv

import pytest
import torch

from recall_lm.evals.bench.throughput import (
    COLUMNS,
    MemoryMeter,
    decode,
    main,
    median_pass,
    model_config,
    repeat_state,
)
from recall_lm.models.decoder import DecoderLM
from recall_lm.models.generation import decode_step

CONTEXTS = (16, 48)


def test_quick_run_writes_the_three_files(tmp_path):
    main(["--quick", "--models", "attention,based", "--contexts", ",".join(map(str, CONTEXTS)),
          "--batch-sizes", "1,2", "--new-tokens", "2", "--out-dir", str(tmp_path), "--name", "tp"])
    with open(tmp_path / "tp.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert len(rows) == 2 * len(CONTEXTS) * 2
    assert all(float(r["decode_tok_s"]) > 0 for r in rows)
    assert all(float(r["prefill_tok_s"]) > 0 for r in rows if r["batch"] == "1")
    state = {(r["model"], int(r["context"])): int(r["state_bytes_per_seq"]) for r in rows}
    assert len({state["based", L] for L in CONTEXTS}) == 1  # base_conv + based: fixed-size states
    attention = [state["attention", L] for L in CONTEXTS]
    assert attention == [attention[0] * L // CONTEXTS[0] for L in CONTEXTS]  # KV cache: exactly linear in L
    assert attention[0] == 2 * 16 * 64 * 2 * 4  # 2 layers · (K and V) · L · d_model · fp32 bytes
    text = (tmp_path / "tp.md").read_text()
    for heading in (
        "## Models",
        "## Summary",
        "## Decode tokens/s, batch 2",
        "## State per sequence (MiB)",
        "## Decode speed-up over attention, batch 1",
        "command: `python -m recall_lm.evals.bench.throughput",
    ):
        assert heading in text
    assert (tmp_path / "tp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(model, tok_s, note=""):
    return dict(model=model, context=64, batch=1, decode_tok_s=tok_s, prefill_tok_s=tok_s / 10, note=note)


def test_median_pass_keeps_each_points_median_pass_whole():
    passes = [[_row("a", 100.0), _row("b", 50.0)],
              [_row("b", 10.0), _row("a", 300.0)],  # the second pass runs the models in reverse order
              [_row("a", 200.0), _row("b", 30.0, note="out of memory")]]
    rows = median_pass(passes)
    assert [r["model"] for r in rows] == ["a", "b"]
    assert [r["decode_tok_s"] for r in rows] == [200.0, 30.0]
    assert rows[0]["prefill_tok_s"] == 20.0  # the figures of the median pass, not mixed from others
    assert rows[0]["note"] == "median of 3 passes: 100–300 tok/s"
    assert rows[1]["note"] == "out of memory; median of 3 passes: 10–50 tok/s"
    assert median_pass(passes[:1]) == passes[0]


def test_passes_alternate_the_model_order_and_report_the_range(tmp_path, capsys):
    main(
        [
            "--quick",
            "--models",
            "attention,based",
            "--contexts",
            "16",
            "--batch-sizes",
            "1",
            "--new-tokens",
            "2",
            "--passes",
            "3",
            "--out-dir",
            str(tmp_path),
            "--name",
            "tp",
        ]
    )
    printed = [line.split(":")[0].split()[0] for line in capsys.readouterr().out.splitlines()
               if line.lstrip().startswith(("attention ", "based ")) and "tok/s" in line]
    assert printed == ["attention", "based", "based", "attention", "attention", "based"]
    text = (tmp_path / "tp.md").read_text()
    assert (
        "median of 3 pass(es)" in text and "## Decode tokens/s, batch 1: the range over the 3 passes" in text
    )
    with open(tmp_path / "tp.csv") as f:
        assert all("median of 3 passes" in r["note"] for r in csv.DictReader(f))


@pytest.mark.parametrize("name", ["attention", "swa", "rwkv6", "mom"])
def test_replicated_state_decodes_like_identical_prompts(name):
    torch.manual_seed(0)
    model = DecoderLM(model_config(name, 64, 2, 50)).eval()
    prompt = torch.randint(0, 50, (1, 20))
    with torch.inference_mode():
        one = model(prompt, model.init_state(1))
        logits, _ = decode(decode_step(model), repeat_state(one.state, 3), one.logits[:, -1].expand(3, -1), 4)
        batch = model(prompt.expand(3, -1), model.init_state(3))
        want, _ = decode(decode_step(model), batch.state, batch.logits[:, -1], 4)
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-5)


def test_memory_meter_sees_an_allocation():
    meter = MemoryMeter(torch.device("cpu"))
    if not meter.available:
        pytest.skip("/proc/self/clear_refs is not writable here")
    meter.start()
    x = torch.ones(16 * 2**20 // 4 * 4)  # 64 MiB, every page touched
    assert 60 <= meter.peak_mb() < 200
    del x


def test_bad_arguments():
    with pytest.raises(SystemExit, match="unknown"):
        main(["--quick", "--models", "transformerxl", "--out-dir", "/nonexistent"])


def test_summary_claims_nothing_about_growth_from_one_context():
    from recall_lm.evals.bench.throughput import summary_lines

    rows = [
        {
            "model": m,
            "batch": 1,
            "context": 4096,
            "decode_tok_s": 100.0 * (i + 1),
            "state_bytes_per_seq": 10**i,
            "floor_ms_per_step": 4.0 / (1 + 3 * i),
        }
        for i, m in enumerate(("attention", "rwkv6"))
    ]
    text = "\n".join(summary_lines(rows, ["attention", "rwkv6"], [4096], [1]))
    assert "constant in context length" not in text and "one context length only (L=4,096)" in text
    assert "relative to attention (KV cache) at L=4,096, B=1: rwkv6 2.0×" in text
    assert (
        "the most the bytes allow at L=4,096, B=1 (attention's floor / the model's floor): rwkv6 4.0×" in text
    )
    rows += [
        {
            **r,
            "context": 8192,
            "state_bytes_per_seq": r["state_bytes_per_seq"] * (2 if r["model"] == "attention" else 1),
        }
        for r in rows
    ]
    text = "\n".join(summary_lines(rows, ["attention", "rwkv6"], [4096, 8192], [1]))
    assert "constant in context length: rwkv6; growing (KV caches): attention" in text
    alone = "\n".join(
        summary_lines([r for r in rows if r["model"] == "attention"], ["attention"], [4096, 8192], [1])
    )
    assert "relative to attention" not in alone and "the bytes allow" not in alone  # nothing to compare with


def test_bandwidth_floor_is_the_bytes_a_step_must_read(tmp_path, monkeypatch):
    """floor = (parameter bytes + B · state bytes) / read bandwidth, and of_floor = floor / measured."""
    from recall_lm.evals.bench import throughput

    assert throughput.read_bandwidth(torch.device("cpu"), mib=8, repeats=3) > 1e8  # > 0.1 GB/s on any machine
    monkeypatch.setattr(throughput, "read_bandwidth", lambda device: 1e9)
    rows = main(
        ["--quick", "--models", "rwkv6", "--contexts", "32", "--batch-sizes", "2", "--out-dir", str(tmp_path)]
    )
    row = rows[0]
    config = throughput.matched_config("rwkv6", 64, 2, 64,
                                       throughput.count_parameters(model_config("attention", 64, 2, 64)))
    param_bytes = 4 * throughput.count_parameters(config)
    assert row["floor_ms_per_step"] == pytest.approx(
        1e3 * (param_bytes + 2 * row["state_bytes_per_seq"]) / 1e9
    )
    assert row["of_floor"] == pytest.approx(row["floor_ms_per_step"] / row["decode_ms_per_step"])
    text = (tmp_path / "throughput_quick.md").read_text()
    assert "Share of the memory-bandwidth floor" in text and "read bandwidth" in text and "1.0 GB/s" in text


@pytest.mark.slow
def test_compiled_decode_run(tmp_path):
    """--compile decodes through the compiled step (warm-up raised to 4 steps) and says so in the table."""
    rows = main(
        [
            "--quick",
            "--compile",
            "--models",
            "attention,rwkv6",
            "--contexts",
            "32,64",
            "--batch-sizes",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert all(r["decode_tok_s"] > 0 for r in rows)
    text = (tmp_path / "throughput_quick.md").read_text()
    assert "torch.compile (inductor)" in text and "after 4 untimed ones" in text
