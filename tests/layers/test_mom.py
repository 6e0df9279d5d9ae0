"""Mixture-of-Memories: the packed varlen mixer against a masked fp64 token-loop reference (outputs,
final states, gradients), routing/packing invariants, the dense top-k = M limit, the load-balancing
loss, and its path through DecoderLM."""
import pytest
import torch
import torch.nn.functional as F

from recall_lm.kernels.ops import gated_linear_attention
from recall_lm.layers.mom_routing import load_balancing_loss, pack_by_memory, route_top_k
from recall_lm.layers.registry import build_mixer
from recall_lm.models.config import ModelConfig
from recall_lm.models.decoder import DecoderLM

D = 32


def make(seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    mixer = build_mixer("mom", D, **kwargs).to(dtype)
    with torch.no_grad():  # random weights large enough that routing and decays differ per token
        for name, p in mixer.named_parameters():
            if name == "norm.weight":
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name == "gate_bias":
                p.copy_(2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if name.startswith("router") else 0.2))
    return mixer


def conv_tap(buffer, conv):
    """One output of a SiLU short convolution from its last W inputs buffer [B, W, C] (oldest first)."""
    y = (buffer * conv.conv.weight[:, 0].T).sum(1)
    return F.silu(y if conv.conv.bias is None else y + conv.conv.bias)


def reference(mixer, x, initial=None):
    """Every memory runs over the WHOLE sequence in a plain fp64 token loop; a token not routed to it
    has k = v = 0 and log-decay 0 there (so the memory is unchanged), and its output is weighted 0.
    Short convolutions: q's filter slides over all tokens, memory m's k/v filters over a buffer of
    the last W inputs routed to m (pushed only when a token is routed there).
    ``initial``: a MemoriesState or None. Returns y [B, T, d] and the final states (S [B, M_total,
    H, K, V], and the conv buffers' last W-1 entries q [B, W-1, C], k/v [B, M_total, W-1, C])."""
    B, T, _ = x.shape
    H, K, V = mixer.num_heads, mixer.head_dim, mixer.value_dim
    Mt = mixer.num_states
    W = mixer.q_conv.kernel_size if mixer.short_conv else 1
    if mixer.router is not None:
        probs = torch.softmax(x @ mixer.router.weight.T, -1)
        chosen = torch.zeros_like(probs).scatter(-1, probs.topk(mixer.top_k, -1).indices, 1.0)
        w = probs * chosen / (probs * chosen).sum(-1, keepdim=True)
    else:
        chosen = w = torch.ones(B, T, 1, dtype=x.dtype)
    if mixer.shared_memory:
        chosen = torch.cat([chosen, torch.ones(B, T, 1, dtype=x.dtype)], -1)
        w = torch.cat([w, torch.ones(B, T, 1, dtype=x.dtype)], -1)
    q = x @ mixer.q.weight.T
    if mixer.short_conv:
        buf = x.new_zeros(B, W - 1, H * K) if initial is None else initial.q_conv.to(x.dtype)
        full = torch.cat([buf, q], 1)
        q = torch.stack([conv_tap(full[:, t : t + W], mixer.q_conv) for t in range(T)], 1)
        q_hist = full[:, T:]
    else:
        q = F.silu(q)
    q = q.view(B, T, H, K)
    delta = mixer.memory == "gated_deltanet"
    if delta:  # Gated DeltaNet memories read with an L2-normalised query
        q = q / q.norm(dim=-1, keepdim=True)
    outs, finals, k_hists, v_hists = [], [], [], []
    for m in range(Mt):
        if delta:
            k, v, bl, al = (x @ mixer.kvg_weight[m]).split([H * K, H * V, H, H], -1)
            beta = torch.sigmoid(bl) * (2 if mixer.allow_neg_eigval else 1)
            g = -mixer.A_log.exp() * F.softplus(al + mixer.dt_bias)  # [B, T, H]
        else:
            k, v, gl = (x @ mixer.kvg_weight[m]).split([H * K, H * V, H * K], -1)
            g = F.logsigmoid(gl + mixer.gate_bias[m]) / mixer.gate_logit_normalizer
        S = x.new_zeros(B, H, K, V) if initial is None else initial.S[:, m].to(x.dtype)
        if mixer.short_conv:
            kb = x.new_zeros(B, W - 1, H * K) if initial is None else initial.k_conv[:, m].to(x.dtype)
            vb = x.new_zeros(B, W - 1, H * V) if initial is None else initial.v_conv[:, m].to(x.dtype)
        o_m = []
        for t in range(T):
            r = chosen[:, t, m, None]  # [B, 1]: 1 if token t is routed to memory m
            k_t, v_t = k[:, t], v[:, t]
            if mixer.short_conv:
                kw, vw = torch.cat([kb, k_t[:, None]], 1), torch.cat([vb, v_t[:, None]], 1)
                k_t, v_t = conv_tap(kw, mixer.k_conv), conv_tap(vw, mixer.v_conv)
                kb = torch.where(r[..., None] > 0, kw[:, 1:], kb)
                vb = torch.where(r[..., None] > 0, vw[:, 1:], vb)
            else:
                k_t, v_t = F.silu(k_t), F.silu(v_t)
            if delta:  # not routed: β = 0 and g = 0 leave the memory as it is
                k_t = k_t.view(B, H, K) / k_t.view(B, H, K).norm(dim=-1, keepdim=True)
                b_t, g_t = (beta[:, t] * r)[..., None, None], (g[:, t] * r)[..., None, None]
                transition = g_t.exp() * (
                    torch.eye(K, dtype=x.dtype) - b_t * k_t[..., :, None] * k_t[..., None, :]
                )
                S = transition @ S + b_t * k_t[..., :, None] * v_t.view(B, H, V)[..., None, :]
            else:
                k_t, v_t, g_t = (k_t * r).view(B, H, K), (v_t * r).view(B, H, V), (g[:, t] * r).view(B, H, K)
                S = S * g_t.exp()[..., None] + k_t[..., :, None] * v_t[..., None, :]
            o_m.append(K**-0.5 * torch.einsum("bhk,bhkv->bhv", q[:, t], S) * w[:, t, m, None, None])
        outs.append(torch.stack(o_m, 1))
        finals.append(S)
        if mixer.short_conv:
            k_hists.append(kb)
            v_hists.append(vb)
    o = sum(outs)
    o = o / (o.pow(2).mean(-1, keepdim=True) + mixer.norm.eps).sqrt() * mixer.norm.weight
    if mixer.out_gate is not None:
        o = o * F.silu(x @ mixer.out_gate.weight.T).view(B, T, H, V)
    final = {"S": torch.stack(finals, 1)}
    if mixer.short_conv:
        final.update(q_conv=q_hist, k_conv=torch.stack(k_hists, 1), v_conv=torch.stack(v_hists, 1))
    return o.reshape(B, T, H * V) @ mixer.out.weight.T, final


