"""Registered models: one builder function per name, each assembling ``MultiTaskMoE`` from the same blocks, so
comparisons between CAMoE and its baselines are fair.

| name            | experts                                   | gates                                  |
|-----------------|-------------------------------------------|----------------------------------------|
| ``camoe``       | E × (CrossNetV2 -> MLP) if ``expert_type: dcn`` (default), else E × MLP | one softmax gate per task |
| ``mmoe``        | E × MLP (Ma et al. 2018)                  | one softmax gate per task              |
| ``shared_bottom`` | 1 expert (``expert_type``), Caruana 1997 | identically 1                        |
| ``cgc``         | E shared + ``task_experts`` per task (PLE's CGC, Tang et al. 2020, Sec. 4.2) | shared + own experts |
| ``dnn``         | 1 × MLP (deep part only, Covington et al. 2016) | identically 1                    |
| ``dcn_v2``      | 1 × (CrossNetV2 -> MLP) (stacked DCN-v2, Wang et al. 2021, Fig. 2b) | identically 1  |

With one task (grouping ``single``) ``dnn`` / ``dcn_v2`` are the pooled single-task baselines; trained on one
format's rows they are the "one model per format" baseline. ``model.gate_mask`` (written by ``camoe prune``)
restricts each task's gate to its kept experts in every builder; ``model.wide`` adds a first-order term
(``LinearTerm``) to every task's logit in every builder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from camoe.config import ModelConfig
from camoe.model.blocks import CrossNetV2, ExpertBank, FeatureEmbedding, GroupedMLP, LinearTerm, TaskGates
from camoe.model.moe import MultiTaskMoE
from camoe.schema import InputSpec

__all__ = ["MODELS", "build_model"]


def _assemble(
    spec: InputSpec, num_tasks: int, cfg: ModelConfig, num_experts: int, cross: bool,
    allowed: torch.Tensor | None = None,
) -> MultiTaskMoE:
    """Embedding -> E experts (cross network + MLP when ``cross``) -> T gates -> T towers [+ first-order term]."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    embedding = FeatureEmbedding(spec, cfg.embedding_dim, cfg.embedding_init_std, cfg.pairwise_dot,
                                 cfg.sparse_embeddings)
    d = embedding.out_dim
    cross_net = CrossNetV2(d, cfg.num_cross_layers, cfg.low_rank, num_experts) if cross else None
    mlp = GroupedMLP(num_experts, d, cfg.expert_hidden, cfg.dropout, last_activation=True, norm=cfg.norm)
    experts = ExpertBank(mlp, cross_net)
    if cfg.gate_mask is not None:  # inference-time expert masking (`camoe prune`)
        mask = torch.tensor(cfg.gate_mask, dtype=torch.bool)
        if tuple(mask.shape) != (num_tasks, num_experts):
            raise ValueError(f"model.gate_mask is {tuple(mask.shape)}; expected (T, E) = ({num_tasks}, {num_experts})")
        allowed = mask if allowed is None else allowed & mask
    shared = cfg.shared_tower and num_tasks > 1  # one task: the tower already reads every row
    if shared and allowed is not None:  # the shared gate may use any expert some task may use
        allowed = torch.cat([allowed, allowed.any(0, keepdim=True)])
    heads = num_tasks + int(shared)
    gates = TaskGates(d, heads, num_experts, allowed)
    towers = GroupedMLP(heads, experts.out_dim, [*cfg.tower_hidden, 1], cfg.dropout, last_activation=False,
                        norm=cfg.norm)
    linear = LinearTerm(spec, cfg.sparse_embeddings) if cfg.wide else None
    return MultiTaskMoE(embedding, experts, gates, towers, shared_tower=shared, linear=linear)


def camoe(spec: InputSpec, num_tasks: int, cfg: ModelConfig) -> MultiTaskMoE:
    """CAMoE: ``num_experts`` DCN-v2 experts (``expert_type: mlp`` for the DCN-vs-MLP ablation)."""
    return _assemble(spec, num_tasks, cfg, cfg.num_experts, cross=cfg.expert_type == "dcn")


def mmoe(spec: InputSpec, num_tasks: int, cfg: ModelConfig) -> MultiTaskMoE:
    """MMoE: ``num_experts`` MLP experts."""
    return _assemble(spec, num_tasks, cfg, cfg.num_experts, cross=False)


def shared_bottom(spec: InputSpec, num_tasks: int, cfg: ModelConfig) -> MultiTaskMoE:
    """One shared network (``expert_type``) under T towers."""
    return _assemble(spec, num_tasks, cfg, 1, cross=cfg.expert_type == "dcn")


def cgc(spec: InputSpec, num_tasks: int, cfg: ModelConfig) -> MultiTaskMoE:
    """CGC: experts ordered [shared..., task 0's..., task 1's..., ...] in one bank (E = S + T·K); task t's gate
    spreads over the shared experts and its own."""
    shared, own = cfg.num_experts, cfg.task_experts
    total = shared + num_tasks * own
    allowed = torch.zeros(num_tasks, total, dtype=torch.bool)  # (T, E)
    allowed[:, :shared] = True
    for t in range(num_tasks):
        allowed[t, shared + t * own : shared + (t + 1) * own] = True
    return _assemble(spec, num_tasks, cfg, total, cross=cfg.expert_type == "dcn", allowed=allowed)


def dnn(spec: InputSpec, num_tasks: int, cfg: ModelConfig) -> MultiTaskMoE:
    """Embedding -> MLP (``expert_hidden``) -> one tower per task."""
    return _assemble(spec, num_tasks, cfg, 1, cross=False)


def dcn_v2(spec: InputSpec, num_tasks: int, cfg: ModelConfig) -> MultiTaskMoE:
    """Embedding -> CrossNetV2 (``num_cross_layers``, ``low_rank``) -> MLP -> one tower per task."""
    return _assemble(spec, num_tasks, cfg, 1, cross=True)


MODELS: dict[str, Callable[[InputSpec, int, ModelConfig], MultiTaskMoE]] = {
    "camoe": camoe, "mmoe": mmoe, "shared_bottom": shared_bottom, "cgc": cgc, "dnn": dnn, "dcn_v2": dcn_v2,
}


def build_model(config: ModelConfig, spec: InputSpec, num_tasks: int) -> MultiTaskMoE:
    """Build a registered model with fresh weights (from torch's global generator; seed it first).

    Raises:
        ValueError: ``config.name`` is not registered (lists the registered names), or ``num_tasks`` < 1.
    """
    if config.name not in MODELS:
        raise ValueError(f"model.name '{config.name}' is not registered; choose one of {sorted(MODELS)}")
    return MODELS[config.name](spec, num_tasks, config)
