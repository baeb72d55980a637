"""Adaptive loss masking: masked binary cross-entropy over task heads.

Per-task normalisation (default; CAMoE with the companion paper's form, shared/PAPER.md):

    L = Σ_t λ_t · (1 / n_t) Σ_b m_{b,t} · BCE(y_b, σ(z_{b,t})),    n_t = Σ_b m_{b,t}

where m_{b,t} = mask[format(b), t] (format × task mask matrix). A task with n_t = 0 rows in the batch adds exactly
0 and gets no gradient (no 0/0). Global normalisation divides the whole masked sum by Σ_{b,t} m_{b,t} instead.
Optional uncertainty weighting (Kendall et al. 2018, Eq. 10 for classification): L = Σ_t [exp(-s_t) L_t + s_t] over
tasks present in the batch, with learned s_t = log σ_t². Defaults: per-task normalisation on, λ_t = 1, uncertainty
weighting off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["MaskedLoss", "masked_bce"]


@dataclass
class MaskedLoss:
    """Loss of one batch.

    Attributes:
        total: scalar to back-propagate.
        task_losses: (T,) per-task mean BCE over the task's rows (0 where the task has no rows).
        task_rows: (T,) number of rows per task in the batch (mask sums).
    """

    total: torch.Tensor
    task_losses: torch.Tensor
    task_rows: torch.Tensor


def masked_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    normalisation: str = "per_task",
    task_weights: torch.Tensor | None = None,
    log_vars: torch.Tensor | None = None,
    norm_rows: torch.Tensor | None = None,
) -> MaskedLoss:
    """Masked BCE over task heads.

    Args:
        logits: (B, T) task logits.
        labels: (B,) clicks in {0, 1}.
        mask: (B, T) float in {0, 1}: which heads each row trains.
        normalisation: "per_task" (mean over each task's rows) or "global" (mean over all unmasked cells).
        task_weights: (T,) λ_t; None = 1.
        log_vars: (T,) learned s_t for uncertainty weighting; None = off.
        norm_rows: (T,) row counts to normalise by instead of this batch's own (data-parallel training passes the
            task's rows in the whole global batch, so the ranks' averaged gradients equal one process's); None =
            ``mask.sum(0)``.

    Returns:
        ``MaskedLoss``; ``total`` is finite whenever the logits are.

    Raises:
        ValueError: unknown normalisation or mismatched shapes.

    Example:
        >>> out = masked_bce(torch.zeros(2, 2), torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        >>> round(out.total.item(), 4), out.task_losses.tolist(), out.task_rows.tolist()
        (0.6931, [0.6931471824645996, 0.0], [2.0, 0.0])
    """
    if logits.shape != mask.shape or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"shapes: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, mask {tuple(mask.shape)}")
    target = labels.to(logits.dtype).unsqueeze(1).expand_as(logits)  # (B, T)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * mask  # (B, T); masked cells = 0
    rows = mask.sum(dim=0)  # (T,)
    denom = rows if norm_rows is None else norm_rows.to(logits.dtype)  # (T,)
    task_losses = bce.sum(dim=0) / denom.clamp_min(1.0)  # (T,); empty task: 0 / 1 = 0
    weights = task_weights if task_weights is not None else torch.ones_like(task_losses)
    if normalisation == "per_task":
        if log_vars is not None:
            present = (denom > 0).to(logits.dtype)  # (T,)
            total = (present * (torch.exp(-log_vars) * weights * task_losses + log_vars)).sum()
        else:
            total = (weights * task_losses).sum()
    elif normalisation == "global":
        total = (bce * weights).sum() / denom.sum().clamp_min(1.0)
    else:
        raise ValueError(f"normalisation must be 'per_task' or 'global', got '{normalisation}'")
    return MaskedLoss(total=total, task_losses=task_losses.detach(), task_rows=rows.detach())
