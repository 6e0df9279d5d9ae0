"""Bad input to train.py ends the run before training with one line naming the setting."""
import pytest

from recall_lm.training import cli as train_cli

QUICKSTART = str(train_cli.ROOT / "configs/quickstart.yaml")


def run_bad(tmp_path, capsys, *extra):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={tmp_path}",
                    "--trainer.max_steps=1", "--trainer.enable_progress_bar=false", *extra])
    message = exit_info.value.code if isinstance(exit_info.value.code, str) else capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists(), "training started"
    return message.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--model.architecture.mixer=foo"],
            "error: unknown mixer 'foo' in ModelConfig.mixer; known: attention",
        ),
        (["--data.init_args.batch_size=0"], "error: MQARDataModule.batch_size must be ≥ 1, got 0"),
        (
            ["--data.init_args.vocab_size=1024"],
            "error: the data's vocabulary (data.init_args.vocab_size: 1024) is "
            "larger than the model's model.architecture.vocab_size=512",
        ),
        (
            ["--model.architecture.mixer_kwargs={attention: {num_heads: 1, variant: zoology}}"],
            "error: mixer 'attention' got unknown argument(s) ['variant']",
        ),
        (["--model.lr_interval=batch"], "error: LanguageModelTask.lr_interval must be one of"),
        (["--model.architecture.norm=batchnorm"], "error: unknown ModelConfig.norm 'batchnorm'"),
        (["--model.architecture.init_std=-1"], "error: ModelConfig.init_std must be > 0, got -1"),
        (["--model.lr=-1"], "error: LanguageModelTask needs lr ≥ 0 and weight_decay ≥ 0, got -1"),
        (
            ["--model.betas=[1.5, 0.9]"],
            "error: LanguageModelTask.betas must be two numbers in [0, 1), got [1.5, 0.9]",
        ),
        (
            ["--model.compile=true", "--model.compile_backend=foo"],
            "error: LanguageModelTask.compile_backend 'foo' is not",
        ),
    ],
)
def test_bad_setting_is_one_line(tmp_path, capsys, extra, expected):
    assert run_bad(tmp_path, capsys, *extra).startswith(expected)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--data.init_args.train_slices=[{input_seq_len: 64, num_kv_pairs: 40, num_examples: 100}]"],
            "error: MQAR needs 2·num_kv_pairs·num_passes + 2·num_kv_pairs ≤ input_seq_len",
        ),
        (
            [
                "--model.architecture.mixer=deltanet",
                "--model.architecture.mixer_kwargs={deltanet: {chunk_size: 48}}",
            ],
            "error: chunk_size must be a power of two in [16, 256], got 48",
        ),
    ],
)
def test_bad_setting_found_when_fitting_starts_is_one_line(tmp_path, capsys, extra, expected, monkeypatch):
    monkeypatch.delenv("RECALL_LM_TRACEBACK", raising=False)
    message = run_bad(tmp_path, capsys, *extra)
    assert message.startswith(expected) and "(raised at " in message and "RECALL_LM_TRACEBACK=1" in message


@pytest.mark.parametrize("callback", ["ModelCheckpoint", "EarlyStopping"])
def test_a_monitored_metric_that_is_never_logged_is_named_before_training(tmp_path, capsys, callback):
    message = run_bad(tmp_path, capsys, f"--trainer.callbacks+=lightning.pytorch.callbacks.{callback}",
                      "--trainer.callbacks.monitor=val/ac")
    assert message.startswith(f"error: {callback}(monitor='val/ac'): this run logs no such metric; it logs [")
    assert "'val/acc/L64_kv4'" in message


def test_unknown_mlp_option_is_one_line(tmp_path, capsys):
    message = run_bad(
        tmp_path,
        capsys,
        "--model.architecture.mlp=swiglu",
        "--model.architecture.mlp_kwargs={hiden_size: 32}",
    )
    assert message.startswith("error: ") and "hiden_size" in message


def test_ckpt_path_that_is_not_a_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nothing.ckpt"
    assert run_bad(tmp_path, capsys, f"--ckpt_path={missing}") == (
        f"error: --ckpt_path {missing}: no such file (use a .ckpt a run wrote, or 'last')")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    assert run_bad(tmp_path, capsys, f"--ckpt_path={text}") == (
        f"error: --ckpt_path {text} is not a train.py checkpoint (not a torch.save zip archive)")
    import torch

    folder = tmp_path / "sharded.ckpt"
    folder.mkdir()
    assert run_bad(tmp_path, capsys, f"--ckpt_path={folder}") == (
        f"error: --ckpt_path {folder} is a folder but not a sharded checkpoint (no meta.pt)")
    weights = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, weights)
    assert run_bad(tmp_path, capsys, f"--ckpt_path={weights}") == (
        f"error: --ckpt_path {weights} is not a train.py checkpoint (it has no state_dict)")


