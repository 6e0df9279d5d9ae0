"""recall_lm.evals.bench.readme_perf: the README's performance section is what the committed results give;
its tables read the benchmarks' own files (ratios against the same table's SDPA), and a missing file is
reported as not measured."""
import csv
import time

import torch

from recall_lm.evals.bench import readme_perf
from recall_lm.evals.bench.kernels import Row, Settings, to_markdown
from recall_lm.evals.bench.throughput import COLUMNS


def test_readme_section_is_what_the_committed_results_give():
    assert readme_perf.main(["--check"]) == 0, "run: python -m recall_lm.evals.bench.readme_perf"


def _kernel_file(path):
    """A bench_kernels file written by bench_kernels itself: two sections, each with its own SDPA."""
    rows = [Row("A", "per-head g (RetNet)", "torch", 2048, "float32", 10.0, 100.0),
            Row("A", "per-head g (RetNet)", "recurrent (token loop)", 2048, "float32", 50.0, 5000.0),
            Row("A", "softmax attention (causal)", "torch SDPA", 2048, "float32", 80.0, 300.0),
            Row("B", "delta rule (DeltaNet)", "torch", 2048, "float32", 40.0, 150.0),
            Row("B", "delta rule (DeltaNet)", "torch", 8192, "float32", 160.0, 600.0),
            Row("B", "softmax attention (causal)", "torch SDPA", 2048, "float32", 90.0, 450.0),
            Row("B", "softmax attention (causal)", "torch SDPA", 8192, "float32", 900.0, 3600.0)]
    sections = [("A", None, lambda rows, s: []), ("B", None, lambda rows, s: [])]
    path.write_text(to_markdown(rows, Settings(torch.device("cpu"), [2048, 8192]), sections, time.time()))


def test_kernel_rows_against_their_own_tables_sdpa(tmp_path):
    _kernel_file(tmp_path / "bench_kernels_cpu.md")
    lines = readme_perf.kernels_section(tmp_path / "bench_kernels_cpu.md")
    assert "| per-head g (RetNet) | torch | 100 (3.0×) |  |" in lines  # section A's SDPA: 300 ms
    assert "| delta rule (DeltaNet) | torch | 150 (3.0×) | 600 (6.0×) |" in lines  # section B's: 450, 3600
    assert not any("token loop" in line for line in lines)
    assert "load average at the end" in lines[0] and "B=4 H=4 D(head)=64" in lines[0]
    assert "command not recorded" in lines[0]  # to_markdown was given no command here


def _throughput_files(folder, name, points):
    with open(folder / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for (model, B, L), tok_s in points.items():
            writer.writerow({**dict.fromkeys(COLUMNS, ""), "model": model, "batch": B, "context": L,
                             "decode_tok_s": tok_s})
    (folder / f"{name}.md").write_text(
        "- date: 2026-01-02 03:04; machine: x; torch 2, 1 intra-op thread(s)\n"
        f"- command: `python -m recall_lm.evals.bench.throughput --name {name}`\n"
        "- load average (1 min) at start 0.50, at end 0.60; wall time 1 s\n"
        "- settings: d_model 256, 4 layers, vocabulary 256\n"
    )


def test_decoding_table_reads_eager_and_compiled_runs(tmp_path):
    _throughput_files(
        tmp_path,
        "throughput_cpu",
        {
            ("attention", 1, 4096): 100.0,
            ("rwkv6", 1, 4096): 350.0,
            ("attention", 8, 4096): 200.0,
            ("rwkv6", 8, 4096): 1000.0,
        },
    )
    _throughput_files(tmp_path, "throughput_cpu_compiled", {("attention", 1, 4096): 150.0,
                                                             ("rwkv6", 1, 4096): 600.0})
    lines = readme_perf.decode_section(tmp_path)
    assert "| model | eager B=1 L=4,096 | eager B=8 L=4,096 | compiled B=1 L=4,096 |" in lines
    assert "| rwkv6 | 350 (3.5×) | 1,000 (5.0×) | 600 (4.0×) |" in lines
    assert "| attention | 100 | 200 | 150 |" in lines
    assert "2026-01-02, load average (1 min) at start 0.50, at end 0.60" in lines[0]
    assert "d_model 256, 4 layers, 1 thread(s)" in lines[0]
    assert "command `python -m recall_lm.evals.bench.throughput --name throughput_cpu_compiled`" in lines[0]


def test_missing_results_are_reported_as_not_measured(tmp_path):
    text = readme_perf.render(tmp_path)
    for what in (
        "Kernels (cpu): not measured yet",
        "Decoding: not measured yet",
        "Training: not measured yet",
        "Chunked cross-entropy: not measured yet",
        "No GPU figures yet",
    ):
        assert what in text, what


def test_check_fails_on_a_stale_readme_and_a_rewrite_fixes_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{readme_perf.BEGIN}\nold numbers\n{readme_perf.END}\n\n## after\n")
    args = ["--results", str(tmp_path), "--readme", str(readme)]
    assert readme_perf.main(["--check", *args]) == 1
    assert readme_perf.main(args) == 0
    assert readme_perf.main(["--check", *args]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("# x\n") and text.endswith("\n\n## after\n")
    readme.write_text("# no markers\n")
    assert readme_perf.main(args) == 2
    assert "must hold the markers" in capsys.readouterr().err


def test_a_malformed_result_file_is_named(tmp_path, capsys):
    (tmp_path / "throughput_cpu.csv").write_text("model,batch,decode_tok_s\nattention,1,5\n")  # no context
    (tmp_path / "throughput_cpu.md").write_text("- date: 2026-01-02\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"{readme_perf.BEGIN}\n{readme_perf.END}\n")
    assert readme_perf.main(["--results", str(tmp_path), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "decode_section" in err and "not in its benchmark's format" in err and "context" in err
