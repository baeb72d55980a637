"""Models: every registered model maps (cat_ids, multi_ids, dense) to ``ModelOutput`` with logits (B, T)."""

from __future__ import annotations

from camoe.model.blocks import (
    CrossNetV2,
    ExpertBank,
    FeatureEmbedding,
    GroupedMLP,
    GroupedNorm,
    LinearTerm,
    PairwiseDot,
    TaskGates,
)
from camoe.model.moe import ModelOutput, MultiTaskMoE
from camoe.model.registry import MODELS, build_model

__all__ = [
    "CrossNetV2",
    "ExpertBank",
    "FeatureEmbedding",
    "GroupedMLP",
    "GroupedNorm",
    "LinearTerm",
    "MODELS",
    "ModelOutput",
    "MultiTaskMoE",
    "PairwiseDot",
    "TaskGates",
    "build_model",
]