TINY = [
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
    "--model.architecture.d_model=16",
    "--data.init_args.batch_size=32",
    "--data.init_args.train_slices=[{input_seq_len: 64, num_kv_pairs: 4, num_examples: 64}]",
    "--data.init_args.test_slices=[{input_seq_len: 64, num_kv_pairs: 4, num_examples: 32}]",
]


def fit(root, *extra):
    return train_cli.main(
        ["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={root}", *TINY, *extra]
    )


def last_step(root):
    import torch

    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")[
        "global_step"
    ]


def test_last_checkpoint_is_the_last_step_when_the_monitored_metric_did_not_improve(tmp_path):
    fit(tmp_path, "--trainer.max_epochs=3", "--model.lr=0.0")  # lr 0: val/acc the same every epoch
    assert last_step(tmp_path) == 6  # 2 steps an epoch; the monitored best is epoch 0's


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # max_steps stops before validating
def test_a_fresh_run_into_a_used_folder_and_a_resume_with_other_settings_are_refused(tmp_path, capsys):
    fit(tmp_path, "--trainer.max_steps=2")
    with pytest.raises(SystemExit) as refused:
        fit(tmp_path, "--trainer.max_steps=2")
    assert str(refused.value.code) == (
        f"error: {tmp_path}/checkpoints already holds an earlier run's checkpoints: "
        "resume it with --ckpt_path last, or train into another "
        "--trainer.default_root_dir"
    )
    with pytest.raises(SystemExit) as refused:
        fit(
            tmp_path,
            "--trainer.max_steps=4",
            "--ckpt_path=last",
            "--model.architecture.n_layers=3",
            "--model.lr=0.5",
        )
    message = str(refused.value.code)
    assert message.startswith(
        f"error: --ckpt_path last resumes {tmp_path}/checkpoints/last.ckpt, trained with"
    )
    assert "model.architecture.n_layers=3 (checkpoint: 2); model.lr=0.5 (checkpoint: 0.003)" in message
    explicit = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit, match=r"model.architecture.n_layers=3 \(checkpoint: 2\)"):
        fit(tmp_path, f"--ckpt_path={explicit}", "--model.architecture.n_layers=3")
    fit(tmp_path, "--trainer.max_steps=4", "--ckpt_path=last")  # the same settings resume
    assert last_step(tmp_path) == 4


def test_resume_with_nothing_to_resume_says_it_starts_afresh(tmp_path, capsys):
    fit(tmp_path, "--trainer.max_steps=2", "--ckpt_path=last")
    assert "--ckpt_path last: no checkpoint in" in capsys.readouterr().err and last_step(tmp_path) == 2


def test_the_run_folder_is_named_after_the_model_config_not_a_fragment():
    assert train_cli.default_run_dir(["configs/lm/based-360m.yaml", "configs/strategies/_ddp.yaml"]) == \
        "runs/lm/based-360m"
    assert train_cli.default_run_dir(["configs/strategies/_fsdp.yaml"]) == "runs/strategies/_fsdp"


def test_recall_report_names_the_step_of_an_earlier_validation(tmp_path, capsys):
    fit(tmp_path, "--trainer.max_epochs=2", "--trainer.max_steps=3")  # validates after step 2 only
    out = capsys.readouterr().out
    assert "recall accuracy of the last validation, at step 2 of 3" in out and "final recall" not in out


def test_old_class_path_in_a_config_names_the_new_one(tmp_path, capsys):
    """Before the code was imported as recall_lm.*, configs named data.mqar_datamodule.MQARDataModule; the
    bare name would load a second copy of the modules, so train.py refuses it in one line."""
    old = tmp_path / "old.yaml"
    old.write_text((train_cli.ROOT / "configs/quickstart.yaml").read_text()
                   .replace("recall_lm.data.mqar_datamodule", "data.mqar_datamodule"))
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["fit", "--config", str(old), f"--trainer.default_root_dir={tmp_path}"])
    assert exit_info.value.code == (f"error: {old} names data.mqar_datamodule.MQARDataModule, which is now "
                                    "recall_lm.data.mqar_datamodule.MQARDataModule")
    assert not (tmp_path / "checkpoints").exists()


