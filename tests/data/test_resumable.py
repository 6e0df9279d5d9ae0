"""The resumable sampler: determinism, rank sharding, and mid-epoch resume (alone and inside Lightning)."""
import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from recall_lm.data.resumable import ResumableDataLoader, ResumableSampler, resumable_loader


class Indices(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(i)


def epoch_items(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [int(i) for batch in loader for i in batch.reshape(-1)]


def test_order_depends_only_on_seed_and_epoch():
    a, b = ResumableSampler(Indices(50), 1, 0, seed=3), ResumableSampler(Indices(50), 1, 0, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) == torch.randperm(50, generator=torch.Generator().manual_seed(5)).tolist()
    assert sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(ResumableSampler(Indices(7), 1, 0, shuffle=False)) == list(range(7))


def test_two_ranks_cover_disjoint_samples():
    samplers = [ResumableSampler(Indices(41), num_replicas=2, rank=r, seed=1) for r in range(2)]
    for s in samplers:
        s.set_epoch(4)
    r0, r1 = list(samplers[0]), list(samplers[1])
    assert len(r0) == len(r1) == len(samplers[0]) == 20
    assert not set(r0) & set(r1)
    glob = samplers[0].global_order(4)
    assert [x for pair in zip(r0, r1) for x in pair] == glob[:40]  # rank r takes positions r, r+2, ...


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("stop", [0, 1, 3, 6])
def test_mid_epoch_resume_continues_the_uninterrupted_order(world, stop):
    n, batch, epoch = 61, 4, 1
    full = [epoch_items(resumable_loader(Indices(n), batch, seed=7, num_replicas=world, rank=r), epoch)
            for r in range(world)]
    states = []
    for r in range(world):
        loader = resumable_loader(Indices(n), batch, seed=7, num_replicas=world, rank=r)
        loader.sampler.set_epoch(epoch)
        it = iter(loader)
        first = [int(i) for _ in range(stop) for i in next(it)]
        assert first == full[r][: stop * batch]
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)  # the checkpoint of rank 0 serves every rank
    assert states[0]["epoch"] == epoch and states[0]["consumed"] == stop * batch * world
    for r in range(world):
        fresh = resumable_loader(Indices(n), batch, seed=7, num_replicas=world, rank=r)  # a new process
        fresh.load_state_dict(states[0])
        rest = epoch_items(fresh, epoch)
        assert full[r][: stop * batch] + rest == full[r]
        # a second interruption inside the resumed epoch counts from the epoch's start
        again = resumable_loader(Indices(n), batch, seed=7, num_replicas=world, rank=r)
        again.load_state_dict(states[0])
        again.sampler.set_epoch(epoch)
        it = iter(again)
        next(it)
        assert again.state_dict()["consumed"] == (stop + 1) * batch * world
        # the next epoch starts from its beginning
        assert epoch_items(fresh, epoch + 1) == epoch_items(
            resumable_loader(Indices(n), batch, seed=7, num_replicas=world, rank=r), epoch + 1
        )


def test_resume_with_another_world_size_continues_the_global_order():
    one = resumable_loader(Indices(40), 2, seed=0, num_replicas=1, rank=0)
    one.sampler.set_epoch(0)
    it = iter(one)
    seen = [int(i) for _ in range(5) for i in next(it)]
    state = one.state_dict()
    rest = [epoch_items(_loaded(state, world=2, rank=r), 0) for r in range(2)]
    glob = ResumableSampler(Indices(40), 1, 0, seed=0).global_order(0)
    assert seen == glob[:10]
    assert sorted(rest[0] + rest[1]) == sorted(glob[10:]) and not set(rest[0]) & set(rest[1])


def _loaded(state, world, rank):
    loader = resumable_loader(
        Indices(40), 1, seed=0, num_replicas=world, rank=rank
    )  # no partial batch dropped
    loader.load_state_dict(state)
    return loader


def test_whole_batches_per_item_and_finished_epoch():
    loader = ResumableDataLoader(Indices(9), ResumableSampler(Indices(9), 1, 0, seed=0), batch_size=None)
    loader.sampler.set_epoch(0)
    items = [int(x) for x in loader]
    assert len(items) == 9 and loader.state_dict()["consumed"] == 9
    fresh = ResumableDataLoader(Indices(9), ResumableSampler(Indices(9), 1, 0, seed=0), batch_size=None)
    fresh.load_state_dict(loader.state_dict())  # a finished epoch: resume at the next one
    assert fresh.sampler.epoch == 1 and [int(x) for x in fresh] == [int(x) for x in epoch_items(loader, 1)]


def test_bad_resume_state_is_refused():
    loader = resumable_loader(Indices(20), 2, seed=0)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="cannot resume the data order"):
        resumable_loader(Indices(21), 2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="batch"):
        resumable_loader(Indices(3), 4)


class Recorder(L.LightningModule):
    """Records the sample indices of every training batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.tolist())
        return (self.w - 1.0).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return resumable_loader(Indices(23), 2, seed=5)  # 11 batches an epoch


def _fit(tmp_path, max_steps, ckpt_path=None, callbacks=()):
    model = Recorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        enable_checkpointing=bool(callbacks),
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # this test builds its own Trainer
def test_lightning_resume_mid_epoch_continues_the_data_order(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    full = _fit(tmp_path / "a", 30)  # 2.7 epochs
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=15, save_top_k=-1)
    before = _fit(tmp_path / "b", 15, callbacks=[checkpoint])  # stops in the middle of epoch 1
    saved = torch.load(tmp_path / "ckpt" / "epoch=1-step=15.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["consumed"] == 8
    after = _fit(tmp_path / "c", 30, ckpt_path=tmp_path / "ckpt" / "epoch=1-step=15.ckpt")
    assert before + after == full
