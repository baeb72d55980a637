"""Balanced sampling of training rows by group (e.g. modality), the companion paper's mixed-source batches.

Each epoch draws as many rows as the training set holds; group g contributes round(share_g · N) of them, drawn
without replacement when the group has enough rows (a random subset) and with replacement otherwise
(oversampling); the draw is then shuffled. The sampling depends only on the row's format, never on its label,
so the click rate inside each format is unchanged and pCTR stays calibrated.

Source: Verma et al., "Cold-Starting Podcast Ads and Promotions with Multi-Task Learning on Spotify", WSDM 2026
(arXiv 2601.02306): "balanced batches" mixed by source.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["balanced_order", "format_groups", "row_groups"]


def format_groups(
    formats: tuple[str, ...] | list[str],
    attributes: dict[str, dict[str, str]],
    by: str,
    shares: dict[str, float] | None = None,
    present: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The group of each ad format (from one of its attributes) and the target share of each group.

    Args:
        formats: the K format names.
        attributes: format -> attributes (the config's ``formats`` table).
        by: attribute to group by (``modality``), or ``format`` for one group per format.
        shares: group -> target share (normalised to sum 1); None or empty = equal shares over groups with rows.
        present: (K,) bool, formats that have rows (default: all); groups are formed over those only.

    Returns:
        (group of each format (K,) int64, -1 for formats without rows; shares (G,) float64 summing to 1; group
        names (G,)).

    Raises:
        ValueError: a format lacks the attribute, or ``shares`` names unknown groups or misses present ones.

    Example:
        >>> group, share, names = format_groups(["a", "v"], {"a": {"modality": "audio"}, "v": {"modality": "video"}},
        ...                                     "modality")
        >>> group.tolist(), share.tolist(), names
        ([0, 1], [0.5, 0.5], ['audio', 'video'])
    """
    if by == "format":
        value_of = {f: f for f in formats}
    else:
        lacking = [f for f in formats if by not in attributes.get(f, {})]
        if lacking:
            raise ValueError(f"train.balance_by '{by}': formats {lacking} have no attribute '{by}' in the config's "
                             f"formats table; use an attribute every format has, or 'format'")
        value_of = {f: attributes[f][by] for f in formats}
    has_rows = np.ones(len(formats), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    names = sorted({value_of[f] for f, p in zip(formats, has_rows) if p})
    group = np.array([names.index(value_of[f]) if p else -1 for f, p in zip(formats, has_rows)], dtype=np.int64)
    if shares:
        unknown = sorted(set(shares) - set(names))
        missing = sorted(set(names) - set(shares))
        if unknown or missing:
            raise ValueError(f"train.balance_shares: unknown groups {unknown}, groups without a share {missing}; "
                             f"groups by '{by}' in the training rows: {names}")
        weights = np.array([float(shares[n]) for n in names], dtype=np.float64)
        if weights.sum() <= 0:
            raise ValueError(f"train.balance_shares: shares must not all be 0, got {shares}")
    else:
        weights = np.ones(len(names), dtype=np.float64)
    return group, weights / weights.sum(), names


def row_groups(
    format_ids: np.ndarray,
    formats: tuple[str, ...] | list[str],
    attributes: dict[str, dict[str, str]],
    by: str,
    shares: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``format_groups`` applied to rows: the group index of every row (N,), the shares (G,) and group names.

    Example:
        >>> g, s, names = row_groups(np.array([0, 0, 1]), ["a", "v"], {"a": {"modality": "audio"},
        ...                          "v": {"modality": "video"}}, "modality")
        >>> g.tolist(), s.tolist(), names
        ([0, 0, 1], [0.5, 0.5], ['audio', 'video'])
    """
    format_ids = np.asarray(format_ids)
    present = np.bincount(format_ids, minlength=len(formats)) > 0
    group, weights, names = format_groups(formats, attributes, by, shares, present)
    return group[format_ids], weights, names


def balanced_order(
    groups: torch.Tensor, shares: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Row indices for one epoch with each group at its target share.

    Args:
        groups: (N,) int64 group index of each row.
        shares: (G,) target share per group, summing to 1; a group with no rows gets none.
        num_samples: rows to draw (the epoch length, usually N).
        generator: seeded generator (the trainer's shuffling generator), so the draw is reproducible.

    Returns:
        (num_samples,) int64 indices into the N rows, shuffled. Counts per group: round(share_g · num_samples),
        the rounding remainder going to the largest groups.

    Raises:
        ValueError: ``shares`` does not cover every group index.

    Example:
        >>> idx = balanced_order(torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0.5, 0.5]), 10,
        ...                      torch.Generator().manual_seed(0))
        >>> torch.bincount(torch.tensor([0, 0, 0, 0, 1])[idx]).tolist()
        [5, 5]
    """
    num_groups = int(shares.numel())
    if len(groups) and int(groups.max()) >= num_groups:
        raise ValueError(f"group index {int(groups.max())} has no share (G = {num_groups})")
    counts = torch.bincount(groups, minlength=num_groups)  # (G,)
    target = shares.double() * (counts > 0).double()  # (G,) empty groups get nothing
    target = target / target.sum()
    quota = torch.floor(target * num_samples).long()  # (G,)
    remainder = num_samples - int(quota.sum())
    if remainder > 0:
        order = torch.argsort(target * num_samples - quota, descending=True, stable=True)
        quota[order[:remainder]] += 1
    parts = []
    for g in range(num_groups):
        if quota[g] == 0:
            continue
        rows = torch.nonzero(groups == g).flatten()  # (n_g,)
        if quota[g] <= len(rows):
            pick = rows[torch.randperm(len(rows), generator=generator)[: int(quota[g])]]
        else:
            pick = rows[torch.randint(len(rows), (int(quota[g]),), generator=generator)]
        parts.append(pick)
    drawn = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    return drawn[torch.randperm(len(drawn), generator=generator)]