def test_old_class_path_on_the_command_line_is_refused(tmp_path, capsys):
    message = run_bad(tmp_path, capsys, "--trainer.callbacks+=models.callbacks.Throughput")
    assert message == ("error: the argument --trainer.callbacks+=models.callbacks.Throughput names "
                       "models.callbacks.Throughput, which is now recall_lm.training.callbacks.Throughput")


def test_old_class_path_in_a_checkpoint_is_refused(tmp_path, capsys):
    import torch

    ckpt = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"_class_path": "models.lightning_module.LanguageModelTask"}},
        ckpt,
    )
    message = run_bad(tmp_path / "run", capsys, f"--ckpt_path={ckpt}")
    assert message == (
        f"error: --ckpt_path {ckpt} (hyper_parameters) names models.lightning_module.LanguageModelTask, "
        "which is now recall_lm.training.task.LanguageModelTask"
    )


def test_a_trainer_setting_lightning_refuses_is_one_line(tmp_path, capsys):
    assert run_bad(tmp_path, capsys, "--trainer.max_steps=-5").startswith(
        "error: `max_steps` must be a non-negative integer or -1")


def test_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lr: [0.1\ntrainer: {}\n")
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["fit", "--config", str(bad)])
    assert exit_info.value.code.startswith(f"error: --config {bad}:3:")
    assert "not valid YAML" in exit_info.value.code


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, capsys):
    """--model.lr 1e4 used to train every step at loss nan and exit 0."""
    message = run_bad(
        tmp_path, capsys, "--model.lr=1e4", "--trainer.max_steps=30", "--model.warmup_steps=0", *TINY
    )
    import re

    match = re.match(
        r"error: training stopped at step (\d+): (train/loss|the gradient norm) is (nan|inf) "
        r"at lr ([\d.e+]+); lower model.lr",
        message,
    )
    assert match, message
    assert 0 < int(match.group(1)) < 30 and 5e3 < float(match.group(4)) <= 1e4


def test_allow_nonfinite_trains_on(tmp_path):
    cli = train_cli.main(
        [
            "fit",
            "--config",
            QUICKSTART,
            f"--trainer.default_root_dir={tmp_path}",
            "--model.lr=1e4",
            "--model.warmup_steps=0",
            "--model.allow_nonfinite=true",
            "--trainer.max_steps=6",
            *TINY,
        ]
    )
    assert cli.trainer.global_step == 6


def test_the_private_lightning_and_wandb_api_used_here_still_exists(tmp_path):
    """training/cli.py overrides or sets these (listed in its CLI class's docstring)."""
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import WandbLogger

    for name in ("_parse_ckpt_path", "_run_subcommand", "_get"):
        assert callable(getattr(LightningCLI, name, None)), f"LightningCLI.{name} is gone"
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)  # no run starts until .experiment is read
    assert logger._experiment is None and isinstance(logger._wandb_init, dict) and hasattr(logger, "_id")


def test_the_old_model_model_key_names_its_new_name(tmp_path, capsys):
    """``model.model`` (the task's ModelConfig) is ``model.architecture`` now: old keys end in one line."""
    assert run_bad(tmp_path, capsys, "--model.model.d_model=32") == (
        "error: the argument --model.model.d_model is now --model.architecture.d_model")
    old = tmp_path / "old.yaml"
    old.write_text(
        (train_cli.ROOT / "configs/quickstart.yaml").read_text().replace("  architecture:", "  model:")
    )
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["fit", "--config", str(old), f"--trainer.default_root_dir={tmp_path}"])
    assert exit_info.value.code == f"error: {old}: model.model is now model.architecture"


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # max_steps stops before validating
def test_a_checkpoint_written_before_the_rename_resumes(tmp_path):
    import torch

    fit(tmp_path, "--trainer.max_steps=2")
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    hparams = checkpoint["hyper_parameters"]
    checkpoint["hyper_parameters"] = {("model" if k == "architecture" else k): v for k, v in hparams.items()}
    torch.save(checkpoint, path)
    with pytest.raises(SystemExit, match=r"model.architecture.n_layers=3 \(checkpoint: 2\)"):
        fit(tmp_path, "--trainer.max_steps=4", "--ckpt_path=last", "--model.architecture.n_layers=3")
    fit(tmp_path, "--trainer.max_steps=4", "--ckpt_path=last")
    assert last_step(tmp_path) == 4
