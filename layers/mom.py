"""Mixture-of-Memories (MoM): several gated linear-attention memories, each token routed to its top-k."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernels import gated_linear_attention
from layers.attention import split_heads
from layers.mom_routing import conv_segments, load_balancing_loss, pack_by_memory, route_top_k
from layers.norms import RMSNorm
from layers.registry import register_mixer
from layers.short_conv import ConvState, ShortConvolution
from layers.state import MixerState


@dataclass
class MemoriesState(MixerState):
    """The MoM decoding state. S: [B, M_total, H, K, V] in fp32, one GLA state per memory (M routed
    memories, then the shared one). With short convolutions, their last W-1 inputs: q_conv
    [B, W-1, H·K] (the token stream), k_conv [B, M_total, W-1, H·K] and v_conv [B, M_total, W-1, H·V]
    (each memory's own stream of routed tokens); None without."""

    S: torch.Tensor
    q_conv: torch.Tensor | None = None
    k_conv: torch.Tensor | None = None
    v_conv: torch.Tensor | None = None


@register_mixer("mom")
class MixtureOfMemories(nn.Module):
    """MoM (Du et al., 2025, "MoM: Linear Sequence Modeling with Mixture-of-Memories").

    A router ``softmax(W_r x_t)`` over M memories keeps the top-k, renormalised to weights w_{t,j}.
    Memory m is a gated linear attention (GLA) state with its own key, value and gate projections:
    ``S^m_t = diag(exp g^m_t) S^m_{t-1} + k^m_tᵀ v^m_t`` when token t is routed to m, else
    ``S^m_t = S^m_{t-1}`` (the memory neither decays nor learns from tokens it does not see), with the
    per-channel log-decay ``g^m_t = logsigmoid(x_t W^m_g + b^m_g) / gate_logit_normalizer`` (fla's GLA
    form, normaliser 16). The query ``q_t = x_t W_q`` is shared. The token reads the memories it
    wrote: ``o_t = Σ_j w_{t,j} · scale · q_t S^{m_j}_t``, plus ``scale · q_t S^shared_t`` of an
    always-on shared memory (its own k, v, g) when ``shared_memory``. Then a per-head RMSNorm,
    optionally gated by ``silu(x_t W_o')``, and the output projection.

    All memories run in ONE varlen kernel call: the B·M_total segments (segment m·B + b = the tokens
    of sequence b routed to memory m, in time order; see layers.mom_routing) each start from their
    own initial state. Per-token cost is k (+1) memory reads and writes, whatever M is.

    Training path (state None): ``self.aux_loss = aux_loss_coef · M · Σ_m f_m P_m`` (Switch
    load-balancing loss); None on the decoding path, with one memory, or with coefficient 0.
    Optional short convolutions (``short_conv``, kernel ``conv_size``, SiLU as in fla): on q over the
    token stream, on each memory's k and v over that memory's own stream of routed tokens (weights
    shared by the memories, as in fla's MoM), so per-token cost stays k (+1).
    Key head dim = d_model / num_heads; value head dim = expand_v · that.
    x: [B, T, d_model] -> y: [B, T, d_model].
    """

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
        short_conv: bool = False,
        conv_size: int = 4,
    ):
        super().__init__()
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
        # Stacked per-memory projections [M_total, d_model, K | V | K] (keys, values, gate logits).
        self.kvg_weight = nn.Parameter(torch.empty(self.num_states, d_model, 2 * HK + HV))
        self.gate_bias = nn.Parameter(torch.empty(self.num_states, HK))
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

    def reset_mixer_parameters(self):
        """The stacked memory projections are not nn.Linear: normal(0, init_std) like the model's
        generic init, gate bias 0 (initial decay exp(logsigmoid(0)/16) ≈ 0.958 per routed token)."""
        nn.init.normal_(self.kvg_weight, std=self.init_std)
        nn.init.zeros_(self.gate_bias)

    def forward(self, x: torch.Tensor, state: MemoriesState | None = None):
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_dim, self.value_dim
        self.aux_loss = None
        if self.router is not None:
            routing = route_top_k(self.router(x), self.top_k)
            memories, weights = routing.memories, routing.weights
            if state is None and self.aux_loss_coef > 0:
                self.aux_loss = self.aux_loss_coef * load_balancing_loss(routing.probs, memories)
        else:  # one memory: every token goes to it with weight 1
            memories = torch.zeros(B, T, 1, dtype=torch.long, device=x.device)
            weights = torch.ones(B, T, 1, device=x.device)
        pack = pack_by_memory(memories, self.num_memories, self.shared_memory)

        xp = x.reshape(B * T, -1)[pack.token]
        bounds = pack.memory_offsets
        biases = F.pad(self.gate_bias, (H * K + H * V, 0)).unbind(0)
        weights_per_memory = self.kvg_weight.unbind(0)
        kvg = torch.cat([torch.addmm(bias, xp[a:b], w)  # memory m's rows: one matmul with its weights
                         for bias, w, a, b in zip(biases, weights_per_memory, bounds, bounds[1:])])
        k, v, g = kvg.split([H * K, H * V, H * K], -1)
        g = F.logsigmoid(g.to(torch.promote_types(g.dtype, torch.float32))) / self.gate_logit_normalizer
        q = self.q(x)
        if self.short_conv:
            q, q_hist = self.q_conv(q, None if state is None else ConvState(state.q_conv))
            k, k_hist = conv_segments(self.k_conv, k, pack.lengths, self._to_segments(state, "k_conv"))
            v, v_hist = conv_segments(self.v_conv, v, pack.lengths, self._to_segments(state, "v_conv"))
        q = q.reshape(B * T, H, K)[pack.token]

        h0 = self._to_segments(state, "S")
        o, final = gated_linear_attention(
            q[None], k.reshape(1, -1, H, K), v.reshape(1, -1, H, V), g.reshape(1, -1, H, K),
            initial_state=h0, output_final_state=state is not None, cu_seqlens=pack.cu_seqlens,
        )
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

    @staticmethod
    def _to_segments(state: MemoriesState | None, name: str) -> torch.Tensor | None:
        """state.<name> [B, M_total, ...] -> [M_total·B, ...] in segment order m·B + b (None if no state)."""
        return None if state is None else getattr(state, name).transpose(0, 1).flatten(0, 1)

    def _from_segments(self, t: torch.Tensor, batch_size: int) -> torch.Tensor:
        """[M_total·B, ...] in segment order -> [B, M_total, ...]."""
        return t.view(self.num_states, batch_size, *t.shape[1:]).transpose(0, 1).contiguous()

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> MemoriesState:
        H, K, V, Mt = self.num_heads, self.head_dim, self.value_dim, self.num_states
        state = MemoriesState(torch.zeros(batch_size, Mt, H, K, V, device=device))
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
