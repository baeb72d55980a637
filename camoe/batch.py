"""A batch of encoded impressions as tensors (B rows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Batch"]


@dataclass
class Batch:
    """Encoded inputs of B impressions.

    Attributes:
        cat_ids: (B, F) int64 ids into each categorical table (0 missing, 1 OOV).
        multi_ids: (B, M, L) int64 ids of multi-valued features, 0 = padding / no value.
        dense: (B, N) float32 transformed numeric features; never NaN.
        format_ids: (B,) int64 index of each row's ad format in ``TaskLayout.formats``.
        labels: (B,) float32 clicks in {0, 1}, or None when scoring.
    """

    cat_ids: torch.Tensor
    multi_ids: torch.Tensor
    dense: torch.Tensor
    format_ids: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.format_ids.shape[0])

    def select(self, index: torch.Tensor | slice) -> Batch:
        """Rows ``index`` of every tensor (a view for slices, a copy for index tensors)."""
        return Batch(
            cat_ids=self.cat_ids[index],
            multi_ids=self.multi_ids[index],
            dense=self.dense[index],
            format_ids=self.format_ids[index],
            labels=None if self.labels is None else self.labels[index],
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            cat_ids=self.cat_ids.to(device),
            multi_ids=self.multi_ids.to(device),
            dense=self.dense.to(device),
            format_ids=self.format_ids.to(device),
            labels=None if self.labels is None else self.labels.to(device),
        )
