"""The language-model comparison's verdicts (recall_lm.evals.sweeps.lm_compare_claims): Spearman's ρ and its
exact p-value by hand, the gap share from seed means, each verdict's rule on made-up families, and the whole
chain at toy size (a sweep of two families × two seeds, the AR-hit split of their checkpoints, the
verdict)."""

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from recall_lm.evals.common import ROOT
from recall_lm.evals.sweeps import lm_compare_claims as lc
from recall_lm.evals.sweeps.sweep import load_sweep, read_run
from tests.evals.toy_text import toy_documents


def test_ranks_spearman_and_exact_p_by_hand():
    assert lc.ranks([3.0, 1.0, 1.0, 2.0]) == [4.0, 1.5, 1.5, 3.0]
    assert lc.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, 1, −1): ρ = 1 − 6·2 / (4·15) = 0.8
    assert lc.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert lc.p_value_negative([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1 / 24)  # one permutation of 24
    assert lc.p_value_negative([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0


def ar_row(ar, other, n_ar=10, n_other=90, frequent=2.0):
    return {
        "AR_hits_loss": ar,
        "other_loss": other,
        "frequent_repeats_loss": frequent,
        "AR_hits_n": n_ar,
        "other_n": n_other,
        "frequent_repeats_n": 0,
        "all_loss": (ar * n_ar + other * n_other) / (n_ar + n_other),
        "parameters": 1000,
        "state_bytes": 64,
        "bits_per_byte": 1.0,
    }


def fams(conv_rows, att_rows=None):
    att_rows = att_rows or [ar_row(1.0, 3.0), ar_row(1.2, 3.0)]

    def family(rows, lr):
        return {
            "seeds": [
                {
                    "run": f"r{i}",
                    "seed": i,
                    "lr": lr,
                    "tokens": 4096,
                    "val_loss": r["all_loss"],
                    "curve": [(2048, 5.0), (4096, r["all_loss"])],
                    "ar": r,
                }
                for i, r in enumerate(rows)
            ]
        }

    return {"attention": family(att_rows, 3e-3), "base_conv": family(conv_rows, 1e-3)}


def test_share_from_seed_means_and_the_zoology_rule():
    # BaseConv: AR hits +2.0 and +1.8 over attention's seeds (mean gap 1.9 × 10 tokens), other +0.1 × 90
    s = lc.summary(fams([ar_row(3.0, 3.1), ar_row(3.0, 3.1)]))
    conv = s["base_conv"]
    assert conv["AR_gap"] == pytest.approx(1.9) and conv["other_gap"] == pytest.approx(0.1)
    assert conv["share"] == pytest.approx(19 / (19 + 9))
    assert conv["share_by_seed"] == pytest.approx([20 / 29, 18 / 27])
    assert conv["share_repeats"] == pytest.approx(19 / 28)  # no frequent repeats in these rows
    both = lc.share([{**ar_row(3.0, 3.1), "frequent_repeats_n": 10, "frequent_repeats_loss": 2.5}],
                    [{**ar_row(1.0, 3.0), "frequent_repeats_n": 10, "frequent_repeats_loss": 2.0}],
                    on=("AR_hits", "frequent_repeats"))
    assert both == pytest.approx((20 + 5) / (20 + 5 + 9))
    assert math.isnan(lc.share([ar_row(3.0, 2.0)], [ar_row(1.0, 3.0)]))  # ahead overall: 20 − 90 < 0
    assert lc.zoology_verdict(s)[0] == "agree"
    # the gap mostly on other tokens
    assert lc.zoology_verdict(lc.summary(fams([ar_row(1.5, 3.5), ar_row(1.5, 3.5)])))[0] == "disagree"
    # attention's worse seed not below BaseConv's better one on AR hits: not testable
    assert lc.zoology_verdict(lc.summary(fams([ar_row(1.1, 3.5), ar_row(2.0, 3.5)])))[0].startswith(
        "not testable"
    )
    # BaseConv ahead overall (+1.0 × 10 on AR hits, −0.2 × 90 elsewhere): no gap to share, direction stated
    verdict, detail = lc.zoology_verdict(lc.summary(fams([ar_row(2.1, 2.8), ar_row(2.1, 2.8)])))
    assert verdict == "not testable at this scale"
    assert "not behind attention overall (gap -0.080)" in detail and "the direction Zoology found" in detail
    assert "for every pair of seeds" not in detail


def test_each_family_rule_judges_the_families_behind_attention():
    def row(gap, share, ar_gap=0.1, other_gap=0.1):
        return {"gap": gap, "share": share, "AR_gap": ar_gap, "other_gap": other_gap}

    att = {"attention": {}}
    assert lc.each_family_verdict({**att, "a": row(0.2, 0.7), "b": row(0.1, 0.6)})[0] == "agree"
    assert lc.each_family_verdict({**att, "a": row(0.2, 0.7), "b": row(0.1, 0.3)})[0] == "mixed"
    verdict, detail = lc.each_family_verdict({**att, "a": row(0.2, 0.1), "b": row(-0.1, 9.0, 0.3, -0.2)})
    assert verdict == "disagree"  # b is ahead overall: listed, not judged
    assert "a: gap 0.200, share on AR hits 0.10" in detail and "b (0.300, -0.200)" in detail
    assert lc.each_family_verdict({**att, "b": row(-0.1, 0.9)})[0] == "not testable at this scale"
    assert lc.each_family_verdict(att)[0] == "pending"


def test_ordering_rule():
    s = {
        f: {"AR_hits_loss": [loss]}
        for f, loss in (
            ("attention", 0.5),
            ("based", 1.0),
            ("rwkv7", 1.2),
            ("gated_deltanet", 1.1),
            ("mamba2", 2.0),
        )
    }
    recall = {"attention": 1.0, "based": 0.8, "rwkv7": 0.7, "gated_deltanet": 0.75, "mamba2": 0.0}
    verdict, detail = lc.ordering_verdict(s, recall)
    assert verdict == "agree" and "ρ(AR-hit loss, MQAR accuracy) = -1.00 over 5 families" in detail
    assert "p = 0.008" in detail  # 1 / 120
    verdict, _ = lc.ordering_verdict(s, {**recall, "mamba2": 1.0, "attention": 0.0})
    assert verdict == "disagree"
    assert lc.ordering_verdict({"attention": s["attention"]}, recall)[0] == "pending"


def toy_corpus(tmp_path):
    docs = toy_documents(tmp_path)
    config = {
        "seed_everything": 0,
        "model": {
            "architecture": {
                "vocab_size": 300,
                "d_model": 16,
                "n_layers": 1,
                "mixer": "attention",
                "mixer_kwargs": {"attention": {"num_heads": 1}},
                "mlp": "swiglu",
            },
            "lr": 3e-3,
        },
        "data": {
            "class_path": "recall_lm.data.text_datamodule.TextDataModule",
            "init_args": {
                "sources": str(docs),
                "tokenizer": "bpe:300",
                "seq_len": 32,
                "batch_size": 4,
                "val_fraction": 0.3,
                "cache_dir": str(tmp_path / "cache"),
                "max_val_blocks": 4,
            },
        },
        "trainer": {
            "max_steps": 4,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "accelerator": "cpu",
            "devices": 1,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
        },
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_comparison_end_to_end_at_toy_size(tmp_path):
    """Two families × two seeds through the sweep (validation loss kept per validation, lr chosen by loss),
    their checkpoints through the AR-hit command, then the verdict table, curves and verdicts."""
    config = toy_corpus(tmp_path)
    sweep = tmp_path / "toy_compare.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "toy_compare",
                "select": "val/loss",
                "base": {
                    "attention": str(config),
                    "base_conv": {
                        "config": str(config),
                        "set": {
                            "model.architecture.mixer": "base_conv",
                            "model.architecture.mixer_kwargs": {
                                "base_conv": {"kernel_size": 32, "expand": 2}
                            },
                        },
                    },
                },
                "grid": {"mixer": ["attention", "base_conv"], "seed_everything": [0, 1]},
            }
        )
    )
    runs, out = tmp_path / "runs", tmp_path / "results" / "toy_compare"
    env = dict(os.environ, WANDB_MODE="disabled")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recall_lm.evals.sweeps.sweep",
            str(sweep),
            "--jobs",
            "2",
            "--no-wandb",
            "--runs-dir",
            str(runs),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "runs" / "base_conv-seed_everything=1.json").read_text())
    assert [step for step, _ in record["val_loss_by_step"]] == [2, 4]  # every 2 steps
    assert record["metrics"]["val/loss"] == pytest.approx(record["val_loss_by_step"][-1][1], abs=1e-4)
    assert "val/loss per validation" in (out / "results.md").read_text()

    from recall_lm.evals.probes import ar_hits

    names = sorted(p.name for p in runs.iterdir() if (p / "checkpoints" / "last.ckpt").is_file())
    assert len(names) == 4
    ar_out = tmp_path / "lm_compare"
    ar_hits.main(
        [
            "--config",
            str(config),
            "--reference",
            "attention-seed_everything=0",
            "--max-windows",
            "4",
            "--out-dir",
            str(ar_out),
            *[a for n in names for a in ("--ckpt", str(runs / n))],
        ]
    )
    assert lc.main(["--sweep", str(out), "--ar-hits", str(ar_out / "ar_hits.csv")]) == 0
    text = (ar_out / "verdict.md").read_text()
    assert "| attention | 0.003 |" in text and "| base_conv | 0.003 |" in text
    assert "| 512 | 2 |" in text  # 4 steps × 4 × 32 tokens, two seeds
    assert "Most of the gated-convolution stack's gap" in text and "| pending |" in text  # 2 families < 4
    assert (ar_out / "loss_curves.png").stat().st_size > 3000
    assert "Loss on AR hits by training tokens" not in text  # no shorter sweep given or found
    # the same runs as their own shorter sweep: the wiring of --earlier (each seed one more point)
    assert lc.main(["--sweep", str(out), "--ar-hits", str(ar_out / "ar_hits.csv"),
                    "--earlier", str(out), str(ar_out / "ar_hits.csv")]) == 0
    assert "Loss on AR hits by training tokens" in (ar_out / "verdict.md").read_text()
    with pytest.raises(SystemExit, match="^error: --earlier .* is not a file$"):
        lc.main(["--sweep", str(out), "--ar-hits", str(ar_out / "ar_hits.csv"),
                 "--earlier", str(out), str(tmp_path / "missing.csv")])
    att = lc.summary(
        lc.families(
            [read_run(p) for p in (out / "runs").glob("*.json")], lc.read_ar_hits(ar_out / "ar_hits.csv")
        )
    )["base_conv"]
    assert len(att["share_by_seed"]) == 2 and not math.isnan(att["share"])


