"""Bounded-memory metrics for streamed splits: exact up to a row budget, score histograms per ad format beyond it.

Exact AUC-PR needs every score of a slice sorted, so its memory grows with the rows evaluated. ``BinnedMetrics``
keeps the rows of a split (about 21 bytes each) while there are at most ``exact_max_rows`` of them (default
262,144) and then computes exactly what ``evaluate_groups`` does. A larger split is summed into fixed-size
histograms as it is read: per format, the impressions and clicks of every pCTR **bucket**, where a bucket keeps the
float32 exponent and the top ``MANTISSA_BITS`` = 12 mantissa bits of the score. Buckets are ordered like the
scores, so ranking metrics see the scores rounded down to a relative precision of 2^-12 ≈ 0.024% (rows inside one
bucket count as tied), and scores below 2^-30 share the first bucket.

The binned metrics are those of ``camoe.evaluation.metrics.binary_metrics`` (scikit-learn), computed on one weighted
row per (bucket, label) with the bucket's mean pCTR:

* ``auc_pr``, ``auc_roc``, ``ece``, ``oracle_auc_pr``: on the bucketed scores. Close to the per-row values when a
  format's scores spread over many buckets (tests: < 1e-4 on 300k rows); when a model's scores within a format
  span well under 1% (relative) many rows tie and AUC-PR can move by 1e-3 or more;
* ``rows``, ``positives``, ``ctr``, ``mean_pctr``, ``calibration_ratio``: exact (sums);
* ``logloss`` and ``ne``: exact, summed per record batch with ``sklearn.metrics.log_loss(normalize=False)``.

Memory once binned: 3 arrays of ``NUM_BUCKETS`` (126,978) 8-byte numbers per format (and 2 more with a
true-probability column), 3-5 MB per format whatever the number of rows (so hundreds of formats cost GBs: raise
``exact_max_rows`` or group rare formats); a record batch adds only arrays of its own length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, log_loss

from camoe.evaluation.metrics import PCTR_CLIP, binary_entropy, binary_metrics, group_sections

__all__ = ["MANTISSA_BITS", "NUM_BUCKETS", "BinnedMetrics", "score_buckets"]

MANTISSA_BITS = 12
_SHIFT = 23 - MANTISSA_BITS
_FLOOR = np.float32(2.0**-30)  # scores below share bucket 0
_FIRST = int(np.array(_FLOOR, dtype=np.float32).view(np.uint32)) >> _SHIFT
NUM_BUCKETS = (int(np.array(1.0, dtype=np.float32).view(np.uint32)) >> _SHIFT) - _FIRST + 2


def score_buckets(scores: np.ndarray) -> np.ndarray:
    """Bucket of each score in [0, 1], ordered like the scores (-0.0 counts as 0.0).

    Args:
        scores: (N,) probabilities in [0, 1].

    Returns:
        (N,) int64 in [0, NUM_BUCKETS): 0 for scores < 2^-30, then one bucket per float32 value with the lowest
        23 - MANTISSA_BITS mantissa bits cleared; 1.0 is the last bucket.

    Example:
        >>> b = score_buckets(np.array([0.0, 1e-12, 0.125, 0.12501, 0.2, 1.0]))  # 0.125 = 2^-3 starts a bucket
        >>> bool(b[0] == b[1] == 0), bool(b[2] == b[3]), bool(b[2] < b[4] < b[5] == NUM_BUCKETS - 1)
        (True, True, True)
    """
    bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32).astype(np.int64) >> _SHIFT
    return np.clip(bits - _FIRST + 1, 0, NUM_BUCKETS - 1)


class BinnedMetrics:
    """Per-format metrics of a streamed split in bounded memory, with the ``evaluate_groups`` tables.

    Up to ``exact_max_rows`` rows it keeps each row's label, pCTR, format and true probability (about 21 bytes per
    row) and the metrics are exactly those of ``evaluate_groups``. When a split grows past that, the rows kept so
    far are folded into per-format histograms (see the module docstring) and every later row is added to them.

    Args:
        formats: the K format names; ``update`` takes their index.
        with_true_prob: also track a true click probability (for ``oracle_auc_pr``).
        exact_max_rows: rows kept for exact metrics before switching to histograms (0 = histograms from the start).

    Example:
        >>> acc = BinnedMetrics(["a", "b"], exact_max_rows=0)
        >>> rng = np.random.default_rng(0)
        >>> p = rng.uniform(size=1000)
        >>> y = (rng.uniform(size=1000) < p).astype(np.float32)
        >>> for part in np.array_split(np.arange(1000), 3):  # three record batches
        ...     acc.update(part % 2, y[part], p[part])
        >>> m = acc.metrics(["a", "b"], "all")
        >>> exact = binary_metrics(y, p)
        >>> abs(m["auc_pr"] - exact["auc_pr"]) < 1e-3, abs(m["logloss"] - exact["logloss"]) < 1e-12, m["rows"]
        (True, True, 1000.0)
    """

    def __init__(self, formats: list[str] | tuple[str, ...], with_true_prob: bool = False,
                 exact_max_rows: int = 262_144, with_groups: bool = False) -> None:
        self.formats = list(formats)
        self.with_true_prob = with_true_prob
        self.with_groups = with_groups  # user ids kept for GAUC (exact mode only: once binned, GAUC is NaN)
        self.exact_max_rows = exact_max_rows
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []  # exact mode parts
        self._kept = 0
        self.counts: np.ndarray | None = None  # (K, 2, NUM_BUCKETS) impressions per format, label, bucket
        self.sum_pctr: np.ndarray | None = None  # (K, NUM_BUCKETS)
        self.logloss_sum = np.zeros(len(self.formats), dtype=np.float64)  # Σ per-row log loss (clipped pCTR)
        self.true_counts: np.ndarray | None = None

    @property
    def binned(self) -> bool:
        """Whether the split outgrew ``exact_max_rows`` (metrics from histograms)."""
        return self.counts is not None

    def update(self, format_ids: np.ndarray, labels: np.ndarray, pctr: np.ndarray,
               true_prob: np.ndarray | None = None, source: str = "split", groups: np.ndarray | None = None) -> None:
        """Add one record batch; every value is checked before anything is added.

        Args:
            format_ids: (n,) integer index into ``formats``.
            labels: (n,) clicks in {0, 1}.
            pctr: (n,) each row's own-task pCTR in [0, 1].
            true_prob: (n,) true click probability, or None (required when ``with_true_prob``).
            source: named in errors.
            groups: (n,) user ids (required when ``with_groups``).

        Raises:
            ValueError: labels outside {0, 1}, pCTR or true probability outside [0, 1] / NaN, format ids that are
                not integers in range, or lengths that differ.
        """
        k = len(self.formats)
        fmt = np.asarray(format_ids)
        y = np.asarray(labels)
        p = np.asarray(pctr, dtype=np.float64) + 0.0  # + 0.0 turns -0.0 into 0.0 (its sign bit would bucket it at 1)
        if not (fmt.shape == y.shape == p.shape and fmt.ndim == 1):
            raise ValueError(f"{source}: format_ids {fmt.shape}, labels {y.shape} and pctr {p.shape} differ")
        if len(fmt) == 0:
            return
        if not np.issubdtype(fmt.dtype, np.integer) or fmt.min() < 0 or fmt.max() >= k:
            raise ValueError(f"{source}: format ids must be integers in [0, {k}), got {fmt.dtype} "
                             f"[{fmt.min()}, {fmt.max()}]")
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{source}: labels must be 0 or 1")
        if not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
            raise ValueError(f"{source}: pCTR must be finite and in [0, 1]")
        tp = None
        if self.with_true_prob:
            if true_prob is None:
                raise ValueError(f"{source}: true click probabilities are missing")
            tp = np.asarray(true_prob, dtype=np.float64) + 0.0
            if tp.shape != p.shape or not (np.isfinite(tp).all() and tp.min() >= 0 and tp.max() <= 1):
                raise ValueError(f"{source}: true click probabilities must be finite and in [0, 1]")
        fmt, y = fmt.astype(np.int64), y.astype(np.int8)
        p_clip = np.clip(p, PCTR_CLIP, 1 - PCTR_CLIP)
        for f in np.unique(fmt):
            sel = fmt == f
            self.logloss_sum[f] += log_loss(y[sel], p_clip[sel], labels=[0, 1], normalize=False)
        if self.with_groups and (groups is None or len(groups) != len(fmt)):
            raise ValueError(f"{source}: user ids for GAUC are missing")
        if not self.binned and self._kept + len(fmt) <= self.exact_max_rows:
            self._rows.append((fmt.astype(np.int32), y, p, tp,
                               np.asarray(groups, dtype=object) if self.with_groups else None))
            self._kept += len(fmt)
            return
        if not self.binned:  # outgrew the exact budget: fold the rows kept so far into histograms
            self.counts = np.zeros((k, 2, NUM_BUCKETS), dtype=np.int64)
            self.sum_pctr = np.zeros((k, NUM_BUCKETS), dtype=np.float64)
            self.true_counts = np.zeros((k, 2, NUM_BUCKETS), dtype=np.int64) if self.with_true_prob else None
            rows, self._rows, self._kept = self._rows, [], 0
            for f_part, y_part, p_part, tp_part, _ in rows:
                self._add(f_part.astype(np.int64), y_part, p_part, tp_part)
        self._add(fmt, y, p, tp)

    def _add(self, fmt: np.ndarray, y: np.ndarray, p: np.ndarray, tp: np.ndarray | None) -> None:
        assert self.counts is not None and self.sum_pctr is not None
        bucket = score_buckets(p)
        y = y.astype(np.int64)
        _add_counts(self.counts, (fmt * 2 + y) * NUM_BUCKETS + bucket)
        cells, inverse = np.unique(fmt * NUM_BUCKETS + bucket, return_inverse=True)
        self.sum_pctr.reshape(-1)[cells] += np.bincount(inverse, weights=p)
        if self.true_counts is not None and tp is not None:
            _add_counts(self.true_counts, (fmt * 2 + y) * NUM_BUCKETS + score_buckets(tp))

    def _joined_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The kept rows as one part (joined once, then reused by every group's metrics)."""
        if len(self._rows) != 1:
            parts = self._rows or [(np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0),
                                    np.zeros(0) if self.with_true_prob else None,
                                    np.zeros(0, dtype=object) if self.with_groups else None)]
            self._rows = [(np.concatenate([r[0] for r in parts]), np.concatenate([r[1] for r in parts]),
                           np.concatenate([r[2] for r in parts]),
                           np.concatenate([r[3] for r in parts]) if self.with_true_prob else None,  # type: ignore[misc]
                           np.concatenate([r[4] for r in parts]) if self.with_groups else None)]  # type: ignore[misc]
        return self._rows[0]

    def metrics(self, formats: list[str], name: str, split: str = "eval") -> dict[str, float]:
        """``binary_metrics`` of the rows of ``formats`` (each scored by its own task's head).

        Formats not in ``self.formats`` have no rows.
        """
        wanted = set(formats)
        idx = [i for i, f in enumerate(self.formats) if f in wanted]
        if not self.binned:
            fmt, y, p, tp, groups = self._joined_rows()
            sel = np.isin(fmt, idx)
            return binary_metrics(y[sel], p[sel], None if tp is None else tp[sel], name=name, split=split,
                                  groups=None if groups is None else groups[sel])
        assert self.counts is not None and self.sum_pctr is not None
        counts = _sum_rows(self.counts, idx)  # (2, NUM_BUCKETS)
        total = counts.sum(axis=0)
        filled = np.flatnonzero(total)
        mean_pctr = _sum_rows(self.sum_pctr, idx)[filled] / total[filled]  # (U,) bucket means
        weight = np.concatenate([counts[0, filled], counts[1, filled]]).astype(np.float64)
        labels = np.repeat([0.0, 1.0], len(filled))
        keep = weight > 0
        out = binary_metrics(labels[keep], np.tile(mean_pctr, 2)[keep], sample_weight=weight[keep], name=name,
                             split=split)
        if out["rows"] > 0:  # exact log loss, not the bucket means'
            out["logloss"] = float(self.logloss_sum[idx].sum() / out["rows"])
            entropy = binary_entropy(out["ctr"])
            out["ne"] = out["logloss"] / entropy if not np.isnan(entropy) else float("nan")
        if self.true_counts is not None and out["positives"] > 0:
            t_counts = _sum_rows(self.true_counts, idx)
            t_filled = np.flatnonzero(t_counts.sum(axis=0))
            t_weight = np.concatenate([t_counts[0, t_filled], t_counts[1, t_filled]]).astype(np.float64)
            t_keep = t_weight > 0
            out["oracle_auc_pr"] = float(average_precision_score(
                np.repeat([0.0, 1.0], len(t_filled))[t_keep], np.tile(t_filled, 2)[t_keep], sample_weight=t_weight[t_keep]
            ))
        return out

    def quantiles(self, formats: list[str], qs: tuple[float, ...]) -> list[float]:
        """Quantiles of the pCTR of the rows of ``formats`` (bucket means once binned); NaN without rows."""
        idx = [i for i, f in enumerate(self.formats) if f in set(formats)]
        if not self.binned:
            fmt, _, p, _, _ = self._joined_rows()
            values = p[np.isin(fmt, idx)]
            return np.quantile(values, qs).tolist() if len(values) else [float("nan")] * len(qs)
        assert self.counts is not None and self.sum_pctr is not None
        total = _sum_rows(self.counts, idx).sum(axis=0)  # (NUM_BUCKETS,)
        filled = np.flatnonzero(total)
        if not len(filled):
            return [float("nan")] * len(qs)
        means = _sum_rows(self.sum_pctr, idx)[filled] / total[filled]
        cum = np.cumsum(total[filled])
        at = np.minimum(np.searchsorted(cum, np.asarray(qs) * cum[-1], side="left"), len(cum) - 1)
        return means[at].tolist()

    def reliability(self, formats: list[str], n_bins: int = 10) -> tuple[list[float], list[float]]:
        """Reliability-diagram points of the rows of ``formats``: (mean pCTR, observed CTR) per equal-mass pCTR bin
        (sorted rows in exact mode, score buckets once binned; ties stay in one bin)."""
        idx = [i for i, f in enumerate(self.formats) if f in set(formats)]
        if not self.binned:
            fmt, y, p, _, _ = self._joined_rows()
            sel = np.isin(fmt, idx)
            order = np.argsort(p[sel], kind="stable")
            weights, scores, clicks = np.ones(int(sel.sum())), p[sel][order], y[sel][order].astype(np.float64)
        else:
            assert self.counts is not None and self.sum_pctr is not None
            counts = _sum_rows(self.counts, idx)  # (2, NUM_BUCKETS)
            total = counts.sum(axis=0)
            filled = np.flatnonzero(total)
            weights, clicks = total[filled].astype(np.float64), counts[1, filled].astype(np.float64)
            scores = _sum_rows(self.sum_pctr, idx)[filled] / total[filled]
        if not len(weights):
            return [], []
        cum = np.cumsum(weights)
        bin_of = np.minimum((cum - weights / 2) * n_bins // cum[-1], n_bins - 1).astype(np.int64)
        rows = np.bincount(bin_of, weights=weights, minlength=n_bins)
        keep = rows > 0
        mean_p = np.bincount(bin_of, weights=weights * scores, minlength=n_bins)[keep] / rows[keep]
        ctr = np.bincount(bin_of, weights=clicks, minlength=n_bins)[keep] / rows[keep]
        return mean_p.tolist(), ctr.tolist()

    def histogram(self, formats: list[str], edges: np.ndarray) -> tuple[list[float], list[float]]:
        """Impressions and clicks of the rows of ``formats`` per pCTR bin ``edges`` (B + 1,) (bucket means once
        binned)."""
        idx = [i for i, f in enumerate(self.formats) if f in set(formats)]
        if not self.binned:
            fmt, y, p, _, _ = self._joined_rows()
            sel = np.isin(fmt, idx)
            scores, rows, clicks = p[sel], np.ones(int(sel.sum())), y[sel].astype(np.float64)
        else:
            assert self.counts is not None and self.sum_pctr is not None
            counts = _sum_rows(self.counts, idx)
            total = counts.sum(axis=0)
            filled = np.flatnonzero(total)
            scores = _sum_rows(self.sum_pctr, idx)[filled] / total[filled]
            rows, clicks = total[filled].astype(np.float64), counts[1, filled].astype(np.float64)
        where = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
        return (np.bincount(where, weights=rows, minlength=len(edges) - 1).tolist(),
                np.bincount(where, weights=clicks, minlength=len(edges) - 1).tolist())

    def evaluate(self, format_to_task: dict[str, str], tasks: list[str] | tuple[str, ...], split: str = "eval",
                 group_attributes: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """Per-format, per-task, per-attribute and macro tables, as ``evaluate_groups`` returns them."""
        if self.binned:
            assert self.counts is not None
            present = {f for i, f in enumerate(self.formats) if self.counts[i].any()}
        else:
            present = {self.formats[i] for i in np.unique(self._joined_rows()[0])}
        return group_sections(present, format_to_task, tasks, lambda group, name: self.metrics(group, name, split),
                              group_attributes, has_true_prob=self.with_true_prob,
                              has_groups=self.with_groups and not self.binned)


def _sum_rows(table: np.ndarray, idx: list[int]) -> np.ndarray:
    """Σ_i table[i] over ``idx`` without copying the selected slices (formats can be many)."""
    out = np.zeros(table.shape[1:], dtype=table.dtype)
    for i in idx:
        out += table[i]
    return out


def _add_counts(table: np.ndarray, flat_index: np.ndarray) -> None:
    """table.flat[i] += occurrences of i in ``flat_index``, with temporaries the size of the record batch."""
    cells, counts = np.unique(flat_index, return_counts=True)
    table.reshape(-1)[cells] += counts
