"""Bounded-memory metrics for streamed splits: score histograms per ad format instead of per-row arrays.

Exact AUC-PR needs every score of a slice sorted, so its memory grows with the rows evaluated. A streamed split is
instead summed into fixed-size histograms as it is read: per format, the impressions and clicks of every pCTR
**bucket**, where a bucket keeps the float32 sign, exponent and the top ``MANTISSA_BITS`` = 12 mantissa bits of the
score. Buckets are ordered like the scores, so ranking metrics see the scores rounded down to a relative precision
of 2^-12 ≈ 0.024% (rows inside one bucket count as tied), and scores below 2^-30 share the first bucket.

The metrics are those of ``camoe.evaluation.metrics.binary_metrics`` (scikit-learn), computed on one weighted row
per (bucket, label) with the bucket's mean pCTR:

* ``auc_pr``, ``auc_roc``, ``ece``, ``oracle_auc_pr``: as in memory, on the bucketed scores (the tests bound the
  difference to the per-row values);
* ``rows``, ``positives``, ``ctr``, ``mean_pctr``, ``calibration_ratio``: exact (sums);
* ``logloss`` and ``ne``: exact, summed per record batch with ``sklearn.metrics.log_loss(normalize=False)``.

Memory: 3 arrays of ``NUM_BUCKETS`` (126,978) 8-byte numbers per format (and 2 more with a true-probability
column), about 3 MB per format whatever the number of rows; a record batch adds only arrays of its own length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, log_loss

from camoe.evaluation.metrics import _EPS, _binary_entropy, binary_metrics, group_sections

__all__ = ["MANTISSA_BITS", "NUM_BUCKETS", "BinnedMetrics", "score_buckets"]

MANTISSA_BITS = 12
_SHIFT = 23 - MANTISSA_BITS
_FLOOR = np.float32(2.0**-30)  # scores below share bucket 0
_FIRST = int(np.array(_FLOOR, dtype=np.float32).view(np.uint32)) >> _SHIFT
NUM_BUCKETS = (int(np.array(1.0, dtype=np.float32).view(np.uint32)) >> _SHIFT) - _FIRST + 2


def score_buckets(scores: np.ndarray) -> np.ndarray:
    """Bucket of each score in [0, 1], ordered like the scores.

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
    bits = np.asarray(scores, dtype=np.float32).view(np.uint32).astype(np.int64) >> _SHIFT
    return np.clip(bits - _FIRST + 1, 0, NUM_BUCKETS - 1)


