"""Zoology's AR-hit split (recall_lm.evals.probes.ar_hits): the categories of a hand-made token sequence
whose repeated bigrams and training counts are known, the threshold's scaling, the gap share, and the
command end to end on a small BPE corpus with two toy models (and the byte tokenizer it refuses)."""

import csv
import math
import re

import numpy as np
import pytest
import torch
import yaml

from recall_lm.evals.probes import ar_hits
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM
from tests.evals.toy_text import toy_documents


def test_categories_of_a_hand_made_sequence():
    """Train [5 6 1 5 6 1 5 6]: (5,6) three times, (6,1) and (1,5) twice. Window 5 6 7 5 6 8 5 6 7, threshold
    2: the bigrams ending at positions 1 … 8 are (5,6) (6,7) (7,5) (5,6)* (6,8) (8,5) (5,6)* (6,7)*, * a
    repeat; (5,6) is frequent in training (3 > 2), (6,7) never seen there: one AR hit, at the last token."""
    counts = ar_hits.BigramCounts.of(np.array([5, 6, 1, 5, 6, 1, 5, 6]), vocab_size=10)
    assert counts.lookup(np.array([5, 6, 1, 6]), np.array([6, 1, 5, 7])).tolist() == [3, 2, 2, 0]
    cats = ar_hits.categories(np.array([5, 6, 7, 5, 6, 8, 5, 6, 7]), counts, threshold=2)
    o, a, f = ar_hits.OTHER, ar_hits.AR_HIT, ar_hits.FREQUENT_REPEAT
    assert cats.tolist() == [o, o, o, f, o, o, f, a]
    assert ar_hits.categories(np.array([5, 6, 7, 5, 6, 8, 5, 6, 7]), counts, threshold=3).tolist() == [
        o, o, o, a, o, o, a, a]
    assert ar_hits.categories(np.array([4]), counts, 2).tolist() == []
    # the repeats' training counts, and their buckets: (5,6) seen 3 times (twice repeated), (6,7) never
    repeats = ar_hits.repeat_counts(np.array([5, 6, 7, 5, 6, 8, 5, 6, 7]), counts)
    assert repeats.tolist() == [-1, -1, -1, 3, -1, -1, 3, 0]
    buckets = ar_hits.by_training_count(np.arange(8.0), repeats, [0, 2])
    assert buckets == {"repeats_le0_n": 1, "repeats_le0_loss": 7.0, "repeats_le2_n": 0,
                       "repeats_le2_loss": pytest.approx(float("nan"), nan_ok=True),
                       "repeats_gt2_n": 2, "repeats_gt2_loss": 4.5}


def test_categories_keep_to_one_document():
    """Window 6 7 0 6 7 3 6 7 with EOS 0 (training counts as above, (6,7) unseen): the second (6,7) opens
    a new document, so only the third is an AR hit; the token after the EOS is unscored, as in training."""
    counts = ar_hits.BigramCounts.of(np.array([5, 6, 1, 5, 6, 1, 5, 6]), vocab_size=10)
    window = np.array([6, 7, 0, 6, 7, 3, 6, 7])
    o, a, u = ar_hits.OTHER, ar_hits.AR_HIT, ar_hits.UNSCORED
    assert ar_hits.categories(window, counts, 2, eos=0).tolist() == [o, o, u, o, o, o, a]
    assert ar_hits.categories(window, counts, 2).tolist() == [o, o, o, a, o, o, a]
    summary = ar_hits.summarize(np.arange(7.0), ar_hits.categories(window, counts, 2, eos=0))
    assert summary["all_n"] == 6 and summary["all_loss"] == pytest.approx((21 - 2) / 6)


def test_document_masked_losses_equal_each_document_alone():
    """With ``eos`` a window's documents run apart: the losses equal each document's own forward."""
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=16, d_model=16, n_layers=2, mixer="gated_deltanet",
                                  mixer_kwargs={"gated_deltanet": {"num_heads": 1}})).eval()
    windows = torch.tensor([[1, 2, 3, 0, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13]])
    losses = ar_hits.token_losses(model, windows, batch_size=2, eos=0)

    def alone(inputs, targets):
        logits = model(torch.tensor([inputs])).logits[0]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(targets), reduction="none")

    torch.testing.assert_close(losses[0, :4], alone([1, 2, 3, 0], [2, 3, 0, 4]))
    torch.testing.assert_close(losses[0, 4:], alone([4, 5], [5, 6]))
    torch.testing.assert_close(losses[1], alone([7, 8, 9, 10, 11, 12], [8, 9, 10, 11, 12, 13]))
    assert not torch.allclose(ar_hits.token_losses(model, windows[:1])[0, 4:], losses[0, 4:])


def test_threshold_scales_zoologys_rate():
    assert ar_hits.auto_threshold(10_000_000_000) == 1250
    assert ar_hits.auto_threshold(100_000_000) == 12
    assert ar_hits.auto_threshold(1_000_000) == 1  # never below one occurrence