def test_final_sweep_takes_each_familys_lowest_loss_rate(tmp_path):
    """The final sweep keeps each family's lr-sweep base entry, adds the rate with the lower final
    validation loss, and leaves out a family whose lr runs have not all finished."""
    lr_sweep = ROOT / "configs" / "sweeps" / "lm_compare_cpu_lr.yaml"

    def run(mixer, lr, loss):
        return {"run": f"{mixer}-lr={lr:g}", "point": {"mixer": mixer, "model.lr": lr},
                "metrics": {"val/loss": loss, "val/acc": 0.3}}

    rows = [run("attention", 3e-3, 3.7), run("attention", 1e-3, 3.9), run("rwkv7", 3e-3, 4.2),
            run("rwkv7", 1e-3, 4.0), run("kda", 3e-3, 4.0)]
    spec, waiting = lc.final_sweep(lr_sweep, rows)
    assert spec["grid"] == {"mixer": ["attention", "rwkv7"], "seed_everything": [0, 1]}
    assert spec["base"]["attention"] == {"config": "configs/lm/compare.yaml", "set": {"model.lr": 3e-3}}
    assert spec["base"]["rwkv7"]["set"]["model.lr"] == 1e-3
    assert spec["base"]["rwkv7"]["set"]["model.architecture.mixer"] == "rwkv7"  # the lr sweep's own settings
    assert "kda" in waiting and "based" in waiting
    assert spec["fixed"]["trainer.max_steps"] == lc.FINAL_STEPS
    assert spec["fixed"]["trainer.enable_checkpointing"]


