"""Mixture-of-Memories (MoM): several gated delta-rule (or gated linear-attention) memories, each token
routed to its top-k."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recall_lm.kernels.ops import (
    gated_delta_rule,
    gated_delta_rule_step,
    gated_linear_attention,
    gated_linear_attention_step,
)
from recall_lm.layers.attention import split_heads
from recall_lm.layers.contract import Mixer
from recall_lm.layers.dt_init import fill_dt_bias_
from recall_lm.layers.flops import (
    chunked_delta_rule_flops,
    chunked_linear_attention_flops,
    default_chunk_size,
    linear_flops,
    short_conv_flops,
)
from recall_lm.layers.mom_routing import conv_segments, load_balancing_loss, pack_by_memory, route_top_k
from recall_lm.layers.norms import RMSNorm
from recall_lm.layers.registry import register_mixer
from recall_lm.layers.short_conv import ConvState, ShortConvolution
from recall_lm.layers.state import MixerState


@dataclass
class MemoriesState(MixerState):
    """The MoM decoding state. S: [B, M_total, H, K, V] in fp32, one state per memory (M routed
    memories, then the shared one). With short convolutions, their last W-1 inputs: q_conv
    [B, W-1, H·K] (the token stream), k_conv [B, M_total, W-1, H·K] and v_conv [B, M_total, W-1, H·V]
    (each memory's own stream of routed tokens); None without."""

    S: torch.Tensor
    q_conv: torch.Tensor | None = None
    k_conv: torch.Tensor | None = None
    v_conv: torch.Tensor | None = None


@register_mixer("mom")
class MixtureOfMemories(Mixer):
    """MoM (Du et al., 2025, "MoM: Linear Sequence Modeling with Mixture-of-Memories").

    A router ``softmax(W_r x_t)`` over M memories keeps the top-k, renormalised to weights w_{t,j}.
    Memory m has its own key, value, write-strength and decay projections and changes only when token t
    is routed to it (it neither decays nor learns from the tokens it does not see). ``memory`` picks its
    update:

    * ``"gated_deltanet"`` (default, as in the MoM paper and its reference code): Gated DeltaNet's rule
      ``S^m_t = α^m_t (I − β^m_t k^m_t k^m_tᵀ) S^m_{t-1} + β^m_t k^m_t v^m_tᵀ`` with q and k L2-normalised
      per head, β = sigmoid(x W^m_β) (2·sigmoid with ``allow_neg_eigval``: eigenvalues of the
      Householder part in (−1, 1], Grazzi et al., 2025) and Mamba-2's decay
      α = exp(−exp(A_log) · softplus(x W^m_a + dt_bias))
      (A_log and dt_bias per head, shared by the memories, never weight-decayed);
    * ``"gla"``: gated linear attention ``S^m_t = diag(exp g^m_t) S^m_{t-1} + k^m_tᵀ v^m_t`` with the
      per-channel log-decay ``g^m_t = logsigmoid(x_t W^m_g + b^m_g) / gate_logit_normalizer`` (fla's
      GLA form, normaliser 16).

    The query ``q_t = x_t W_q`` is shared. The token reads the memories it
    wrote: ``o_t = Σ_j w_{t,j} · scale · S^{m_j}_tᵀ q_t``, plus ``scale · S^shared_tᵀ q_t`` of an
    always-on shared memory (its own projections) when ``shared_memory``. Then a per-head RMSNorm,
    optionally gated by ``silu(x_t W_o')``, and the output projection.

    All memories run in ONE varlen kernel call: the B·M_total segments (segment m·B + b = the tokens
    of sequence b routed to memory m, in time order; see recall_lm.layers.mom_routing) each start from their
    own initial state. Per-token cost is k (+1) memory reads and writes, whatever M is.

    Training path (state None): ``self.aux_loss = aux_loss_coef · M · Σ_m f_m P_m`` (Switch
    load-balancing loss); None on the decoding path, with one memory, or with coefficient 0.
    Short convolutions (``short_conv``, default on as in the reference code and fla, which require
    them; kernel ``conv_size``, then SiLU; without them q, k, v = SiLU(projection)): on q over the
    token stream, on each memory's k and v over that memory's own stream of routed tokens (weights
    shared by the memories, as in fla's MoM), so per-token cost stays k (+1). Departure from fla's
    ``MomAttention``: fla convolves q per memory too, over each memory's routed copies of the tokens
    (and, in training mode, across segment boundaries); here q is computed once per token, as the
    shared query it is, so its convolution sees the token's true predecessors. With the q convolution
    made the identity the two layers agree given the same weights, output and every gradient
    (tests/layers/test_mom_fla.py, against fla 0.6).
    Key head dim = d_model / num_heads; value head dim = expand_v · that.
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

    keep_fp32_under_fsdp = True  # the GLA memories' gate bias (log-decays) would lose precision in bf16

    residual_projections = ("out",)
    MEMORIES = ("gated_deltanet", "gla")

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        num_memories: int = 4,
        top_k: int = 2,
        shared_memory: bool = True,
        expand_v: float = 1.0,
        gate_logit_normalizer: float = 16.0,
        output_gate: bool = True,
        aux_loss_coef: float = 0.01,
        norm_eps: float = 1e-5,
        init_std: float = 0.02,
        short_conv: bool = True,
        conv_size: int = 4,
        memory: str = "gated_deltanet",
        allow_neg_eigval: bool = False,
    ):
        super().__init__()
        if memory not in self.MEMORIES:
            raise ValueError(f"mom: memory must be one of {self.MEMORIES}, got {memory!r}")
        self.memory = memory
        if allow_neg_eigval and memory != "gated_deltanet":
            raise ValueError(f"mom: allow_neg_eigval needs memory='gated_deltanet' (a delta rule), "
                             f"got {memory!r}")
        self.allow_neg_eigval = allow_neg_eigval
        if int(num_memories) != num_memories or num_memories < 1:
            raise ValueError(f"mom: num_memories must be an integer ≥ 1, got {num_memories}")
        if int(top_k) != top_k or not 1 <= top_k <= num_memories:
            raise ValueError(f"mom: top_k must be an integer in [1, num_memories={num_memories}], "
                             f"got {top_k}")
        if aux_loss_coef < 0:
            raise ValueError(f"mom: aux_loss_coef must be ≥ 0, got {aux_loss_coef}")
        if gate_logit_normalizer <= 0:
            raise ValueError(f"mom: gate_logit_normalizer must be > 0, got {gate_logit_normalizer}")
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim = split_heads(d_model, num_heads, "mom")
        self.value_dim = round(expand_v * self.head_dim)
        if expand_v <= 0 or self.value_dim != expand_v * self.head_dim:
            raise ValueError(f"mom: expand_v={expand_v} times the head dim {self.head_dim} must be a "
                             f"positive integer")
        self.num_memories, self.top_k, self.shared_memory = int(num_memories), int(top_k), shared_memory
        self.num_states = self.num_memories + int(shared_memory)
        self.gate_logit_normalizer, self.aux_loss_coef = gate_logit_normalizer, aux_loss_coef
        self.init_std = init_std
        HK, HV = num_heads * self.head_dim, num_heads * self.value_dim
        self.router = nn.Linear(d_model, self.num_memories, bias=False) if self.num_memories > 1 else None
        self.q = nn.Linear(d_model, HK, bias=False)
        # Stacked per-memory projections [M_total, d_model, widths]: keys, values, then the gate logits
        # (GLA: per channel, with a bias) or the write strength and decay logits (delta rule: per head).
        self.widths = [HK, HV, HK] if memory == "gla" else [HK, HV, num_heads, num_heads]
        self.kvg_weight = nn.Parameter(torch.empty(self.num_states, d_model, sum(self.widths)))
        if memory == "gla":
            self.gate_bias = nn.Parameter(torch.empty(self.num_states, HK))
            self.no_weight_decay = ("gate_bias",)  # a bias per memory: [M, H·K] but not a matrix
        else:
            self.A_log = nn.Parameter(torch.empty(num_heads))
            self.dt_bias = nn.Parameter(torch.empty(num_heads))
            self.no_weight_decay = ("A_log", "dt_bias")
        self.norm = RMSNorm(self.value_dim, norm_eps)
        self.out_gate = nn.Linear(d_model, HV, bias=False) if output_gate else None
        self.out = nn.Linear(HV, d_model, bias=False)
        self.short_conv = short_conv
        if short_conv:
            if int(conv_size) != conv_size or conv_size < 2:
                raise ValueError(f"mom: conv_size must be an integer ≥ 2, got {conv_size}")
            self.q_conv, self.k_conv, self.v_conv = (ShortConvolution(n, int(conv_size), activation="silu")
                                                     for n in (HK, HK, HV))
        self.aux_loss: torch.Tensor | None = None
        self.reset_mixer_parameters()

    @torch.no_grad()
    def reset_mixer_parameters(self):
        """The stacked memory projections are not nn.Linear: normal(0, init_std) like the model's
        generic init. GLA: gate bias 0 (initial decay exp(logsigmoid(0)/16) ≈ 0.958 per routed token).
        Delta rule: Mamba-2's A ~ U(0, 16), dt ~ log-uniform [1e-3, 0.1] (dt_bias = softplus⁻¹(dt))."""
        nn.init.normal_(self.kvg_weight, std=self.init_std)
        if self.memory == "gla":
            nn.init.zeros_(self.gate_bias)
            return
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(0, 16).clamp_min(1e-4).log())
        fill_dt_bias_(self.dt_bias)

    def forward(self, x: torch.Tensor, state: MemoriesState | None = None, documents=None):
        """``documents`` (packed, no state): every memory keeps one segment per document (the routing
        itself is per token), so no memory carries a document's writes into the next."""
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_dim, self.value_dim
        self.aux_loss = None
        if T == 1 and state is not None and documents is None:
            return self._decode_step(x, state)
        if self.router is not None:
            routing = route_top_k(self.router(x), self.top_k)
            memories, weights = routing.memories, routing.weights
            if state is None and self.aux_loss_coef > 0:
                self.aux_loss = self.aux_loss_coef * load_balancing_loss(routing.probs, memories)
        else:  # one memory: every token goes to it with weight 1
            memories = torch.zeros(B, T, 1, dtype=torch.long, device=x.device)
            weights = torch.ones(B, T, 1, device=x.device)
        pack = pack_by_memory(memories, self.num_memories, self.shared_memory, documents)

        xp = x.reshape(B * T, -1)[pack.token]
        bounds = pack.memory_offsets
        weights_per_memory = self.kvg_weight.unbind(0)
        if self.memory == "gla":  # gate logits with a bias: one addmm per memory
            biases = F.pad(self.gate_bias, (H * K + H * V, 0)).unbind(0)
            kvg = torch.cat([torch.addmm(bias, xp[a:b], w)
                             for bias, w, a, b in zip(biases, weights_per_memory, bounds, bounds[1:])])
        else:  # memory m's rows: one matmul with its weights
            kvg = torch.cat([xp[a:b] @ w for w, a, b in zip(weights_per_memory, bounds, bounds[1:])])
        k, v, *gates = kvg.split(self.widths, -1)
        q = self.q(x)
        if self.short_conv:
            q, q_hist = self.q_conv(q, None if state is None else ConvState(state.q_conv), documents)
            k, k_hist = conv_segments(self.k_conv, k, pack.lengths, self._to_segments(state, "k_conv"))
            v, v_hist = conv_segments(self.v_conv, v, pack.lengths, self._to_segments(state, "v_conv"))
        else:  # the SiLU that follows the convolutions otherwise (fla's MoM without them)
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q = q.reshape(B * T, H, K)[pack.token]

        h0 = self._to_segments(state, "S")
        o, final = self._memories(q[None], k.reshape(1, -1, H, K), v.reshape(1, -1, H, V), gates, h0,
                                  state is not None, pack.cu_seqlens)
        o = o[0]
        mixed = (o[pack.slot_rows] * weights.to(o.dtype)[..., None, None]).sum(2)  # [B, T, H, V]
        if self.shared_memory:
            mixed = mixed + o[pack.shared_rows :].view(B, T, H, V)
        mixed = self.norm(mixed)
        if self.out_gate is not None:
            mixed = mixed * F.silu(self.out_gate(x)).view(B, T, H, V)
        y = self.out(mixed.reshape(B, T, H * V))
        if state is None:
            return y, None
        new_state = MemoriesState(self._from_segments(final, B))
        if self.short_conv:
            new_state.q_conv = q_hist.x
            new_state.k_conv = self._from_segments(k_hist, B)
            new_state.v_conv = self._from_segments(v_hist, B)
        return y, new_state

    def _decode_step(self, x: torch.Tensor, state: MemoriesState):
        """One token x [B, 1, d_model]: every memory's projections and recurrence step at once, as
        batched tensor ops of a size independent of the routing (no packing, so a handful of operators
        per step, and a graph torch.compile can take whole); only the memories the token is routed to,
        and the shared one, keep their new state and convolution history. Equals the packed path
        (tests: whole sequence = token by token)."""
        B = x.shape[0]
        H, K, V, M, Mt = self.num_heads, self.head_dim, self.value_dim, self.num_memories, self.num_states
        if self.router is not None:
            routing = route_top_k(self.router(x), self.top_k)
            memories, weights = routing.memories[:, 0], routing.weights[:, 0]  # [B, k]
        else:
            memories = torch.zeros(B, 1, dtype=torch.long, device=x.device)
            weights = torch.ones(B, 1, device=x.device)
        written = torch.zeros(B, Mt, dtype=torch.bool, device=x.device).scatter_(1, memories, True)
        if self.shared_memory:
            written[:, M] = True
        mix = torch.zeros(B, M, dtype=weights.dtype, device=x.device).scatter_(1, memories, weights)
        # [B, Mt, widths] as one batched matmul over the memories (an einsum here becomes a strided
        # reduction under torch.compile on CPU, several times slower)
        kvg = torch.matmul(x[:, 0], self.kvg_weight.to(x.dtype)).transpose(0, 1)
        if self.memory == "gla":
            kvg = kvg + F.pad(self.gate_bias, (H * K + H * V, 0)).to(x.dtype)
        k, v, *gates = kvg.split(self.widths, -1)
        q = self.q(x)
        new_state = MemoriesState(state.S)
        if self.short_conv:
            q, q_hist = self.q_conv(q, ConvState(state.q_conv))
            new_state.q_conv = q_hist.x
            k, new_state.k_conv = self._conv_step(self.k_conv, k, state.k_conv, written)
            v, new_state.v_conv = self._conv_step(self.v_conv, v, state.v_conv, written)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q = q.reshape(B, 1, H, K).expand(B, Mt, H, K).reshape(B * Mt, H, K)
        k, v = k.reshape(B * Mt, H, K), v.reshape(B * Mt, H, V)
        S = state.S.reshape(B * Mt, H, K, V)
        f32 = torch.promote_types(x.dtype, torch.float32)
        if self.memory == "gla":
            g = F.logsigmoid(gates[0].to(f32)) / self.gate_logit_normalizer
            o, S_new = gated_linear_attention_step(q, k, v, g.reshape(B * Mt, H, K), state=S)
        else:
            beta_logits, decay_logits = (t.reshape(B * Mt, H).to(f32) for t in gates)
            g = -self.A_log.to(f32).exp() * F.softplus(decay_logits + self.dt_bias.to(f32))
            o, S_new = gated_delta_rule_step(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v,
                                             self._beta(beta_logits).to(q.dtype), g, state=S)
        o = o.view(B, Mt, H, V)
        new_state.S = torch.where(written[:, :, None, None, None], S_new.view(B, Mt, H, K, V), state.S)
        mixed = (o[:, :M] * mix.to(o.dtype)[:, :, None, None]).sum(1)  # [B, H, V]
        if self.shared_memory:
            mixed = mixed + o[:, M]
        mixed = self.norm(mixed)
        if self.out_gate is not None:
            mixed = mixed * F.silu(self.out_gate(x[:, 0])).view(B, H, V)
        return self.out(mixed.reshape(B, 1, H * V)), new_state

    @staticmethod
    def _conv_step(conv: ShortConvolution, x: torch.Tensor, history: torch.Tensor, written: torch.Tensor):
        """x [B, Mt, D] (every memory's projection of the token), history [B, Mt, W-1, D] -> (the
        convolved x, the history advanced only for the memories in ``written`` [B, Mt])."""
        B, Mt, D = x.shape
        y, new = conv(x.reshape(B * Mt, 1, D), ConvState(history.reshape(B * Mt, -1, D)))
        kept = torch.where(written[:, :, None, None], new.x.view_as(history), history)
        return y.view(B, Mt, D), kept

    def _memories(self, q, k, v, gates, h0, output_final_state, cu_seqlens):
        """All memories in one varlen kernel call over the packed segments: q, k [1, N, H, K],
        v [1, N, H, V]."""
        f32 = torch.promote_types(q.dtype, torch.float32)
        if self.memory == "gla":
            g = F.logsigmoid(gates[0].to(f32)) / self.gate_logit_normalizer
            return gated_linear_attention(q, k, v, g.reshape(*k.shape), initial_state=h0,
                                          output_final_state=output_final_state, cu_seqlens=cu_seqlens)
        beta_logits, decay_logits = (t.reshape(1, -1, self.num_heads).to(f32) for t in gates)
        g = -self.A_log.to(f32).exp() * F.softplus(decay_logits + self.dt_bias.to(f32))
        return gated_delta_rule(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v,
                                self._beta(beta_logits).to(q.dtype), g, initial_state=h0,
                                output_final_state=output_final_state, cu_seqlens=cu_seqlens)

    def _beta(self, beta_logits: torch.Tensor) -> torch.Tensor:
        """The write strengths of the gated-delta memories: sigmoid, or 2·sigmoid for negative eigenvalues."""
        beta = torch.sigmoid(beta_logits)
        return 2 * beta if self.allow_neg_eigval else beta

    @staticmethod
    def _to_segments(state: MemoriesState | None, name: str) -> torch.Tensor | None:
        """state.<name> [B, M_total, ...] -> [M_total·B, ...] in segment order m·B + b (None if no state)."""
        return None if state is None else getattr(state, name).transpose(0, 1).flatten(0, 1)

    def _from_segments(self, t: torch.Tensor, batch_size: int) -> torch.Tensor:
        """[M_total·B, ...] in segment order -> [B, M_total, ...]."""
        return t.view(self.num_states, batch_size, *t.shape[1:]).transpose(0, 1).contiguous()

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> MemoriesState:
        H, K, V, Mt = self.num_heads, self.head_dim, self.value_dim, self.num_states
        # the memories in fp32, or fp64 for an fp64 model (as the kernels compute)
        S = torch.zeros(
            batch_size, Mt, H, K, V, device=device, dtype=torch.promote_types(dtype, torch.float32)
        )
        state = MemoriesState(S)
        if self.short_conv:
            W1 = self.q_conv.kernel_size - 1
            state.q_conv = torch.zeros(batch_size, W1, H * K, device=device, dtype=dtype)
            state.k_conv = torch.zeros(batch_size, Mt, W1, H * K, device=device, dtype=dtype)
            state.v_conv = torch.zeros(batch_size, Mt, W1, H * V, device=device, dtype=dtype)
        return state

    def state_size(self, seq_len: int = 1) -> int:
        H, K, V, Mt = self.num_heads, self.head_dim, self.value_dim, self.num_states
        conv = (self.q_conv.kernel_size - 1) * (H * K + Mt * (H * K + H * V)) if self.short_conv else 0
        return Mt * H * K * V + conv

    def flops_per_token(self, seq_len: int) -> float:
        """Each token is routed to top_k memories (+ the shared one); a memory's packed stream of a
        sequence holds on average T·top_k/M tokens, which bounds its effective chunk."""
        H, K, V, T = self.num_heads, self.head_dim, self.value_dim, seq_len
        slots = self.top_k + int(self.shared_memory)  # memories each token is written to and read from
        per_slot = (
            2.0 * self.d_model * sum(self.widths)
        )  # its k, v and gate logits from that memory's weights
        chunk = default_chunk_size(gated_linear_attention if self.memory == "gla" else gated_delta_rule)
        routed_len = max(
            1, round(T * self.top_k / self.num_memories)
        )  # mean length of a (sequence, memory) stream
        memory_flops = chunked_linear_attention_flops if self.memory == "gla" else chunked_delta_rule_flops
        core = self.top_k * memory_flops(routed_len, chunk, H, K, V)
        if self.shared_memory:
            core += memory_flops(T, chunk, H, K, V)
        total = linear_flops(self.router) + linear_flops(self.q) + slots * per_slot + core
        total += linear_flops(self.out_gate) + linear_flops(self.out)
        if self.short_conv:
            total += short_conv_flops(self.q_conv) + slots * (
                short_conv_flops(self.k_conv) + short_conv_flops(self.v_conv)
            )
        return total
