"""recall_lm.evals.bench.train: the three loops run the same computation and the table is written."""
import copy
import json

import torch

from recall_lm.evals.bench import train as bench_train

SMALL = ["--model.architecture.d_model=16", "--data.init_args.batch_size=8",
         "--data.init_args.train_slices=[{input_seq_len: 16, num_kv_pairs: 3, num_examples: 64}]",
         "--data.init_args.test_slices=[{input_seq_len: 16, num_kv_pairs: 3, num_examples: 8}]"]


def test_labelled_and_full_head_bare_loops_train_identically():
    task, datamodule, trainer = bench_train.build("configs/zoology/based.yaml", SMALL)
    clip = trainer.gradient_clip_val
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())[:3]
    a, b = copy.deepcopy(task), copy.deepcopy(task)
    torch.manual_seed(0)
    bench_train.bare_steps(a, batches, clip, full_head=False)
    torch.manual_seed(0)  # the same embedding-dropout draws
    bench_train.bare_steps(b, batches, clip, full_head=True)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_table_has_every_loop_and_phase(tmp_path):
    out = tmp_path / "bench.md"
    rows = bench_train.main(["--config", "configs/zoology/based.yaml", "--steps", "3", "--warmup", "1",
                             "--out", str(out), "--", *SMALL])
    assert [r["loop"] for r in rows] == ["lightning", "bare", "bare, full head"]
    lightning = rows[0]
    assert all(lightning[p] >= 0 for p in ("forward", "backward", "optimizer"))
    assert (
        abs(sum(lightning[p] for p in bench_train.PHASES) - lightning["step_ms"])
        < 1e-6 * lightning["step_ms"] + 1e-9
    )
    text = out.read_text()
    assert "zoology/based" in text and "Lightning overhead" in text and "load average" in text


def test_text_config_rows_compare_document_masking_and_split_the_step(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} " * (i % 7 + 1)}) + "\n" for i in range(200)))
    out = tmp_path / "bench.md"
    rows = bench_train.main(
        [
            "--config",
            "configs/lm/tiny.yaml",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
            "--",
            f"--data.init_args.sources={docs}",
            f"--data.init_args.val_sources={docs}",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}",
            "--data.init_args.seq_len=32",
            "--data.init_args.batch_size=2",
            "--model.architecture.d_model=32",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ]
    )
    assert [r["loop"] for r in rows] == ["lightning", "bare", "bare, no document mask"]
    split = rows[1]["split"]
    assert set(split) == {"mixers", "MLPs", "head + loss", "rest"} and all(
        split[p] > 0 for p in ("mixers", "MLPs")
    )
    text = out.read_text()
    assert "document-masked step takes" in text and "Where the bare step goes" in text