CONFIGS = [
    dict(num_heads=2, short_conv=False),
    dict(num_heads=2, short_conv=True, conv_size=3),
    dict(num_heads=1, num_memories=3, top_k=1, shared_memory=False, output_gate=False),
    dict(num_heads=2, num_memories=5, top_k=3, expand_v=2),
    dict(num_heads=2, num_memories=3, top_k=2, allow_neg_eigval=True),
    dict(num_memories=1, top_k=1, shared_memory=True),
    dict(num_heads=2, memory="gla", short_conv=False),
    dict(num_heads=2, short_conv=True, conv_size=3, memory="gla"),
    dict(num_heads=2, num_memories=5, top_k=3, expand_v=2, memory="gla"),
]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_matches_masked_reference_outputs_and_gradients(kwargs):
    mixer = make(**kwargs)
    T = 70 if kwargs == CONFIGS[0] else 29  # at 70 the shared segments span 2 kernel chunks of 64
    x = torch.randn(2, T, D, dtype=torch.float64, requires_grad=True)
    y, _ = mixer(x)
    y_ref, _ = reference(mixer, x)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-9)

    cot = torch.randn_like(y)
    params = [x] + list(mixer.parameters())
    grads = torch.autograd.grad((y * cot).sum(), params)
    grads_ref = torch.autograd.grad((y_ref * cot).sum(), params)
    for (name, _), g, g_ref in zip([("x", x)] + list(mixer.named_parameters()), grads, grads_ref):
        assert g_ref.abs().sum() > 0, name
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-9, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("memory", ["gated_deltanet", "gla"])
@pytest.mark.parametrize("short_conv", [False, True])
def test_continues_from_a_given_state_like_the_reference(short_conv, memory):
    mixer = make(num_heads=2, short_conv=short_conv, memory=memory)
    x = torch.randn(3, 21, D, dtype=torch.float64)
    s0 = mixer.init_state(3, dtype=torch.float64)
    for t in s0.tensors():
        t.normal_()
    y, s1 = mixer(x, s0)
    y_ref, final_ref = reference(mixer, x, initial=s0)
    assert s1.S.shape == (3, 5, 2, 16, 16)
    torch.testing.assert_close(y, y_ref, atol=1e-9, rtol=1e-9)
    assert set(final_ref) == {n for n in ("S", "q_conv", "k_conv", "v_conv") if getattr(s1, n) is not None}
    for name, expected in final_ref.items():
        torch.testing.assert_close(getattr(s1, name), expected, atol=1e-9, rtol=1e-9, msg=name)
    assert mixer.aux_loss is None  # decoding path: no auxiliary loss


