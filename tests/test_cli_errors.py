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


@pytest.mark.parametrize("extra, expected", [
    (["--model.model.mixer=foo"], "error: unknown mixer 'foo' in ModelConfig.mixer; known: attention"),
    (["--data.init_args.batch_size=0"], "error: MQARDataModule.batch_size must be ≥ 1, got 0"),
    (["--data.init_args.vocab_size=1024"], "error: the data's vocabulary (data.init_args.vocab_size: 1024) is "
                                           "larger than the model's model.model.vocab_size=512"),
    (["--model.model.mixer_kwargs={attention: {num_heads: 1, variant: zoology}}"],
     "error: mixer 'attention' got unknown argument(s) ['variant']"),
    (["--model.lr_interval=batch"], "error: LanguageModelTask.lr_interval must be one of"),
    (["--model.model.norm=batchnorm"], "error: unknown ModelConfig.norm 'batchnorm'"),
    (["--model.model.init_std=-1"], "error: ModelConfig.init_std must be > 0, got -1"),
    (["--model.lr=-1"], "error: LanguageModelTask needs lr ≥ 0 and weight_decay ≥ 0, got -1"),
    (["--model.betas=[1.5, 0.9]"], "error: LanguageModelTask.betas must be two numbers in [0, 1), got [1.5, 0.9]"),
    (["--model.compile=true", "--model.compile_backend=foo"], "error: LanguageModelTask.compile_backend 'foo' is not"),
])
def test_bad_setting_is_one_line(tmp_path, capsys, extra, expected):
    assert run_bad(tmp_path, capsys, *extra).startswith(expected)


@pytest.mark.parametrize("extra, expected", [
    (["--data.init_args.train_slices=[{input_seq_len: 64, num_kv_pairs: 40, num_examples: 100}]"],
     "error: MQAR needs 2·num_kv_pairs·num_passes + 2·num_kv_pairs ≤ input_seq_len"),
    (["--model.model.mixer=deltanet", "--model.model.mixer_kwargs={deltanet: {chunk_size: 48}}"],
     "error: chunk_size must be a power of two in [16, 256], got 48"),
])
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
    message = run_bad(tmp_path, capsys, "--model.model.mlp=swiglu", "--model.model.mlp_kwargs={hiden_size: 32}")
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


TINY = ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1", "--model.model.d_model=16", "--data.init_args.batch_size=32",
        "--data.init_args.train_slices=[{input_seq_len: 64, num_kv_pairs: 4, num_examples: 64}]",
        "--data.init_args.test_slices=[{input_seq_len: 64, num_kv_pairs: 4, num_examples: 32}]"]


def fit(root, *extra):
    return train_cli.main(["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={root}", *TINY, *extra])


def last_step(root):
    import torch

    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"]


def test_last_checkpoint_is_the_last_step_when_the_monitored_metric_did_not_improve(tmp_path):
    fit(tmp_path, "--trainer.max_epochs=3", "--model.lr=0.0")  # lr 0: val/acc the same every epoch
    assert last_step(tmp_path) == 6  # 2 steps an epoch; the monitored best is epoch 0's


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # max_steps stops before validating
def test_a_fresh_run_into_a_used_folder_and_a_resume_with_other_settings_are_refused(tmp_path, capsys):
    fit(tmp_path, "--trainer.max_steps=2")
    with pytest.raises(SystemExit) as refused:
        fit(tmp_path, "--trainer.max_steps=2")
    assert str(refused.value.code) == (f"error: {tmp_path}/checkpoints already holds an earlier run's checkpoints: "
                                       "resume it with --ckpt_path last, or train into another "
                                       "--trainer.default_root_dir")
    with pytest.raises(SystemExit) as refused:
        fit(tmp_path, "--trainer.max_steps=4", "--ckpt_path=last", "--model.model.n_layers=3", "--model.lr=0.5")
    message = str(refused.value.code)
    assert message.startswith(f"error: --ckpt_path last resumes {tmp_path}/checkpoints/last.ckpt, trained with")
    assert "model.lr=0.5 (checkpoint: 0.003); model.model.n_layers=3 (checkpoint: 2)" in message
    explicit = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit, match=r"model.model.n_layers=3 \(checkpoint: 2\)"):
        fit(tmp_path, f"--ckpt_path={explicit}", "--model.model.n_layers=3")
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
                                    "recall_lm.data.mqar_datamodule.MQARDataModule (the code is imported as recall_lm.*)")
    assert not (tmp_path / "checkpoints").exists()


def test_old_class_path_on_the_command_line_is_refused(tmp_path, capsys):
    message = run_bad(tmp_path, capsys, "--trainer.callbacks+=models.callbacks.Throughput")
    assert message == ("error: the argument --trainer.callbacks+=models.callbacks.Throughput names "
                       "models.callbacks.Throughput, which is now recall_lm.models.callbacks.Throughput "
                       "(the code is imported as recall_lm.*)")


def test_old_class_path_in_a_checkpoint_is_refused(tmp_path, capsys):
    import torch

    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "models.lightning_module.LanguageModelTask"}},
               ckpt)
    message = run_bad(tmp_path / "run", capsys, f"--ckpt_path={ckpt}")
    assert message == (f"error: --ckpt_path {ckpt} (hyper_parameters) names models.lightning_module.LanguageModelTask, "
                       "which is now recall_lm.models.lightning_module.LanguageModelTask (the code is imported as "
                       "recall_lm.*)")
