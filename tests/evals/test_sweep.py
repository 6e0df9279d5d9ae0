"""The sweep runner: grid expansion, skip-done, best-lr selection, tables, plots, the W&B sweep YAML
(parsed back and fed to train.py's parser), and one real tiny sweep (slow)."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recall_lm.evals.sweeps import plots as sweep_plots
from recall_lm.evals.sweeps import sweep as sw
from recall_lm.evals.sweeps import wandb_sweep

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "sweeps" / "smoke.yaml"


def write_sweep(tmp_path, **spec) -> Path:
    base = {
        "name": "t",
        "base": {"attention": "configs/mqar/attention.yaml", "based": "configs/mqar/based.yaml"},
        "grid": {
            "mixer": ["attention", "based"],
            "model.architecture.d_model": [32, 64, 128],
            "model.lr": [1.0e-3, 3.0e-3],
        },
    }
    base.update(spec)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def test_expand_product_names_and_dotted_keys(tmp_path):
    slices = [[{"input_seq_len": 64, "num_kv_pairs": 4, "num_examples": 64}],
              [{"input_seq_len": 128, "num_kv_pairs": 8, "num_examples": 64}]]
    sweep = sw.load_sweep(
        write_sweep(
            tmp_path,
            fixed={"trainer.max_steps": 7},
            grid={
                "mixer": ["attention", "based"],
                "model.architecture.d_model": [32, 64, 128],
                "model.lr": [1.0e-3, 3.0e-3],
                "data.init_args.train_slices": slices,
            },
        )
    )
    points = sw.expand(sweep, tmp_path / "runs")
    assert len(points) == 2 * 3 * 2 * 2
    assert len({p.name for p in points}) == len(points)
    first = points[0]
    assert first.name == "attention-d_model=32-lr=0.001-train_slices=0"
    assert points[-1].name == "based-d_model=128-lr=0.003-train_slices=1"
    assert first.config == "configs/mqar/attention.yaml" and points[-1].config == "configs/mqar/based.yaml"
    args = first.args
    assert args[:2] == ["--config", "configs/mqar/attention.yaml"]
    assert (
        "--trainer.max_steps=7" in args
        and "--model.architecture.d_model=32" in args
        and "--model.lr=0.001" in args
    )
    assert f"--data.init_args.train_slices={json.dumps(slices[0])}" in args
    assert f"--trainer.default_root_dir={tmp_path / 'runs' / first.name}" in args
    logger = json.loads(next(a for a in args if a.startswith("--trainer.logger=")).split("=", 1)[1])[0]
    assert logger["init_args"]["group"] == "t"
    assert logger["init_args"]["tags"] == ["attention", "d_model=32", "lr=0.001", "train_slices=0"]
    # the arguments are what train.py's parser takes (builds without training)
    from recall_lm.training import cli as train_cli

    cli = train_cli.main(points[-1].args, run=False)
    assert cli.model.config.d_model == 128 and cli.model.hparams.lr == 3e-3
    assert cli.model.config.mixer == ["base_conv", "based"] and cli.trainer.max_steps == 7
    assert [s.input_seq_len for s in cli.datamodule.train_slices] == [128]


def test_exclude_and_bad_files(tmp_path):
    sweep = sw.load_sweep(
        write_sweep(tmp_path, exclude=[{"mixer": "based", "model.architecture.d_model": 128}])
    )
    names = [p.name for p in sw.expand(sweep, tmp_path)]
    assert len(names) == 10 and not any(n.startswith("based-d_model=128") for n in names)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        sw.load_sweep(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match=r"\['rwkv6'\]"):
        sw.load_sweep(write_sweep(tmp_path, grid={"mixer": ["rwkv6"], "model.lr": [1e-3]}))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        sw.load_sweep(write_sweep(tmp_path, base={"attention": "configs/missing.yaml"},
                                  grid={"mixer": ["attention"]}))
    with pytest.raises(ValueError, match="both fixed and in the grid"):
        sw.load_sweep(write_sweep(tmp_path, fixed={"model.lr": 1e-3}))


def test_variants_are_named_bundles_of_settings(tmp_path):
    """An ablation: each variant sets its own keys; the variant axis comes first and names the runs."""
    sweep = sw.load_sweep(
        write_sweep(
            tmp_path,
            base="configs/zoology/based.yaml",
            fixed={"trainer.max_steps": 3},
            grid={"model.lr": [1e-3, 3e-3]},
            variants={
                "zoology": {},
                "rmsnorm": {"model.architecture.norm": "rmsnorm"},
                "betas": {"model.betas": [0.9, 0.95]},
            },
        )
    )
    points = sw.expand(sweep, tmp_path / "runs", wandb=False)
    assert [p.name for p in points][:3] == ["zoology-lr=0.001", "zoology-lr=0.003", "rmsnorm-lr=0.001"]
    rms = points[2]
    assert "--model.architecture.norm=rmsnorm" in rms.args and rms.values == {
        "variant": "rmsnorm",
        "model.lr": 1e-3,
    }
    assert not any(a.startswith("--model.architecture.norm") for a in points[0].args)
    assert "--model.betas=[0.9, 0.95]" in points[4].args
    from recall_lm.training import cli as train_cli

    cli = train_cli.main(rms.args, run=False)
    assert cli.model.config.norm == "rmsnorm" and cli.trainer.max_steps == 3
    with pytest.raises(ValueError, match="set by variants and also fixed"):
        sw.load_sweep(
            write_sweep(
                tmp_path,
                base="configs/zoology/based.yaml",
                grid={"model.lr": [1e-3]},
                fixed={"model.architecture.norm": "rmsnorm"},
                variants={"a": {"model.architecture.norm": "x"}},
            )
        )
    with pytest.raises(ValueError, match="variant names"):
        sw.load_sweep(write_sweep(tmp_path, base="configs/zoology/based.yaml", grid={"model.lr": [1e-3]},
                                  variants={"a b": {}}))


def test_base_entries_can_set_keys_of_their_own(tmp_path):
    """One config under two mixer names (e.g. SWA at two windows): a base entry {config, set}."""
    kwargs = {"base_conv": {"variant": "zoology", "kernel_size": 3, "activation": None},
              "swa": {"num_heads": 1, "window_size": 8, "rotary": False, "bias": True}}
    sweep = sw.load_sweep(write_sweep(tmp_path, base={
        "swa_w32": "configs/zoology/swa.yaml",
        "swa_w8": {"config": "configs/zoology/swa.yaml", "set": {"model.architecture.mixer_kwargs": kwargs}}},
        grid={"mixer": ["swa_w32", "swa_w8"], "model.lr": [1e-3]}))
    w32, w8 = sw.expand(sweep, tmp_path / "runs", wandb=False)
    assert w8.config == w32.config == "configs/zoology/swa.yaml"
    assert not any(a.startswith("--model.architecture.mixer_kwargs") for a in w32.args)
    from recall_lm.training import cli as train_cli

    assert train_cli.main(w8.args, run=False).model.config.mixer_kwargs["swa"]["window_size"] == 8
    with pytest.raises(ValueError, match="base entry 'x'"):
        sw.load_sweep(write_sweep(tmp_path, base={"x": {"config": "configs/zoology/swa.yaml", "sets": {}}},
                                  grid={"mixer": ["x"]}))


def row(mixer, d, lr, acc, slices=None, state=1000):
    return {
        "run": f"{mixer}-d_model={d}-lr={lr:g}",
        "point": {"mixer": mixer, "model.architecture.d_model": d, "model.lr": lr},
        "mixer": mixer,
        "d_model": d,
        "params": 10 * d,
        "state_sizes": {"64": state, "128": 2 * state},
        "state_bytes": {"64": 4 * state, "128": 8 * state},
        "steps": 5,
        "seconds": 1.0,
        "metrics": {"val/acc": acc, **{f"val/acc/{k}": v for k, v in (slices or {}).items()}},
    }


def test_best_lr_selection():
    rows = [row("a", 32, 1e-3, 0.4), row("a", 32, 3e-3, 0.7), row("a", 32, 1e-2, float("nan")),
            row("a", 64, 1e-3, 0.9), row("a", 64, 3e-3, 0.9),  # a tie keeps the first run
            row("b", 32, 1e-3, float("nan")), row("b", 32, 3e-3, 0.0)]
    best = {(r["mixer"], r["d_model"]): r for r in sw.best_lr(rows)}
    assert set(best) == {("a", 32), ("a", 64), ("b", 32)}
    assert best[("a", 32)]["point"]["model.lr"] == 3e-3 and best[("a", 32)]["lrs_tried"] == 3
    assert best[("a", 64)]["point"]["model.lr"] == 1e-3
    assert best[("b", 32)]["point"]["model.lr"] == 3e-3  # NaN (diverged) loses to 0.0


def test_best_lr_by_lowest_validation_loss():
    """Language-model sweeps (``select: val/loss``) keep the lowest final loss; NaN (diverged) loses."""
    rows = [row("a", 32, lr, 0.5) for lr in (1e-3, 3e-3, 1e-2)]
    for r, loss in zip(rows, (3.2, 3.1, float("nan"))):
        r["metrics"]["val/loss"] = loss
    assert sw.best_lr(rows, select="val/loss")[0]["point"]["model.lr"] == 3e-3
    rows[1]["metrics"]["val/acc"] = 0.9  # accuracy alone would pick the other way round
    rows[0]["metrics"]["val/acc"] = 0.95
    assert sw.best_lr(rows)[0]["point"]["model.lr"] == 1e-3
    assert sw.best_lr(rows, select="val/loss")[0]["point"]["model.lr"] == 3e-3


def test_select_must_be_a_known_metric(tmp_path):
    path = tmp_path / "s.yaml"
    spec = "name: s\nbase: configs/mqar/attention.yaml\ngrid: {model.lr: [0.001]}\nselect: "
    path.write_text(spec + "val/ppl\n")
    with pytest.raises(ValueError, match="'select' is one of"):
        sw.load_sweep(path)
    path.write_text(spec + "val/loss\n")
    assert sw.load_sweep(path).select == "val/loss"


def synthetic_rows():
    out = []
    for mixer, base in (("attention", 0.9), ("based", 0.5)):
        for d in (32, 64):
            for lr in (1e-3, 3e-3):
                acc = base + (0.05 if lr == 3e-3 else 0) + (0.02 if d == 64 else 0)
                out.append(
                    row(
                        mixer,
                        d,
                        lr,
                        acc,
                        {"L64_kv4": acc, "L128_kv16": acc - 0.1, "L64_kv16": acc - 0.05},
                        state=d * (100 if mixer == "attention" else 10),
                    )
                )
    return out


def test_writers_and_plots(tmp_path):
    sweep = sw.load_sweep(
        write_sweep(
            tmp_path,
            grid={
                "mixer": ["attention", "based"],
                "model.architecture.d_model": [32, 64],
                "model.lr": [1e-3, 3e-3],
            },
        )
    )
    paths = sw.write_results(synthetic_rows(), sweep, tmp_path / "out", ["settings line"])
    lines = paths["results.md"].read_text().splitlines()
    header = next(line for line in lines if line.startswith("| run"))
    assert header.index("acc L64_kv4") < header.index("acc L64_kv16") < header.index("acc L128_kv16")
    assert (
        "| attention-d_model=64-lr=0.003 | attention | 64 | 0.003 |  | 640 | 6,400 | 12,800 | 51,200 "
        "| 0.970 | 0.970 | 0.920 | 0.870 | 5 | 1.0 |"
        in lines
    )  # no seed recorded
    assert "state bytes L=128" in header
    assert "settings line" in lines
    assert (
        json.loads((tmp_path / "out" / "runs" / "attention-d_model=64-lr=0.003.json").read_text())["d_model"]
        == 64
    )
    table = list(csv.reader(open(paths["results.csv"])))
    assert len(table) == 1 + 8 and table[0][:5] == ["run", "mixer", "d_model", "lr", "seed"]
    best = list(csv.DictReader(open(paths["best_lr.csv"])))
    assert [(b["mixer"], b["d_model"], b["lr"], b["lrs_tried"]) for b in best] == [
        ("attention", "32", "0.003", "2"), ("attention", "64", "0.003", "2"),
        ("based", "32", "0.003", "2"), ("based", "64", "0.003", "2")]
    pngs = sweep_plots.plot_all(synthetic_rows(), sweep, tmp_path / "out")
    assert sorted(pngs) == ["acc_vs_dmodel.png", "acc_vs_state.png", "acc_vs_time.png"]
    import matplotlib.image

    for path in pngs.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[1] > 1000 and image.std() > 0.05  # three panels side by side, not blank


def test_skip_done_and_collect(tmp_path, monkeypatch, capsys):
    """Runs with a result.json are skipped; only the others reach the launcher; tables cover all."""
    sweep_file = write_sweep(
        tmp_path,
        grid={"mixer": ["attention", "based"], "model.architecture.d_model": [32], "model.lr": [1e-3, 3e-3]},
    )
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    rows = {r["run"]: r for r in synthetic_rows()}
    planned = {
        r.meta["run"]: r for r in sw.train_runs(sw.expand(sw.load_sweep(sweep_file), runs_dir), runs_dir)
    }
    done = planned["attention-d_model=32-lr=0.001"]
    done.result.parent.mkdir(parents=True)
    done.result.write_text(json.dumps({**rows["attention-d_model=32-lr=0.001"], "train_args": done.args}))
    launched = []

    def fake_run_many(runs, jobs, on_done=None, env=None):
        for run in runs:
            launched.append(run.meta["run"])
            run.result.parent.mkdir(parents=True, exist_ok=True)
            run.result.write_text(json.dumps({**rows[run.meta["run"]], "train_args": run.args}))
        return []

    monkeypatch.setattr(sw, "run_many", fake_run_many)
    argv = [str(sweep_file), "--runs-dir", str(runs_dir), "--out", str(out), "--jobs", "2"]
    sw.main(argv + ["--dry-run"])
    assert "4 runs, 1 done, 0 running elsewhere, 3 to train" in capsys.readouterr().out and not launched
    sw.main(argv)
    assert launched == [
        "attention-d_model=32-lr=0.003",
        "based-d_model=32-lr=0.001",
        "based-d_model=32-lr=0.003",
    ]
    assert len(list(csv.reader(open(out / "results.csv")))) == 5
    assert "Trained 3 runs" in (out / "results.md").read_text()
    for run in ("attention-d_model=32-lr=0.003", "based-d_model=32-lr=0.001", "based-d_model=32-lr=0.003"):
        planned[run].result.unlink()
        (out / "runs" / f"{run}.json").unlink()  # the committed copy counts as done too
    launched.clear()
    sw.main(argv + ["--first", "model.lr=0.003"])  # the lr 3e-3 points before the rest
    assert launched == [
        "attention-d_model=32-lr=0.003",
        "based-d_model=32-lr=0.003",
        "based-d_model=32-lr=0.001",
    ]
    with pytest.raises(SystemExit, match="not grid keys"):
        sw.main(argv + ["--first", "lr=0.003"])
    launched.clear()
    sw.main(argv)  # everything done: nothing launched, tables rebuilt
    assert launched == [] and (out / "acc_vs_state.png").exists() and (out / "acc_vs_time.png").exists()
    # a finished run whose recorded settings differ from the sweep file's is not silently reused
    stale = json.loads(done.result.read_text())
    stale["train_args"] = [a.replace("--model.lr=0.001", "--model.lr=0.1") for a in stale["train_args"]]
    done.result.write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match="attention-d_model=32-lr=0.001.*other settings"):
        sw.main(argv)
    assert launched == []


def test_wandb_yaml_round_trip(tmp_path):
    """The emitted YAML parses; ${args} expanded as the W&B agent does it gives command lines that
    train.py's parser accepts, with the grid values in the built model."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from recall_lm.training import cli as train_cli

    out = tmp_path / "sweep.yaml"
    sw.main([str(SMOKE), "--wandb-yaml", str(out)])
    spec = yaml.safe_load(out.read_text())
    assert spec["method"] == "grid" and spec["program"] == "train.py"
    assert list(spec["parameters"])[0] == "config"
    combos = wandb_sweep.wandb_combinations(spec)
    smoke = sw.load_sweep(SMOKE)
    assert len(combos) == math.prod(len(v) for v in smoke.grid.values())
    for combo in combos:
        flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in combo.items()}})["args"]
        command = [c for part in spec["command"] for c in (flags if part == "${args}" else [part])]
        assert command[:3] == ["${env}", "${interpreter}", "${program}"] and command[3] == "fit"
        assert wandb_sweep.wandb_command(spec, combo) == ["python", "train.py", *command[3:]]
        cli = train_cli.main(command[4:], run=False)
        assert (
            cli.model.config.mixer
            == yaml.safe_load(open(ROOT / combo["config"]))["model"]["architecture"]["mixer"]
        )
        assert cli.model.config.d_model == combo["model.architecture.d_model"]
        assert cli.model.hparams.lr == combo["model.lr"]
        assert (
            cli.model.config.vocab_size == 64 and cli.trainer.max_steps == 4
        )  # the fixed keys follow ${args}
        assert any(type(lg).__name__ == "WandbLogger" for lg in cli.trainer.loggers)
    torchrun = yaml.safe_load(yaml.safe_dump(wandb_sweep.wandb_sweep_spec(smoke, torchrun=4)))
    assert torchrun["command"][:4] == ["${env}", "torchrun", "--nproc_per_node=4", "${program}"]
    assert "--trainer.devices=4" in torchrun["command"]


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_path):
    """configs/sweeps/smoke.yaml for real: two train.py processes of 4 steps, then tables and plots."""
    env = dict(os.environ, WANDB_MODE="disabled")
    cmd = [
        sys.executable,
        "-m",
        "recall_lm.evals.sweeps.sweep",
        str(SMOKE),
        "--jobs",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert sorted(r["mixer"] for r in results) == ["attention", "based"]
    assert all(r["steps"] == "4" and 0 <= float(r["val/acc"]) <= 1 for r in results)
    assert {"acc L16_kv2", "acc L32_kv4", "state L=32"} <= set(results[0])
    for name in ("results.md", "best_lr.md", "acc_vs_dmodel.png", "acc_vs_state.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "2 done, 0 running elsewhere, 0 to train" in again.stdout


def test_the_probes_go_through_a_sweep_end_to_end(tmp_path):
    """Passkey and set disjointness (the probe contract's other slices) train, report their length and
    accuracy per slice, and fill the sweep's tables like MQAR."""
    cmd = [
        sys.executable,
        "-m",
        "recall_lm.evals.sweeps.sweep",
        str(ROOT / "configs/sweeps/smoke_probes.yaml"),
        "--jobs",
        "1",
        "--no-wandb",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["mixer"]: r for r in csv.DictReader(open(tmp_path / "out" / "results.csv"))}
    assert set(results) == {"passkey", "set_disjointness"} and all(
        r["steps"] == "4" for r in results.values()
    )
    assert 0 <= float(results["passkey"]["acc pk_L32_d0.5"]) <= 1
    assert 0 <= float(results["set_disjointness"]["acc sd_A2_B4"]) <= 1
    runs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")}
    assert runs["passkey-d_model=16-lr=0.001"]["state_at_len"] == 32  # the slices' seq_len
    assert (tmp_path / "out" / "acc_vs_state.png").stat().st_size > 0


def test_running_elsewhere_is_left_alone(tmp_path):
    """A run whose .running marker names a live process is busy; a dead pid or no marker is not."""
    from recall_lm.evals.sweeps.train_runs import TrainRun, is_running

    run = TrainRun([], tmp_path / "r" / "result.json", tmp_path / "r" / "train.log")
    assert not is_running(run)
    run.result.parent.mkdir()
    marker = tmp_path / "r" / "result.running"
    marker.write_text(f"{os.getpid()}\n")
    assert is_running(run)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    marker.write_text(f"{finished.pid}\n")
    assert not is_running(run)


def test_run_setting_reads_grid_then_command_line_then_config():
    """The tables' d_model / lr / seed columns come from the grid point, else the recorded train.py
    arguments (last override wins), else the run's config file."""
    r = {"point": {"variant": "seed1"}, "config": "configs/zoology/mom.yaml",
         "train_args": ["--model.lr=0.001", "--seed_everything=1", "--model.lr=0.003"]}
    assert sw.run_setting(r, "model.lr") == 0.003 and sw.run_setting(r, "seed_everything") == 1
    assert sw.run_setting(r, "model.architecture.d_model") == 64  # configs/zoology/mom.yaml's own value
    assert (
        sw.run_setting({"point": {"model.lr": 0.01}, "train_args": ["--model.lr=0.003"]}, "model.lr") == 0.01
    )
    assert sw.run_setting({"point": {}}, "seed_everything") is None


def test_a_key_train_py_refuses_stops_the_sweep_before_training(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(sw, "run_many", lambda runs, *a, **k: trained.extend(runs))
    path = write_sweep(tmp_path, grid={"mixer": ["attention"], "model.lrr": [1.0e-3]})
    with pytest.raises(SystemExit) as stop:
        sw.main(
            [str(path), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-wandb"]
        )
    assert "train.py refuses its arguments" in str(stop.value.code) and "model.lrr" in str(stop.value.code)
    assert not trained
    with pytest.raises(SystemExit, match="model.lrr"):
        sw.main([str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs"), "--no-wandb"])


COMMITTED = ROOT / "evals/results/sweeps/recall_map_cpu"


def test_committed_runs_are_done_under_todays_key_names_and_a_new_row_trains_alone(tmp_path):
    """On a fresh clone (no runs/), the committed per-run results are the done markers: recorded with the
    old ``--model.model.d_model`` key, they still match the sweep file, and a new grid value plans only
    its own runs."""
    sweep = sw.load_sweep(ROOT / "configs/sweeps/recall_map_cpu.yaml")
    runs = sw.train_runs(sw.expand(sweep, tmp_path / "runs", wandb=False), tmp_path / "runs")
    found = [sw.finished_result(r, COMMITTED) for r in runs]
    # 59 from 2026-12-01; 12 (KDA, Gated DeltaProduct, Mamba-3) and 8 (FoX, log-linear Mamba-2) on 12-07
    assert len(runs) == 79 and all(found)
    assert all(sw.same_settings(path, run) for path, run in zip(found, runs))
    recorded = json.loads(found[0].read_text())
    assert any(a.startswith("--model.model.d_model=") for a in recorded["train_args"])  # as it was trained
    data = yaml.safe_load((ROOT / "configs/sweeps/recall_map_cpu.yaml").read_text())
    data["grid"]["model.lr"].append(1.0e-2)
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump(data))
    wider = sw.train_runs(sw.expand(sw.load_sweep(tmp_path / "wider.yaml"), tmp_path / "runs", wandb=False),
                          tmp_path / "runs")
    todo = [r for r in wider if not sw.finished_result(r, COMMITTED)]
    assert len(todo) == len(wider) - 79 > 0 and {r.meta["point"]["model.lr"] for r in todo} == {1.0e-2}


def test_collect_rebuilds_the_tables_from_the_committed_files_alone(tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(COMMITTED, out)
    sw.main([str(ROOT / "configs/sweeps/recall_map_cpu.yaml"), "--collect", "--no-wandb",
             "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert (out / "results.csv").read_text() == (COMMITTED / "results.csv").read_text()
    assert (out / "best_lr.csv").read_text() == (COMMITTED / "best_lr.csv").read_text()
    assert "Trained 31 runs on 2026-12-01" in (out / "results.md").read_text()  # the committed invocation log


def test_validation_rows_read_each_validation_with_its_step(tmp_path):
    """Training rows have no val/loss; each validation row gives (steps done, value) in order (the CSV's
    step column counts from 0: a validation after 50 steps is logged at step 49)."""
    from recall_lm.evals.sweeps.train_runs import validation_history, validation_rows

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/acc,val/loss\n0,24,7.1,,\n0,49,6.2,0.31,5.9\n0,74,5.5,,\n1,99,5.0,0.35,5.25\n"
    )
    assert validation_rows(tmp_path, "val/loss") == [(50, 5.9), (100, 5.25)]
    assert validation_history(tmp_path) == [0.31, 0.35]
    assert validation_rows(tmp_path / "absent") == []