def test_token_by_token_touches_only_routed_memories():
    mixer = make(num_memories=4, top_k=2, dtype=torch.float32)
    x = torch.randn(2, 12, D)
    state = mixer.init_state(2)
    state.S.normal_()
    full_from_state, _ = mixer(x, state)
    steps = []
    for t in range(12):
        before = state.S.clone()
        y_t, state = mixer(x[:, t : t + 1], state)
        steps.append(y_t)
        chosen = route_top_k(mixer.router(x[:, t]), 2).memories  # [B, 2]
        for b in range(2):
            untouched = [m for m in range(4) if m not in chosen[b].tolist()]
            assert torch.equal(state.S[b, untouched], before[b, untouched])
            assert not torch.allclose(state.S[b, 4], before[b, 4])  # the shared memory sees every token
    torch.testing.assert_close(torch.cat(steps, 1), full_from_state, atol=2e-5, rtol=2e-5)


def test_packing_groups_tokens_by_memory_in_time_order():
    torch.manual_seed(1)
    B, T, M, k = 3, 10, 4, 2
    memories = torch.rand(B, T, M).topk(k, -1).indices
    pack = pack_by_memory(memories, M, shared=True)
    offsets = pack.cu_seqlens.tolist()
    assert len(offsets) == (M + 1) * B + 1 and offsets[-1] == B * T * (k + 1)
    for m in range(M + 1):
        for b in range(B):
            rows = pack.token[offsets[m * B + b] : offsets[m * B + b + 1]]
            expected = [b * T + t for t in range(T) if m == M or m in memories[b, t].tolist()]
            assert rows.tolist() == expected
    for b in range(B):
        for t in range(T):
            for j in range(k):
                row = int(pack.slot_rows[b, t, j])
                seg = max(n for n in range(len(offsets) - 1) if offsets[n] <= row)
                assert pack.token[row] == b * T + t and seg == int(memories[b, t, j]) * B + b
    assert pack.memory_offsets == offsets[::B] and pack.shared_rows == B * T * k


def test_top_k_equal_to_num_memories_is_a_dense_mixture():
    mixer = make(num_memories=3, top_k=3, shared_memory=False, output_gate=False, memory="gla",
                 short_conv=False)
    x = torch.randn(2, 150, D, dtype=torch.float64)  # every segment spans 3 chunks
    B, T, H, K = 2, 150, mixer.num_heads, mixer.head_dim
    probs = torch.softmax(mixer.router(x), -1)
    q = F.silu(mixer.q(x)).view(B, T, H, K)
    o = 0
    for m in range(3):  # each memory sees every token: plain dense GLA calls, no packing
        k, v, gl = (x @ mixer.kvg_weight[m]).split([H * K, H * K, H * K], -1)
        g = F.logsigmoid(gl + mixer.gate_bias[m]) / 16
        k, v, g = (t.view(B, T, H, K) for t in (F.silu(k), F.silu(v), g))
        o_m, _ = gated_linear_attention(q, k, v, g, backend="naive")
        o = o + probs[..., m, None, None] * o_m
    y_dense = mixer.out(mixer.norm(o).reshape(B, T, -1))
    torch.testing.assert_close(mixer(x)[0], y_dense, atol=1e-10, rtol=1e-9)


def test_aux_loss_is_the_coefficient_for_uniform_router_probabilities():
    mixer = make(num_memories=4, top_k=2, aux_loss_coef=0.03, dtype=torch.float32)
    with torch.no_grad():
        mixer.router.weight.zero_()  # P_m = 1/M exactly; whatever f is, M · Σ f_m / M = 1
    mixer(torch.randn(2, 16, D))
    torch.testing.assert_close(mixer.aux_loss, torch.tensor(0.03), atol=1e-7, rtol=0)


def test_load_balancing_loss_known_values():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25]] * 4)
    balanced = torch.tensor([[0], [1], [2], [3]])
    assert torch.allclose(load_balancing_loss(probs, balanced), torch.tensor(1.0))
    collapsed = load_balancing_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0], [0]]))
    assert torch.allclose(collapsed, torch.tensor(2.0))  # everything on one memory: M
    # f = [3/4, 1/4], P = [0.7, 0.3]: 2 · (0.525 + 0.075) = 1.2
    mixed = load_balancing_loss(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.5, 0.5]]),
                                torch.tensor([[0], [0], [0], [1]]))
    assert torch.allclose(mixed, torch.tensor(1.2))


