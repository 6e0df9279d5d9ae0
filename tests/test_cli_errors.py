"""Bad input to train.py ends the run before training with one line naming the setting."""
import pytest

import train

QUICKSTART = str(train.ROOT / "configs/quickstart.yaml")


def run_bad(tmp_path, capsys, *extra):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={tmp_path}",
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
])
def test_bad_setting_is_one_line(tmp_path, capsys, extra, expected):
    assert run_bad(tmp_path, capsys, *extra).startswith(expected)


def test_ckpt_path_that_is_not_a_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nothing.ckpt"
    assert run_bad(tmp_path, capsys, f"--ckpt_path={missing}") == (
        f"error: --ckpt_path {missing}: no such file (use a .ckpt a run wrote, or 'last')")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    assert run_bad(tmp_path, capsys, f"--ckpt_path={text}") == (
        f"error: --ckpt_path {text} is not a train.py checkpoint (not a torch.save zip archive)")
    import torch

    weights = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, weights)
    assert run_bad(tmp_path, capsys, f"--ckpt_path={weights}") == (
        f"error: --ckpt_path {weights} is not a train.py checkpoint (it has no state_dict)")