def test_the_committed_final_sweep_follows_the_committed_lr_runs():
    """configs/sweeps/lm_compare_cpu.yaml is what --write-final-sweep writes from the committed lr runs."""
    folder = ROOT / "evals" / "results" / "sweeps" / "lm_compare_cpu_lr" / "runs"
    rows = [read_run(p) for p in sorted(folder.glob("*.json"))]
    spec, _ = lc.final_sweep(ROOT / "configs" / "sweeps" / "lm_compare_cpu_lr.yaml", rows)
    committed = yaml.safe_load((ROOT / "configs" / "sweeps" / "lm_compare_cpu.yaml").read_text())
    assert committed == spec
    sw_spec = load_sweep(ROOT / "configs" / "sweeps" / "lm_compare_cpu.yaml")
    assert sw_spec.select == "val/loss" and set(sw_spec.grid["mixer"]) <= set(sw_spec.base)


def test_write_final_sweep_without_finished_lr_runs_stops_in_one_line(tmp_path):
    """--write-final-sweep from an lr sweep with no finished runs names the setting and writes nothing."""
    lr_sweep = tmp_path / "no_runs_yet_lr.yaml"
    lr_sweep.write_text((ROOT / "configs" / "sweeps" / "lm_compare_cpu_lr.yaml").read_text())
    out = tmp_path / "final.yaml"
    with pytest.raises(SystemExit) as stop:
        lc.main(["--write-final-sweep", str(out), "--lr-sweep", str(lr_sweep)])
    message = str(stop.value)
    assert message.startswith("error: --lr-sweep") and "no finished runs" in message and "\n" not in message
    assert not out.exists()