def test_aux_loss_matches_its_formula_and_is_off_when_asked():
    mixer = make(num_memories=4, top_k=2, aux_loss_coef=0.5)
    x = torch.randn(2, 15, D, dtype=torch.float64)
    mixer(x)
    probs = torch.softmax(mixer.router(x), -1).reshape(-1, 4)
    chosen = probs.topk(2, -1).indices
    f = torch.stack([(chosen == m).sum() for m in range(4)]).double() / chosen.numel()
    torch.testing.assert_close(mixer.aux_loss, 0.5 * 4 * (f * probs.mean(0)).sum())
    assert make(aux_loss_coef=0.0)(x)[1] is None and make(aux_loss_coef=0.0).aux_loss is None


@pytest.mark.parametrize("through", ["output", "aux_loss"])
def test_gradients_reach_the_router(through):
    mixer = make(num_memories=4, top_k=2, aux_loss_coef=0.0 if through == "output" else 0.01)
    y, _ = mixer(torch.randn(2, 9, D, dtype=torch.float64))
    loss = y.square().mean() if through == "output" else mixer.aux_loss
    loss.backward()
    assert mixer.router.weight.grad.abs().sum() > 0


def test_decoder_lm_returns_aux_loss_with_a_grad_path_to_the_routers():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=61, d_model=D, n_layers=2, mixer="mom", mlp="none",
                         mixer_kwargs={"mom": {"num_memories": 4, "top_k": 2, "aux_loss_coef": 0.01}})
    model = DecoderLM(config)
    out = model(torch.randint(0, 61, (2, 24)))
    # Near-uniform router at init: each layer contributes ≈ coef · 1.
    assert out.aux_loss > 0 and abs(float(out.aux_loss.detach()) - 0.02) < 2e-3
    out.aux_loss.backward()
    for block in model.blocks:
        assert block.mixer.router.weight.grad.abs().sum() > 0
    decoding = model(torch.randint(0, 61, (2, 3)), model.init_state(2))
    assert float(decoding.aux_loss) == 0.0 and not decoding.aux_loss.requires_grad


def test_state_size_and_layout():
    mixer = build_mixer("mom", 64, num_heads=2, num_memories=4, top_k=2, expand_v=2, short_conv=False)
    assert mixer.state_size() == 5 * 2 * 32 * 64
    assert mixer.init_state(3).S.shape == (3, 5, 2, 32, 64)
    single = build_mixer("mom", 64, num_memories=1, top_k=1, shared_memory=False, expand_v=3,
                         short_conv=False)
    assert single.state_size() == 64 * 192 and single.router is None
    conv = build_mixer("mom", 64, num_heads=2, num_memories=4, top_k=2, conv_size=4)  # convs: the default
    assert conv.state_size() == 5 * 2 * 32 * 32 + 3 * (64 + 5 * (64 + 64))
    state = conv.init_state(3)
    assert state.k_conv.shape == (3, 5, 3, 64) and state.q_conv.shape == (3, 3, 64)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_memories=2, top_k=3), "top_k"), (dict(top_k=0), "top_k"),
    (dict(num_memories=0), "num_memories"), (dict(aux_loss_coef=-1.0), "aux_loss_coef"),
    (dict(expand_v=0.7), "expand_v"), (dict(num_heads=3), "num_heads"),
    (dict(gate_logit_normalizer=0.0), "gate_logit_normalizer"),
    (dict(short_conv=True, conv_size=1), "conv_size"), (dict(memory="lstm"), "memory"),
    (dict(memory="gla", allow_neg_eigval=True), "allow_neg_eigval needs memory='gated_deltanet'"),
])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        build_mixer("mom", D, **kwargs)


@pytest.mark.parametrize("memory", ["gated_deltanet", "gla"])
def test_decode_step_is_unpacked_and_equals_the_packed_path(monkeypatch, memory):
    """A single token with a state takes the batched decode step (no routing packs), and token-by-token
    outputs and final state equal the packed whole-sequence path's, shared memory and convolutions on."""
    import recall_lm.layers.mom as mom_module

    torch.manual_seed(0)
    mixer = build_mixer(
        "mom", 32, num_heads=2, num_memories=3, top_k=2, short_conv=True, memory=memory
    ).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    whole, whole_state = mixer(x, mixer.init_state(2, dtype=torch.float64))

    def no_packing(*args, **kwargs):
        raise AssertionError("the decode step packed tokens by memory")

    monkeypatch.setattr(mom_module, "pack_by_memory", no_packing)
    state, outs = mixer.init_state(2, dtype=torch.float64), []
    for t in range(9):
        y, state = mixer(x[:, t : t + 1], state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), whole)
    for name in ("S", "q_conv", "k_conv", "v_conv"):
        torch.testing.assert_close(getattr(state, name), getattr(whole_state, name), check_dtype=False)
