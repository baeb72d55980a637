"""Single-network CTR baselines from the same blocks: DNN and DCN-v2.

Both are the CAMoE assembly with one expert (whose softmax gate is identically 1):

    DNN:    x0 -> MLP -> tower_t -> logit_t                         (deep part only, Covington et al. 2016)
    DCN-v2: x0 -> CrossNetV2 -> MLP -> tower_t -> logit_t           (stacked DCN-v2, Wang et al. 2021, Fig. 2b)

With one task they are the single-task baselines of the paper's comparison: trained on one format's rows only
("single task per format", ``camoe.experiments`` training mode ``per_format``) or on all rows with grouping
``single`` (the pooled single-head model). With T > 1 tasks they are the shared-bottom model with that bottom.
"""

from __future__ import annotations

from camoe.config import ModelConfig
from camoe.model.camoe import CAMoE
from camoe.schema import InputSpec

__all__ = ["DCNv2", "DNN"]


class DNN(CAMoE):
    """Embedding -> MLP (``expert_hidden``) -> one tower per task; no cross layers, one expert.

    Shape:
        cat_ids (B, F), multi_ids (B, M, L), dense (B, N) -> ModelOutput with logits (B, T), gate weights (B, T, 1).

    Example:
        >>> import torch
        >>> spec = InputSpec(("device",), (5,), (), (), 1, ("bid",))
        >>> out = DNN(spec, 1, ModelConfig(num_experts=4))(torch.tensor([[2]]), torch.zeros(1, 0, 1, dtype=torch.long),
        ...                                                 torch.zeros(1, 1))
        >>> tuple(out.logits.shape), tuple(out.gate_weights.shape)
        ((1, 1), (1, 1, 1))
    """

    def __init__(self, spec: InputSpec, num_tasks: int, config: ModelConfig) -> None:
        super().__init__(spec, num_tasks, config.model_copy(update={"num_experts": 1, "expert_type": "mlp"}))


class DCNv2(CAMoE):
    """Embedding -> CrossNetV2 (``num_cross_layers``, ``low_rank``) -> MLP -> one tower per task; one expert.

    Shape:
        cat_ids (B, F), multi_ids (B, M, L), dense (B, N) -> ModelOutput with logits (B, T), gate weights (B, T, 1).
    """

    def __init__(self, spec: InputSpec, num_tasks: int, config: ModelConfig) -> None:
        super().__init__(spec, num_tasks, config.model_copy(update={"num_experts": 1, "expert_type": "dcn"}))