def test_gap_share_by_hand():
    """Model − reference: AR hits 10 tokens × 1.0 nats, other 90 tokens × 0.1 nats, no frequent repeats:
    the summed gap is 10 + 9 = 19 nats, of which 10 fall on AR hits."""
    cats = np.array([ar_hits.AR_HIT] * 10 + [ar_hits.OTHER] * 90)
    ref = ar_hits.summarize(np.full(100, 2.0), cats)
    row = ar_hits.summarize(np.where(cats == ar_hits.AR_HIT, 3.0, 2.1), cats)
    gaps = ar_hits.gap_share(row, ref)
    assert gaps["AR_hits_gap"] == pytest.approx(1.0) and gaps["other_gap"] == pytest.approx(0.1)
    assert gaps["ar_share"] == pytest.approx(10 / 19)
    assert gaps["all_gap"] == pytest.approx(0.19)
    # ahead of the reference overall (AR hits +10, other 90 × −0.2 = −18): no gap, no share
    ahead = ar_hits.summarize(np.where(cats == ar_hits.AR_HIT, 3.0, 1.8), cats)
    assert math.isnan(ar_hits.gap_share(ahead, ref)["ar_share"])


def corpus_config(tmp_path, tokenizer):
    docs = toy_documents(tmp_path)
    config = {"data": {"class_path": "recall_lm.data.text_datamodule.TextDataModule",
                       "init_args": {"sources": str(docs), "tokenizer": tokenizer, "seq_len": 32,
                                     "val_fraction": 0.3, "cache_dir": str(tmp_path / "cache")}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def toy_model(tmp_path, name, mixer, seed):
    torch.manual_seed(seed)
    model = DecoderLM(ModelConfig(vocab_size=320, d_model=32, n_layers=1, mixer=mixer, mlp="swiglu"))
    return str(model.save_pretrained(tmp_path / name))


def test_command_end_to_end_on_a_bpe_corpus(tmp_path):
    config = corpus_config(tmp_path, "bpe:300")
    a = toy_model(tmp_path, "attn", "attention", 0)
    b = toy_model(tmp_path, "lin", "linear_attention", 1)
    out = tmp_path / "out"
    args = ["--ckpt", a, "--ckpt", b, "--config", str(config), "--max-windows", "6", "--out-dir", str(out)]
    ar_hits.main(args)
    rows = list(csv.DictReader((out / "ar_hits.csv").open()))
    assert [r["model"] for r in rows] == ["attn", "lin"]
    assert int(rows[0]["AR_hits_n"]) > 0  # documents repeat their line 3 times
    # 6 windows of 32 predictions, less the first token of each new document (one EOS at most per window:
    # a document is ~100 tokens)
    assert 6 * 32 - 6 <= int(rows[0]["all_n"]) < 6 * 32
    assert float(rows[0]["all_gap"]) == 0.0 and float(rows[1]["all_gap"]) != 0.0
    # the per-category means recombine into the mean over all tokens
    r = rows[1]
    parts = sum(float(r[f"{k}_loss"]) * int(r[f"{k}_n"]) for k in ("AR_hits", "frequent_repeats", "other")
                if int(r[f"{k}_n"]))
    assert parts / int(r["all_n"]) == pytest.approx(float(r["all_loss"]), rel=1e-5)
    text = (out / "ar_hits.md").read_text()
    assert "| lin |" in text and "share of the gap on AR hits" in text
    # the buckets by training count partition the repeats: AR hits (≤ threshold) and frequent repeats
    assert sum(int(r[k]) for k in r if k.startswith("repeats_") and k.endswith("_n")) == (
        int(r["AR_hits_n"]) + int(r["frequent_repeats_n"]))
    assert int(r["repeats_le1_n"]) == int(r["AR_hits_n"])  # auto threshold on a tiny corpus: 1
    # bits per byte: the same summed loss in bits over the bytes the 192 predicted tokens decode to
    n_bytes = int(re.search(r"\(([\d,]+) bytes", text).group(1).replace(",", ""))
    assert int(r["all_n"]) < n_bytes < 8 * int(r["all_n"])  # BPE merges: more than one byte per token
    for r in rows:
        assert float(r["bits_per_byte"]) == pytest.approx(
            float(r["all_loss"]) * int(r["all_n"]) / math.log(2) / n_bytes, rel=1e-5)
    assert (out / "ar_hits.png").stat().st_size > 3000


def test_refuses_byte_tokens_and_an_unknown_reference(tmp_path):
    a = toy_model(tmp_path, "attn", "attention", 0)
    with pytest.raises(SystemExit, match="byte tokenizer"):
        config = corpus_config(tmp_path, "byte")
        ar_hits.main(["--ckpt", a, "--config", str(config), "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--reference 'nope' is not one of"):
        ar_hits.main(["--ckpt", a, "--config", str(tmp_path / "config.yaml"), "--reference", "nope"])
