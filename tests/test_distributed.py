"""Data parallelism on CPU (gloo): torchrun DDP through train.py matches a single process with the same
global batch; FSDP2 ``fully_shard`` per Block gives the unsharded model's loss, gradients and
clipped gradient norm; the data order shards over ranks as one process would see it."""
from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback

from recall_lm.data.mqar import MQARSlice
from recall_lm.data.resumable import ResumableSampler
from recall_lm.data.slices_datamodule import SliceBatches
from recall_lm.training import cli as train_cli

CONFIG = """
seed_everything: 0
model:
  architecture: {vocab_size: 64, d_model: 16, n_layers: 2, mixer: [attention, retnet], mlp: swiglu,
          mixer_kwargs: {attention: {num_heads: 1}, retnet: {num_heads: 1}}}
  lr: 3.0e-3
  warmup_steps: 2
data:
  class_path: recall_lm.data.mqar_datamodule.MQARDataModule
  init_args:
    vocab_size: 64
    batch_size: 8
    shuffle: false
    train_slices: [{input_seq_len: 16, num_kv_pairs: 2, num_examples: 64}]
    test_slices: [{input_seq_len: 16, num_kv_pairs: 2, num_examples: 16}]
trainer:
  max_steps: 6
  accelerator: cpu
  devices: 1
  precision: 32-true
  gradient_clip_val: 1.0
  log_every_n_steps: 1
  limit_val_batches: 0
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(root: Path) -> list[float]:
    rows = csv.DictReader(open(root / "csv" / "metrics.csv"))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_two_ranks_with_half_batches_see_the_batches_of_one_rank():
    """The fast half of the DDP check: unshuffled, rank r of 2 takes batches r, r + 2, ... of half
    the size, and together they hold exactly one process's batch at every step."""
    data = [MQARSlice(16, 2, 64).generate(64, seed=0)]
    whole, halves = SliceBatches(data, 8, seed=0), SliceBatches(data, 4, seed=0)
    one = list(ResumableSampler(whole, num_replicas=1, rank=0, shuffle=False))
    ranks = [list(ResumableSampler(halves, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 8
    for step, i in enumerate(one):
        joined = [torch.cat([halves[ranks[0][step]][j], halves[ranks[1][step]][j]]) for j in (0, 1)]
        assert torch.equal(joined[0], whole[i][0]) and torch.equal(joined[1], whole[i][1])


def test_torchrun_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, "train.py", "fit", "--config", str(config),
                    f"--trainer.default_root_dir={single}"], cwd=train_cli.ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "train.py", "fit", "--config", str(config), f"--trainer.default_root_dir={ddp}",
         "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
         "--data.init_args.batch_size=4"],
        cwd=train_cli.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    expected, got = losses(single), losses(ddp)
    assert len(expected) == len(got) == 6
    # step 1: the same initial model on the same 8 examples; later steps: the same averaged gradients
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


class PoisonRankOne(Callback):
    """For the torchrun test below: at step 2, rank 1's copy of the embedding becomes NaN, so only rank
    1's loss is non-finite."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2 and trainer.global_rank == 1:
            with torch.no_grad():
                pl_module.model.embedding.weight.fill_(float("nan"))


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    """Without agreeing, rank 1 would stop in training_step while rank 0 waits in the gradient all-reduce."""
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "train.py", "fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'ddp'}",
         "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
         "--data.init_args.batch_size=4", "--trainer.callbacks+=tests.test_distributed.PoisonRankOne"],
        cwd=train_cli.ROOT, env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    # both ranks print at once, so their lines may interleave: find each message anywhere in stderr
    pattern = r"error: training stopped at step (\d+): train/loss is (nan|non-finite on another rank)"
    stops = sorted(re.findall(pattern, done.stderr))
    assert stops == [("2", "nan"), ("2", "non-finite on another rank")], done.stderr[-3000:]


def _fsdp2_worker(rank: int, world: int, init_file: str, out_dir: str):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from recall_lm.models.config import ModelConfig
    from recall_lm.models.decoder import DecoderLM
    from recall_lm.training.task import clip_grad_norm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        config = ModelConfig(
            vocab_size=48,
            d_model=32,
            n_layers=3,
            mixer=["attention", "retnet", "rwkv6"],
            mixer_kwargs={"rwkv6": {"head_size": 16, "mix_lora_rank": 4, "decay_lora_rank": 8}},
            mlp="swiglu",
        )
        reference = DecoderLM(config)
        model = DecoderLM(config)
        model.load_state_dict(reference.state_dict())
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        ids = torch.randint(0, 48, (4, 24), generator=torch.Generator().manual_seed(1))
        labels = torch.roll(ids, -1, 1)

        def loss_of(m, x, y):
            logits = m(x).logits
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

        mine = slice(2 * rank, 2 * rank + 2)  # each rank half of the global batch
        loss = loss_of(model, ids[mine], labels[mine])
        loss.backward()  # FSDP2 averages the gradients over the ranks (reduce-scatter)
        norm = clip_grad_norm(model, 0.05)
        loss_all = loss.detach().clone()
        dist.all_reduce(loss_all)
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        if rank == 0:
            ref_loss = loss_of(reference, ids, labels)
            ref_loss.backward()
            ref_norm = clip_grad_norm(reference, 0.05)
            result = {"loss": (loss_all / world).item(), "ref_loss": ref_loss.item(), "norm": float(norm),
                      "ref_norm": float(ref_norm),
                      "max_grad_diff": max((grads[n] - p.grad).abs().max().item()
                                           for n, p in reference.named_parameters()),
                      "sharded": type(next(model.parameters())).__name__}
            torch.save(result, os.path.join(out_dir, "result.pt"))
        dist.barrier()  # tear the group down together: a rank that leaves first can abort in gloo's threads
    finally:
        dist.destroy_process_group()


def test_fsdp2_fully_shard_per_block_matches_the_unsharded_model(tmp_path):
    """Lightning's FSDPStrategy refuses CPU; torch FSDP2 runs under gloo. One step on 2 ranks."""
    mp.spawn(_fsdp2_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r = torch.load(tmp_path / "result.pt")
    assert r["sharded"] == "DTensor"
    assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-6)
    assert r["norm"] == pytest.approx(r["ref_norm"], rel=1e-5)  # the global norm, not a shard's
    assert r["ref_norm"] > 0.05  # so clipping did act
    assert r["max_grad_diff"] < 1e-7


@pytest.mark.parametrize("fragment", ["_ddp.yaml", "_fsdp.yaml", "_fsdp.yaml+checkpointing"])
def test_strategy_fragments_combine_with_a_config(fragment, tmp_path):
    """The GPU fragments parse on top of a model/data config and build their strategy (CPU overrides)."""
    from lightning.pytorch.strategies import DDPStrategy

    from recall_lm.models.decoder import Block
    from recall_lm.training import cli as train_cli
    from recall_lm.training.fsdp import BlockFSDPStrategy

    fragment, _, checkpointing = fragment.partition("+")
    extra = ["--trainer.strategy.init_args.activation_checkpointing=true"] if checkpointing else []
    cli = train_cli.main(["--config", "configs/lm/tiny.yaml", "--config", f"configs/strategies/{fragment}",
                      "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32",
                      f"--trainer.default_root_dir={tmp_path}", *extra], run=False)
    strategy = cli.trainer.strategy
    if fragment == "_ddp.yaml":
        assert isinstance(strategy, DDPStrategy)
        return
    assert isinstance(strategy, BlockFSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    precision = strategy.mixed_precision
    assert precision.param_dtype == torch.bfloat16 and precision.reduce_dtype == torch.float32
    kept = {cls.__name__ for cls in precision._module_classes_to_ignore}
    assert {"RWKV6TimeMix", "MixtureOfMemories"} <= kept
    recompute = strategy._activation_checkpointing_kwargs.get("auto_wrap_policy")
    assert (recompute._module_classes == {Block}) if checkpointing else recompute is None