class BinnedMetrics:
    """Per-format histograms of a streamed split, and the ``evaluate_groups`` tables computed from them.

    Args:
        formats: the K format names; ``update`` takes their index.
        with_true_prob: also histogram a true click probability (for ``oracle_auc_pr``).

    Example:
        >>> acc = BinnedMetrics(["a", "b"])
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

    def __init__(self, formats: list[str] | tuple[str, ...], with_true_prob: bool = False) -> None:
        self.formats = list(formats)
        k = len(self.formats)
        self.counts = np.zeros((k, 2, NUM_BUCKETS), dtype=np.int64)  # impressions per format, label, bucket
        self.sum_pctr = np.zeros((k, NUM_BUCKETS), dtype=np.float64)
        self.logloss_sum = np.zeros(k, dtype=np.float64)  # Σ per-row log loss (pCTR clipped as in memory)
        self.true_counts = np.zeros((k, 2, NUM_BUCKETS), dtype=np.int64) if with_true_prob else None

    def update(self, format_ids: np.ndarray, labels: np.ndarray, pctr: np.ndarray,
               true_prob: np.ndarray | None = None, source: str = "split") -> None:
        """Add one record batch.

        Args:
            format_ids: (n,) index into ``formats``.
            labels: (n,) clicks in {0, 1}.
            pctr: (n,) each row's own-task pCTR in [0, 1].
            true_prob: (n,) true click probability, or None (required when ``with_true_prob``).
            source: named in errors.

        Raises:
            ValueError: labels outside {0, 1}, pCTR or true probability outside [0, 1] / NaN, format index out of
                range, or lengths that differ.
        """
        k = len(self.formats)
        fmt = np.asarray(format_ids, dtype=np.int64)
        y = np.asarray(labels)
        p = np.asarray(pctr, dtype=np.float64)
        if not (fmt.shape == y.shape == p.shape and fmt.ndim == 1):
            raise ValueError(f"{source}: format_ids {fmt.shape}, labels {y.shape} and pctr {p.shape} differ")
        if len(fmt) == 0:
            return
        if fmt.min() < 0 or fmt.max() >= k:
            raise ValueError(f"{source}: format index outside [0, {k})")
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{source}: labels must be 0 or 1")
        if not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
            raise ValueError(f"{source}: pCTR must be finite and in [0, 1]")
        y = y.astype(np.int64)
        bucket = score_buckets(p)
        _add_counts(self.counts, (fmt * 2 + y) * NUM_BUCKETS + bucket)
        cells, inverse = np.unique(fmt * NUM_BUCKETS + bucket, return_inverse=True)
        self.sum_pctr.reshape(-1)[cells] += np.bincount(inverse, weights=p)
        p_clip = np.clip(p, _EPS, 1 - _EPS)
        for f in np.unique(fmt):
            sel = fmt == f
            self.logloss_sum[f] += log_loss(y[sel], p_clip[sel], labels=[0, 1], normalize=False)
        if self.true_counts is not None:
            if true_prob is None:
                raise ValueError(f"{source}: true click probabilities are missing")
            tp = np.asarray(true_prob, dtype=np.float64)
            if tp.shape != p.shape or not (np.isfinite(tp).all() and tp.min() >= 0 and tp.max() <= 1):
                raise ValueError(f"{source}: true click probabilities must be finite and in [0, 1]")
            _add_counts(self.true_counts, (fmt * 2 + y) * NUM_BUCKETS + score_buckets(tp))

    def metrics(self, formats: list[str], name: str, split: str = "eval") -> dict[str, float]:
        """``binary_metrics`` of the rows of ``formats`` (each scored by its own task's head).

        Formats not in ``self.formats`` have no rows.
        """
        wanted = set(formats)
        idx = [i for i, f in enumerate(self.formats) if f in wanted]
        counts = self.counts[idx].sum(axis=0)  # (2, NUM_BUCKETS)
        total = counts.sum(axis=0)
        filled = np.flatnonzero(total)
        mean_pctr = self.sum_pctr[idx].sum(axis=0)[filled] / total[filled]  # (U,) bucket means
        weight = np.concatenate([counts[0, filled], counts[1, filled]]).astype(np.float64)
        labels = np.repeat([0.0, 1.0], len(filled))
        keep = weight > 0
        out = binary_metrics(labels[keep], np.tile(mean_pctr, 2)[keep], sample_weight=weight[keep], name=name,
                             split=split)
        if out["rows"] > 0:  # exact log loss, not the bucket means'
            out["logloss"] = float(self.logloss_sum[idx].sum() / out["rows"])
            entropy = _binary_entropy(out["ctr"])
            out["ne"] = out["logloss"] / entropy if not np.isnan(entropy) else float("nan")
        if self.true_counts is not None and out["positives"] > 0:
            t_counts = self.true_counts[idx].sum(axis=0)
            t_filled = np.flatnonzero(t_counts.sum(axis=0))
            t_weight = np.concatenate([t_counts[0, t_filled], t_counts[1, t_filled]]).astype(np.float64)
            t_keep = t_weight > 0
            out["oracle_auc_pr"] = float(average_precision_score(
                np.repeat([0.0, 1.0], len(t_filled))[t_keep], np.tile(t_filled, 2)[t_keep], sample_weight=t_weight[t_keep]
            ))
        return out

    def evaluate(self, format_to_task: dict[str, str], tasks: list[str] | tuple[str, ...], split: str = "eval",
                 group_attributes: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """Per-format, per-task, per-attribute and macro tables, as ``evaluate_groups`` returns them."""
        present = {f for i, f in enumerate(self.formats) if self.counts[i].any()}
        return group_sections(present, format_to_task, tasks, lambda group, name: self.metrics(group, name, split),
                              group_attributes, has_true_prob=self.true_counts is not None)


def _add_counts(table: np.ndarray, flat_index: np.ndarray) -> None:
    """table.flat[i] += occurrences of i in ``flat_index``, with temporaries the size of the record batch."""
    cells, counts = np.unique(flat_index, return_counts=True)
    table.reshape(-1)[cells] += counts
