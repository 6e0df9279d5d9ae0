"""Document-masked packing through DecoderLM: a packed row of documents = each document run alone."""
import pytest
import torch

from recall_lm.layers.documents import Documents
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

LENGTHS = (6, 1, 19, 3, 11)

MODELS = {
    "based-hybrid": dict(
        mixer=["base_conv", "based", "swa"],
        n_layers=3,
        mixer_kwargs={"based": {"feature_dim": 4}, "swa": {"window_size": 4}},
    ),
    "attention+gated_deltanet": dict(
        mixer=["attention", "gated_deltanet"],
        n_layers=2,
        mixer_kwargs={"attention": {"num_heads": 2}, "gated_deltanet": {"num_heads": 2}},
    ),
    "rwkv7 (value residual, cmix)": dict(
        mixer="rwkv7",
        mlp="rwkv7_cmix",
        n_layers=2,
        mixer_kwargs={"rwkv7": {"head_size": 16, "chunk_size": 16}},
    ),
    "rwkv6 (cmix)": dict(
        mixer="rwkv6",
        mlp="rwkv6_cmix",
        n_layers=2,
        mixer_kwargs={"rwkv6": {"head_size": 16, "chunk_size": 16}},
    ),
    "mom+mamba2": dict(
        mixer=["mom", "mamba2"],
        n_layers=2,
        mixer_kwargs={"mom": {"num_heads": 2, "short_conv": True}, "mamba2": {"d_state": 8, "head_dim": 16}},
    ),
}


def _model(overrides):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, d_model=32, **overrides)
    model = DecoderLM(config).double()
    with torch.no_grad():  # away from the zero / special initialisations, so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_packed_row_equals_documents_alone(name):
    model = _model(MODELS[name])
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    ids = torch.randint(0, 50, (1, int(cu[-1])))
    weights = torch.randn(1, int(cu[-1]), 50, dtype=torch.float64)
    params = list(model.parameters())

    logits = model(ids, cu_seqlens=cu).logits
    grads = torch.autograd.grad((logits * weights).sum(), params, allow_unused=True)
    alone = torch.cat(
        [model(piece).logits for piece in Documents.from_cu_seqlens(cu, ids.shape[1]).split(ids)], 1
    )
    grads_alone = torch.autograd.grad((alone * weights).sum(), params, allow_unused=True)

    torch.testing.assert_close(logits, alone, rtol=1e-9, atol=1e-9)
    for (pname, _), g, g_ref in zip(model.named_parameters(), grads, grads_alone):
        if g_ref is None:
            assert g is None, pname
        else:
            torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-9, msg=lambda m: f"{pname}: {m}")


def test_from_starts_flattens_blocks_into_documents():
    starts = torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    docs = Documents.from_starts(starts)
    assert docs.cu_seqlens.tolist() == [0, 2, 5, 8, 9, 10]  # each block's first token starts a document
    assert docs.positions.tolist() == [0, 1, 0, 1, 2, 0, 1, 2, 0, 0]


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([0, 3, 2, 8]), "non-decreasing"),
    (torch.tensor([0, 3, 7]), "end at T = 8"),
    (torch.tensor([0.0, 8.0]), "integer"),
])
def test_bad_cu_seqlens_is_named(bad, match):
    model = _model(MODELS["based-hybrid"])
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(1, 8, dtype=torch.long), cu_seqlens=bad)


def test_cu_seqlens_needs_one_row_and_no_state():
    model = _model(MODELS["based-hybrid"])
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        model(torch.zeros(2, 8, dtype=torch.long), cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="state None"):
        model(torch.zeros(1, 8, dtype=torch.long), state=model.init_state(1), cu_seqlens=torch.tensor([0, 8]))


@pytest.mark.parametrize("chunked_loss_rows", [0, 7])
def test_task_loss_on_masked_blocks_is_the_loss_of_each_document_alone(chunked_loss_rows):
    """A batch (input_ids, labels, starts) of two blocks: the task's loss is the token-mean loss of the
    documents run one by one, each predicting only its own tokens."""
    from recall_lm.training.task import LanguageModelTask

    task = LanguageModelTask(ModelConfig(vocab_size=50, d_model=32, n_layers=2, mixer=["attention", "rwkv6"],
                                         mixer_kwargs={"rwkv6": {"head_size": 16, "chunk_size": 16}}),
                             chunked_loss_rows=chunked_loss_rows).double().eval()
    input_ids = torch.randint(1, 50, (2, 12))
    input_ids[0, 4] = input_ids[1, 0] = input_ids[1, 7] = 0  # EOS ends documents there
    labels = torch.randint(1, 50, (2, 12))
    labels[input_ids == 0] = -100  # as recall_lm.data.text_datamodule.PackedBlocks labels them
    starts = torch.zeros(2, 12, dtype=torch.bool)
    starts[:, 0] = True
    starts[0, 5] = starts[1, 1] = starts[1, 8] = True
    loss, out = task._loss((input_ids, labels, starts))

    total, count = 0.0, 0
    for row in range(2):
        bounds = [*starts[row].nonzero().flatten().tolist(), 12]
        for a, b in zip(bounds, bounds[1:]):
            logits = task.model(input_ids[row : row + 1, a:b]).logits[0]
            keep = labels[row, a:b] != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[row, a:b][keep], reduction="sum")
            count += int(keep.sum())
    torch.testing.assert_close(
        loss.double(), total / count, rtol=1e-6, atol=1e-9
    )  # the task's CE runs in fp32
    if chunked_loss_rows:
        assert out.correct.shape == (2, 12)  # per-block accuracy for validation
