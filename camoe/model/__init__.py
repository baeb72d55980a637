"""Models: every registered model maps (cat_ids, multi_ids, dense) to ``ModelOutput`` with logits (B, T)."""

from __future__ import annotations

from torch import nn

from camoe.config import ModelConfig
from camoe.model.baselines import DCNv2, DNN
from camoe.model.blocks import CrossNetV2, ExpertBank, FeatureEmbedding, GroupedMLP, PairwiseDot, TaskGates
from camoe.model.camoe import CGC, CAMoE, MMoE, ModelOutput, SharedBottom
from camoe.schema import InputSpec

__all__ = [
    "CAMoE",
    "CGC",
    "DCNv2",
    "DNN",
    "MMoE",
    "SharedBottom",
    "CrossNetV2",
    "ExpertBank",
    "FeatureEmbedding",
    "GroupedMLP",
    "MODELS",
    "ModelOutput",
    "PairwiseDot",
    "TaskGates",
    "build_model",
]

# Every entry is built from the same blocks (embedding, expert bank, gates, towers), so comparisons are fair.
MODELS: dict[str, type[nn.Module]] = {
    "camoe": CAMoE, "mmoe": MMoE, "shared_bottom": SharedBottom, "cgc": CGC, "dnn": DNN, "dcn_v2": DCNv2,
}


def build_model(config: ModelConfig, spec: InputSpec, num_tasks: int) -> nn.Module:
    """Build a registered model.

    Raises:
        ValueError: ``config.name`` is not registered (lists the registered names).
    """
    if config.name not in MODELS:
        raise ValueError(f"model.name '{config.name}' is not registered; choose one of {sorted(MODELS)}")
    return MODELS[config.name](spec, num_tasks, config)