def test_ar_hit_loss_by_budget_takes_the_shorter_run_at_the_chosen_rate(tmp_path):
    """The shorter sweep adds one point per family, from its run at the final lr only; attention's lead is
    its AR-hit loss minus the lowest other family's at the same tokens."""
    s = lc.summary(fams([ar_row(3.0, 3.1), ar_row(2.8, 3.1)]))  # attention lr 3e-3, BaseConv lr 1e-3
    earlier = fams([ar_row(4.0, 3.5), ar_row(9.9, 3.5)], att_rows=[ar_row(3.5, 3.3), ar_row(9.9, 3.3)])
    for fam, wrong_lr in (("attention", 1e-3), ("base_conv", 3e-3)):
        for seed in earlier[fam]["seeds"]:
            seed["tokens"] = 2048
        earlier[fam]["seeds"][1]["lr"] = wrong_lr  # the 9.9 rows: another rate, left out
    budget = lc.by_budget(s, earlier)
    assert budget["attention"] == [(2048, 3.5, 1), (4096, pytest.approx(1.1), 2)]
    assert budget["base_conv"] == [(2048, 4.0, 1), (4096, pytest.approx(2.9), 2)]
    lead = lc.attention_lead(budget)
    assert [(t, f) for t, _, f in lead] == [(2048, "base_conv"), (4096, "base_conv")]
    assert [d for _, d, _ in lead] == pytest.approx([-0.5, -1.8])
    text = lc.markdown(s, [], "toy", budget)
    assert "| base_conv | 4.000 (1) | 2.900 (2) |" in text
    assert "-0.500 at 0.0 M tokens (base_conv)" in text
    assert lc.plot_curves(fams([ar_row(3.0, 3.1)]), tmp_path / "c.png", budget).stat().st_size > 3000
