"""The scoring head: model -> each row's own task logit -> sigmoid -> negative-downsampling correction.

``ScoringModule`` is the one place where a row's own head is picked and its logit becomes a pCTR. Eager scoring runs
it in PyTorch; the ONNX model is this module exported (``camoe.scoring.onnx``), so both backends compute the same
function. The post-hoc calibration map and the checks on the output are applied after it by ``Scorer``.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import nn

__all__ = ["ScoringModule", "correct_downsampling"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def correct_downsampling(p: ArrayT, rate: float) -> ArrayT:
    """Undo negative downsampling: q = p / (p + (1 − p) / w) (He et al. 2014, "Practical Lessons from Predicting
    Clicks on Ads at Facebook", Sec. 6.2 re-calibration).

    Args:
        p: pCTR (any shape; NumPy array or torch tensor) of a model trained on data whose negatives were kept with
            probability ``rate`` = w.
        rate: w in (0, 1].

    Raises:
        ValueError: ``rate`` outside (0, 1].

    Example:
        >>> round(float(correct_downsampling(np.array([0.5]), 0.1)[0]), 4)
        0.0909
    """
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate must be in (0, 1], got {rate}")
    if isinstance(p, torch.Tensor):
        return p / (p + (1.0 - p) / rate)
    p = np.asarray(p, dtype=np.float64)
    return p / (p + (1.0 - p) / rate)


class ScoringModule(nn.Module):
    """Model + own-task selection + sigmoid + downsampling correction, with positional tensor inputs.

    When the gates restrict tasks to subsets of experts (CGC, a pruned model from ``camoe prune``) only the experts
    of the tasks present in the batch are computed.

    Args:
        model: a registered model (``camoe.model``).
        format_task_index: (K,) task index of each ad format.
        negative_sampling_rate: w when training negatives were kept at rate w, else None.
        all_tasks: return every head's pCTR (B, T) instead of each row's own (B,).

    Shape:
        cat_ids (B, F) int64, multi_ids (B, M, L) int64, dense (B, N) float32, format_ids (B,) int64
        -> pctr (B,) float64 (or (B, T) with ``all_tasks``).
    """

    def __init__(
        self, model: nn.Module, format_task_index: np.ndarray, negative_sampling_rate: float | None,
        all_tasks: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("task_of_format", torch.tensor(np.asarray(format_task_index), dtype=torch.long))  # a copy
        self.rate = negative_sampling_rate
        self.all_tasks = all_tasks
        self.select_experts = getattr(getattr(model, "gates", None), "allowed", None) is not None and not all_tasks
        self.num_tasks = int(getattr(model, "num_tasks", 1))

    def forward(
        self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor, format_ids: torch.Tensor
    ) -> torch.Tensor:
        task = self.task_of_format[format_ids].unsqueeze(1)  # (B, 1)
        if self.select_experts:
            present = (task == torch.arange(self.num_tasks, device=task.device)).any(0)  # (T,) tasks in the batch
            logits = self.model(cat_ids, multi_ids, dense, tasks=present).logits  # (B, T), own tasks defined
        else:
            logits = self.model(cat_ids, multi_ids, dense).logits  # (B, T)
        if not self.all_tasks:
            logits = logits.gather(1, task).squeeze(1)  # (B,)
        p = torch.sigmoid(logits.double())  # float64: saturates at |logit| > 36, not 17
        return correct_downsampling(p, self.rate) if self.rate is not None else p
