"""recall_lm.evals.sweeps.recall_claims: verdicts follow their stated rules, and missing runs say pending."""
from recall_lm.evals.sweeps import recall_claims as rc

SLICES = ("L64_kv4", "L128_kv32", "L256_kv64")


def row(mixer, d, lr, accs, state):
    return {
        "run": f"{mixer}-d_model={d}-lr={lr:g}",
        "point": {"mixer": mixer, "model.architecture.d_model": d, "model.lr": lr},
        "mixer": mixer,
        "d_model": d,
        "params": 100 * d,
        "steps": 10,
        "seconds": 5.0,
        "state_sizes": {"64": state // 4, "256": state},
        "state_bytes": {"64": state, "256": 4 * state},
        "metrics": {"val/acc": sum(accs) / 3, **{f"val/acc/{s}": a for s, a in zip(SLICES, accs)}},
    }


def rows():
    out = [row("attention", d, 3e-3, (1.0, 0.999, 0.995), 2 * 256 * d) for d in (64, 128)]
    out += [row("rwkv6", 64, 3e-3, (0.95, 0.5, 0.2), 9000), row("rwkv6", 64, 1e-3, (0.5, 0.1, 0.0), 9000)]
    out += [row(f"based_f{f}", 64, 3e-3, (1.0, 0.8, a), s) for f, a, s in ((8, 0.3, 3000), (16, 0.6, 9000),
                                                                            (24, 0.59, 20000))]
    out += [
        row("mom_gdn", 64, 3e-3, (1.0, 0.9, 0.7), 22000),
        row("mom_one_x5", 64, 3e-3, (1.0, 0.8, 0.5), 21000),
    ]
    return out


def test_verdicts_follow_the_rules():
    verdicts = {c: (v, e) for c, v, e in rc.claims(rc.cells(rows()))}
    attention = next(v for c, v in verdicts.items() if c.startswith("Attention"))
    assert attention[0] == "agree" and "0.995" in attention[1]
    gated = next(v for c, v in verdicts.items() if c.startswith("Gated"))
    assert gated[0] == "agree" and "rwkv6 0.950 → 0.200" in gated[1]  # the best lr (3e-3) is the one reported
    based = next(v for c, v in verdicts.items() if "BASED feature_dim" in c and "d_model 64" in c)
    assert based[0] == "agree"  # 0.60 → 0.59 is within the 0.02 slack
    assert any(v[0] == "pending" for c, v in verdicts.items() if "SWA window" in c)
    mom = next(v for c, v in verdicts.items() if c.startswith("Several"))
    assert mom[0] == "agree" and "0.700 vs one memory ×5 0.500" in mom[1]
    state = next(v for c, v in verdicts.items() if c.startswith("BASED, DeltaNet"))
    assert state[0] == "not testable at this scale"
    assert verdicts["Reading the context twice helps recurrent models (JRT)"][0] == "pending"


def test_jrt_verdict_compares_the_read_once_and_read_twice_slices():
    rs = [row("rwkv6", 64, 3e-3, (0.9, 0.5, 0.2), 9000), row("based_f16", 64, 3e-3, (1.0, 0.8, 0.6), 9000)]
    for r, (once, twice) in zip(rs, ((0.3, 0.5), (0.7, 0.75))):
        r["metrics"].update({"val/acc/L256_kv32": once, "val/acc/L256_kv32_x2": twice})
    verdict, evidence = next((v, e) for c, v, e in rc.claims(rc.cells(rs)) if "JRT" in c)
    assert (
        verdict == "agree" and "2 of 2 helped, 0 hurt" in evidence and "rwkv6 d64 0.300 → 0.500" in evidence
    )
    rs[1]["metrics"]["val/acc/L256_kv32_x2"] = 0.6  # read twice now hurts BASED
    assert next(v for c, v, e in rc.claims(rc.cells(rs)) if "JRT" in c) == "disagree"


def test_cells_that_did_not_learn_are_left_out_and_listed():
    rs = rows() + [row("retnet", 64, 3e-3, (0.02, 0.0, 0.0), 4000)]
    verdicts = {c: (v, e) for c, v, e in rc.claims(rc.cells(rs))}
    listed = next(e for c, (v, e) in verdicts.items() if c.startswith("(cells that did not learn"))
    assert "retnet d64 (0.020)" in listed
    gated = next(v for c, v in verdicts.items() if c.startswith("Gated"))
    assert (
        gated[0] == "agree"
        and "retnet 0.020" not in gated[1]
        and "retnet d64 did not learn (left out)" in gated[1]
    )


def test_a_falling_family_is_a_disagreement_and_markdown_lists_cells():
    bad = [r for r in rows() if r["point"]["mixer"] != "based_f24"] + [
        row("based_f24", 64, 3e-3, (1.0, 0.8, 0.2), 20000)
    ]
    based = next(v for c, v, e in rc.claims(rc.cells(bad)) if "BASED feature_dim" in c and "d_model 64" in c)
    assert based == "disagree"
    text = rc.markdown(rows(), "recall_map_cpu")
    assert "| attention | 128 | 0.003 |" in text and "| L256_kv64 |" in text.replace(" | time", " |")


def test_seeds_sweep_reruns_each_mixers_best_cell(tmp_path):
    import yaml

    from recall_lm.evals.sweeps import sweep as sw

    finished = [
        row("based_f8", 64, 3e-3, (1.0, 0.8, 0.3), 3000),
        row("based_f8", 128, 1e-3, (1.0, 0.9, 0.6), 6000),
        row("attention", 64, 3e-3, (1.0, 1.0, 1.0), 1000),
        row("attention", 128, 3e-3, (1.0, 1.0, 1.0), 2000),
    ]
    finished += [
        row(m, d, lr, (0.0, 0.0, 0.0), 1000)
        for m, d, lr in (
            ("based_f8", 64, 1e-3),
            ("based_f8", 128, 3e-3),
            ("attention", 64, 1e-3),
            ("attention", 128, 1e-3),
        )
    ]
    finished += [
        row("rwkv6", 64, 3e-3, (1.0, 1.0, 1.0), 1000)
    ]  # 1 of its 4 map runs: its best cell is not final
    best = rc.cells(finished)
    spec, waiting = rc.seeds_sweep(rc.ROOT / "configs" / "sweeps" / "recall_map_cpu.yaml", finished)
    assert "rwkv6" in waiting and "rwkv6" not in spec["base"] and "attention" not in waiting
    assert spec["base"]["based_f8"]["set"]["model.architecture.d_model"] == 128  # the better cell
    assert spec["base"]["based_f8"]["set"]["model.lr"] == 1e-3
    assert spec["base"]["based_f8"]["set"]["model.architecture.mixer_kwargs"]["based"]["feature_dim"] == 8
    assert (
        spec["base"]["attention"]["set"]["model.architecture.d_model"] == 64
    )  # a tie keeps the smaller width
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    points = sw.expand(sw.load_sweep(path), tmp_path / "runs", wandb=False)
    assert sorted(p.name for p in points) == ["seed1-attention", "seed1-based_f8"]
    assert "--seed_everything=1" in points[0].args
    spread = rc.seed_spread(rc.best_cells(best), [{**row("attention", 64, 3e-3, (1.0, 0.97, 0.97), 1000),
                                                   "point": {"mixer": "attention"}}])
    assert spread["attention"] == [1.0, 0.98]


def test_a_sweep_without_results_is_named(capsys):
    import pytest

    with pytest.raises(SystemExit):
        rc.main(["--sweep", "no_such_sweep"])
    assert "no_such_sweep" in capsys.readouterr().err


def test_a_claim_whose_cells_did_not_learn_is_not_testable():
    rs = [r for r in rows() if not r["point"]["mixer"].startswith("mom")]
    rs += [
        row("mom_gdn", 64, 3e-3, (0.01, 0.0, 0.0), 22000),
        row("mom_one_x5", 64, 3e-3, (0.0, 0.0, 0.0), 21000),
    ]
    verdicts = {c: (v, e) for c, v, e in rc.claims(rc.cells(rs))}
    mom = next(v for c, v in verdicts.items() if c.startswith("Several"))
    assert mom[0] == "not testable at this scale" and "did not learn" in mom[1]
    rs.append(row("retnet", 64, 3e-3, (0.02, 0.0, 0.0), 4000))
    gated = next(e for c, v, e in rc.claims(rc.cells(rs)) if c.startswith("Gated"))
    assert "retnet d64 did not learn (left out)" in gated


def test_seed_reruns_add_evidence_and_name_seed_dependent_onsets():
    """A rerun that learns where seed 0 did not is named in the markdown, and the MoM evidence quotes the
    reruns; the verdict itself stays on seed 0."""
    rs = [r for r in rows() if not r["point"]["mixer"].startswith("mom")]
    rs += [
        row("mom_gdn", 64, 3e-3, (0.01, 0.0, 0.0), 22000),
        row("mom_one_x5", 64, 3e-3, (0.0, 0.0, 0.0), 21000),
    ]
    reruns = [
        dict(
            row("mom_one_x5", 64, 3e-3, (0.99, 0.9, 0.8), 21000),
            point={
                "mixer": "mom_one_x5",
                "variant": "seed1",
                "model.architecture.d_model": 64,
                "model.lr": 3e-3,
            },
        ),
        dict(
            row("attention", 128, 3e-3, (1.0, 1.0, 0.99), 65536),
            point={
                "mixer": "attention",
                "variant": "seed1",
                "model.architecture.d_model": 128,
                "model.lr": 3e-3,
            },
        ),
    ]
    mom = next((v, e) for c, v, e in rc.claims(rc.cells(rs), reruns) if c.startswith("Several"))
    assert (
        mom[0] == "not testable at this scale"
        and "mom_one_x5 with seed1: L64 kv4 0.990, L256 kv64 0.800" in mom[1]
    )
    text = rc.markdown(rs, "toy", reruns)
    assert "Learnt with one seed and not the other (L64 kv4 ≥ 0.5 for one only): mom_one_x5." in text


def test_mom_probe_at_a_wider_width_decides_the_mom_claim():
    """When the map's MoM cells did not learn, the probe sweep's top2 vs one_x5 runs decide the claim,
    and a probe variant that did not learn leaves it not testable."""
    rs = [r for r in rows() if not r["point"]["mixer"].startswith("mom")]
    rs += [
        row("mom_gdn", 64, 3e-3, (0.01, 0.0, 0.0), 22000),
        row("mom_one_x5", 64, 3e-3, (0.0, 0.0, 0.0), 21000),
    ]

    def probe(variant, accs, state):
        return dict(
            row("mom", 128, 3e-3, accs, state),
            point={"variant": variant, "model.architecture.d_model": 128, "model.lr": 3e-3},
        )

    def mom(probes):
        return next((v, e) for c, v, e in rc.claims(rc.cells(rs), None, probes) if c.startswith("Several"))

    verdict, evidence = mom(
        [probe("top2", (1.0, 0.99, 0.958), 86400), probe("one_x5", (1.0, 0.99, 0.988), 84864)]
    )
    assert verdict == "disagree (probe)" and "routed top-2 0.958 < one memory 0.988" in evidence
    assert (
        mom([probe("top2", (1.0, 0.99, 0.99), 86400), probe("one_x5", (1.0, 0.9, 0.9), 84864)])[0]
        == "agree (probe)"
    )
    assert mom([probe("top2", (0.0, 0.0, 0.0), 86400), probe("one_x5", (1.0, 0.9, 0.9), 84864)])[0] == \
        "not testable at this scale"


def test_learning_rate_window_needs_an_edge_between_adjacent_rates():
    def grid(mixer, accs):
        rates = (1e-3, 2.5e-3, 6.3e-3, 1.5e-2)
        return [row(mixer, 64, lr, (a, a / 2, 0.0), 3000) for lr, a in zip(rates, accs)]

    assert rc.lr_window([])[1] == "pending"
    rows = grid("gated_deltanet", (0.0, 0.9, 0.95, 0.1)) + grid("mamba2", (0,) * 4)
    _, verdict, evidence = rc.lr_window(rows)
    assert verdict == "agree" and "edge 0.001 → 0.0025, 0.0063 → 0.015" in evidence
    assert "Learnt at no rate in 1,000 steps (no window seen): mamba2 d64" in evidence
    verdict = rc.lr_window(grid("gated_deltanet", (0.0, 0.0, 0.9, 0.95)))[1]
    assert verdict == "agree (one edge seen; the other lies beyond the grid)"
    assert rc.lr_window(grid("gated_deltanet", (0.9,) * 4))[1] == "disagree"  # learns at every rate
    assert rc.lr_window(grid("mamba2", (0.0,) * 4))[1] == "not testable at this scale"


def test_variants_sweep_trains_each_best_cell_on_forgetting_and_compositional_mqar(tmp_path):
    import yaml

    from recall_lm.evals.sweeps import sweep as sw

    cells = [(d, lr, a) for d in (64, 128) for lr, a in ((3e-3, 1.0), (1e-3, 0.5))]
    finished = [row("attention", d, lr, (a, a, a), 1000) for d, lr, a in cells]
    finished += [row("mamba2", d, lr, (0.01, 0.0, 0.0), 1000) for d, lr, _ in cells]  # never learnt
    spec, waiting = rc.mqar_variants_sweep(rc.ROOT / "configs" / "sweeps" / "recall_map_cpu.yaml", finished)
    assert list(spec["base"]) == ["attention"] and "rwkv6" in waiting and "mamba2" not in waiting
    assert not any(k.startswith("data.") for k in spec["fixed"])  # the probe's data replaces the map's slices
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    points = sw.expand(sw.load_sweep(path), tmp_path / "runs", wandb=False)
    assert sorted(p.name for p in points) == ["compositional-attention", "forgetting-attention"]
    data = next(a for a in points[0].args if a.startswith("--data="))
    assert "ForgettingMQARDataModule" in data and "num_updates" in data
    sw.check_train_args(points)  # train.py's own parser accepts both probes' data over the map's config


def test_variant_and_long_tables_read_their_rows():
    fgt = row("kda", 128, 3e-3, (0.0, 0.0, 0.0), 9000)
    fgt["point"] = {"variant": "forgetting", "mixer": "kda"}
    fgt["train_args"] = ["--model.lr=0.003"]
    fgt["metrics"] = {"val/acc": 0.7, "val/acc/fmqar_L128_kv8_u4": 0.5, "val/acc/fmqar_L64_kv4_u2": 0.9}
    long = {**row("mamba2", 64, 1e-2, (0.3, 0.1, 0.0), 2600), "steps": 4000, "val_acc_by_epoch": [0.0, 0.2]}
    text = "\n".join(rc.extra_tables("toy", [fgt], [long], ["mamba2"]))
    assert "Not trained: mamba2 (their best cell did not learn plain MQAR)" in text
    assert "| forgetting MQAR | d_model | lr | fmqar_L64_kv4_u2 | fmqar_L128_kv8_u4 | mean |" in text
    assert "| kda | 128 | 0.003 |" in text and "| 0.700 |" in text
    assert "| mamba2 | 64 | 0.01 | 4000 | 0.300 |" in text and "0.000 0.200 |" in text
    assert rc.extra_tables("toy", None, None) == []


def test_log_linear_and_fox_verdicts():
    """Log-linear vs Mamba-2 is decided only where either learnt (L64 kv4 ≥ LEARNT); FoX needs ≥ 0.99 on
    every slice. Neither learnt anywhere: not testable."""
    def verdict(rows_, prefix):
        return next((v, e) for c, v, e in rc.claims(rc.cells(rows_)) if c.startswith(prefix))

    none = [row(m, 64, 3e-3, (0.0, 0.0, 0.0), 3000) for m in ("mamba2", "loglinear_mamba2")]
    assert verdict(none, "Log-linear")[0] == "not testable at this scale"
    learnt = none + [row("mamba2", 128, 3e-3, (0.2, 0.0, 0.0), 5000),
                     row("loglinear_mamba2", 128, 3e-3, (0.9, 0.3, 0.1), 30000)]
    v, e = verdict(learnt, "Log-linear")
    assert v == "agree" and "d64: log-linear 0.000" in e and "neither learnt" in e
    worse = none + [row("mamba2", 128, 3e-3, (0.9, 0.5, 0.3), 5000),
                    row("loglinear_mamba2", 128, 3e-3, (0.9, 0.3, 0.1), 30000)]
    assert verdict(worse, "Log-linear")[0] == "disagree"
    assert verdict([row("fox", 64, 3e-3, (1.0, 0.999, 0.991), 9000)], "FoX")[0] == "agree"
    assert verdict([row("fox", 64, 3e-3, (1.0, 0.999, 0.9), 9000)], "FoX")[0] == "disagree"
    assert verdict(rows(), "FoX")[0] == "pending"


def test_a_longer_run_stands_in_for_a_cell_that_learnt_only_there():
    """Mamba-2 d64 failed in the map; its 4,000-step rerun learnt and joins the gated-recurrence claim
    (a rerun that did not learn either still reads 'did not learn')."""
    base = rows() + [row("mamba2", 64, 3e-3, (0.01, 0.0, 0.0), 2600),
                     row("retnet", 64, 3e-3, (0.02, 0.0, 0.0), 4000)]
    long = [{**row("mamba2", 64, 1e-2, (0.9, 0.5, 0.15), 2600), "steps": 4000},
            {**row("retnet", 64, 1e-2, (0.2, 0.0, 0.0), 4000), "steps": 4000}]
    gated = next((v, e) for c, v, e in rc.claims(rc.cells(base), long_rows=long) if c.startswith("Gated"))
    assert gated[0] == "agree" and "mamba2 (4,000 steps) 0.900 → 0.150" in gated[1]
    assert "retnet d64 did not learn (left out)" in gated[1] and "mamba2 d64 did not learn" not in gated[1]
    long[0]["metrics"]["val/acc/L256_kv64"] = 0.8  # a drop of 0.1 < 0.3: the claim no longer holds for it
    gated = next((v, e) for c, v, e in rc.claims(rc.cells(base), long_rows=long) if c.startswith("Gated"))
    assert gated[0] == "disagree"
