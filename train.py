"""Training entry point (LightningCLI): ``python train.py fit --config configs/<...>.yaml``.

With no arguments it runs ``configs/quickstart.yaml``. The same command scales out with
``torchrun --nproc_per_node=N train.py fit --config ... --trainer.devices N`` (DDP; FSDP with
``--config configs/strategies/_fsdp.yaml``). What it does is in ``training/cli.py``
(``recall_lm.training.cli.main``).
"""
from recall_lm.training.cli import main

if __name__ == "__main__":
    main()
