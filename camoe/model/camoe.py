"""CAMoE: Cross-modal Adaptive Mixture-of-Experts (Verma, Chen, Mei, KDD 2025, arXiv 2506.18735).

    x0      = [embed(categorical ids, multi-valued ids), dense,
               pairwise dots of field embeddings (optional, DLRM)]     (B, d)
    h_e     = expert_e(x0), expert = CrossNetV2 -> MLP                  (E, B, H)
    g_t     = softmax(W_t x0)                                          (B, T, E)
    z_t     = Σ_e g_{t,e} h_e                                          (T, B, H)
    logit_t = tower_t(z_t)                                             (B, T)

The loss (masked per task) lives in ``camoe.training.loss``; the sigmoid is applied in evaluation and serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camoe.config import ModelConfig
from camoe.model.blocks import ExpertBank, FeatureEmbedding, GroupedMLP, TaskGates
from camoe.schema import InputSpec

__all__ = ["CAMoE", "CGC", "MMoE", "ModelOutput", "SharedBottom"]


@dataclass
class ModelOutput:
    """Forward output.

    Attributes:
        logits: (B, T) one logit per task head.
        gate_weights: (B, T, E) softmax gate weights per task.
        embeddings: (B, F + M, D) looked-up embeddings (for the optional L2 penalty), or None.
    """

    logits: torch.Tensor
    gate_weights: torch.Tensor
    embeddings: torch.Tensor | None = None


class CAMoE(nn.Module):
    """Shared experts, one gate and one tower per task.

    Args:
        spec: encoded input layout (table sizes come from the fitted encoder only).
        num_tasks: T.
        config: sizes; ``expert_type`` switches DCN (CrossNetV2 + MLP) and MLP experts.

    Shape:
        cat_ids (B, F) int64, multi_ids (B, M, L) int64, dense (B, N) float32 -> ModelOutput with logits (B, T).

    Example:
        >>> spec = InputSpec(("device",), (5,), (), (), 1, ("bid",))
        >>> model = CAMoE(spec, num_tasks=2, config=ModelConfig(num_experts=3))
        >>> out = model(torch.tensor([[2], [3]]), torch.zeros(2, 0, 1, dtype=torch.long), torch.zeros(2, 1))
        >>> tuple(out.logits.shape), tuple(out.gate_weights.shape)
        ((2, 2), (2, 2, 3))
    """

    def __init__(
        self, spec: InputSpec, num_tasks: int, config: ModelConfig, gate_allowed: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.spec, self.num_tasks, self.config = spec, num_tasks, config
        self.embedding = FeatureEmbedding(spec, config.embedding_dim, config.embedding_init_std, config.pairwise_dot)
        d = self.embedding.out_dim
        self.experts = ExpertBank(
            d, config.num_experts, config.expert_hidden, config.expert_type, config.num_cross_layers,
            config.low_rank, config.dropout,
        )
        if config.gate_mask is not None:  # inference-time expert masking (`camoe prune`)
            mask = torch.tensor(config.gate_mask, dtype=torch.bool)
            if tuple(mask.shape) != (num_tasks, config.num_experts):
                raise ValueError(
                    f"model.gate_mask is {tuple(mask.shape)}; expected (T, E) = ({num_tasks}, {config.num_experts})"
                )
            gate_allowed = mask if gate_allowed is None else gate_allowed & mask
        self.gates = TaskGates(d, num_tasks, config.num_experts, gate_allowed)
        self.towers = GroupedMLP(num_tasks, self.experts.out_dim, [*config.tower_hidden, 1], config.dropout,
                                 last_activation=False)

    @torch.no_grad()
    def init_output_bias(self, logit: torch.Tensor) -> None:
        """Start each tower's logit bias at a prior, e.g. logit(task CTR) of the training rows (T,).

        With CTRs of 0.1-3% the bias must reach about -3 to -7; starting there keeps early steps from bending the
        hidden layers to push every logit down.
        """
        self.towers.biases[-1].copy_(logit.view(-1, 1, 1).to(self.towers.biases[-1].dtype))  # (T, 1, 1)

    def forward(
        self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor, tasks: torch.Tensor | None = None
    ) -> ModelOutput:
        """Logits of every task head.

        Args:
            tasks: optional (T,) bool, the tasks whose logits the caller will use (e.g. the tasks of the formats in a
                scoring request). Only the experts those tasks' gates may use (``gate_mask``) are computed; logits of
                the other tasks are then undefined, and ``gate_weights`` holds only the computed experts (B, T, E').
        """
        x0, fields = self.embedding.encode(cat_ids, multi_ids, dense)  # (B, d), (B, F + M, D)
        gates = self.gates(x0)  # (B, T, E)
        if tasks is not None and self.gates.allowed is not None:
            index = (self.gates.allowed & tasks.unsqueeze(1)).any(0).nonzero().squeeze(1)  # (E',) experts needed
            h = self.experts(x0, index)  # (E', B, H)
            gates = gates.index_select(2, index)  # (B, T, E')
        else:
            h = self.experts(x0)  # (E, B, H)
        z = torch.einsum("bte,ebh->tbh", gates, h)  # (T, B, H)
        logits = self.towers(z).squeeze(-1).transpose(0, 1)  # (B, T)
        return ModelOutput(logits=logits, gate_weights=gates, embeddings=fields)


class MMoE(CAMoE):
    """MMoE baseline (Ma et al. 2018): the same assembly with MLP experts (no cross layers)."""

    def __init__(self, spec: InputSpec, num_tasks: int, config: ModelConfig) -> None:
        super().__init__(spec, num_tasks, config.model_copy(update={"expert_type": "mlp"}))


class SharedBottom(CAMoE):
    """Shared-bottom multi-task baseline (Caruana 1997): one shared network (``expert_type`` dcn or mlp), T towers.

    Built as the assembly with a single expert, whose softmax gate is identically 1.
    """

    def __init__(self, spec: InputSpec, num_tasks: int, config: ModelConfig) -> None:
        super().__init__(spec, num_tasks, config.model_copy(update={"num_experts": 1}))


class CGC(CAMoE):
    """PLE's customised gate control layer (Tang et al. 2020, Sec. 4.2): ``num_experts`` shared experts plus
    ``task_experts`` experts owned by each task; task t's gate spreads over the shared experts and its own.

    Experts are ordered [shared..., task 0's..., task 1's..., ...] in one batched bank (E = S + T·K).
    """

    def __init__(self, spec: InputSpec, num_tasks: int, config: ModelConfig) -> None:
        shared, own = config.num_experts, config.task_experts
        total = shared + num_tasks * own
        allowed = torch.zeros(num_tasks, total, dtype=torch.bool)  # (T, E)
        allowed[:, :shared] = True
        for t in range(num_tasks):
            allowed[t, shared + t * own : shared + (t + 1) * own] = True
        super().__init__(spec, num_tasks, config.model_copy(update={"num_experts": total}), gate_allowed=allowed)
