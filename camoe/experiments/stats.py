"""Seed statistics and bootstrap confidence intervals on the test split.

* Seed spread: mean and sample standard deviation (ddof = 1) of a metric over the seeds of a configuration.
* Bootstrap (Efron 1979, "Bootstrap methods: another look at the jackknife"; Efron & Tibshirani 1993, ch. 13,
  percentile interval): resample the N test rows with replacement B times, recompute the statistic, take the
  (1 − level)/2 and (1 + level)/2 percentiles.
* Paired bootstrap (Efron & Tibshirani 1993, ch. 16; Koehn 2004 for system comparison): both models are scored on
  the **same** resampled rows in every replicate, so the interval of the relative lift AP_a / AP_b − 1 reflects only
  the models' difference, not which rows happened to be in the test set.

Resampling uses NumPy's ``Generator.integers``; statistics are scikit-learn's (``average_precision_score``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score

__all__ = ["bootstrap_ci", "bootstrap_statistic", "mean_std", "paired_bootstrap_lift", "percentile_interval"]

Statistic = Callable[[np.ndarray, np.ndarray], float]


def mean_std(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0 for one value) over seeds, NaN values skipped.

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.sum() == 0:
        return float("nan")
    return float(average_precision_score(labels, scores))


def bootstrap_statistic(
    labels: np.ndarray,
    scores: np.ndarray,
    samples: int = 200,
    seed: int = 0,
    statistic: Statistic = _average_precision,
) -> np.ndarray:
    """A statistic of several score vectors on the same B bootstrap resamples of the rows.

    Args:
        labels: (N,) clicks in {0, 1}.
        scores: (S, N) score vectors (e.g. one per model and seed), or (N,).
        samples: B.
        seed: seed of the resampling generator; the same seed and N give the same resamples, so two calls on the
            same rows are paired.
        statistic: f(labels, scores) -> float; default average precision (AUC-PR), NaN without positives.

    Returns:
        (S, B) float64: the statistic of each score vector on each resample.

    Raises:
        ValueError: shapes disagree or N = 0.
    """
    y = np.asarray(labels)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y) or len(y) == 0:
        raise ValueError(f"bootstrap: labels ({len(y)},) and scores {s.shape} must share a non-empty row axis")
    rng = np.random.default_rng(seed)
    out = np.empty((s.shape[0], samples), dtype=np.float64)
    for b in range(samples):
        idx = np.sort(rng.integers(0, len(y), len(y)))  # sorted: same multiset, friendlier memory access
        yb = y[idx]
        for i in range(s.shape[0]):
            out[i, b] = statistic(yb, s[i, idx])
    return out


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates dropped; NaN if none is left).

    Example:
        >>> [round(v, 6) for v in percentile_interval(np.arange(101.0), 0.9)]
        [5.0, 95.0]
    """
    r = np.asarray(replicates, dtype=np.float64)
    r = r[~np.isnan(r)]
    if len(r) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(r, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    samples: int = 200,
    seed: int = 0,
    level: float = 0.95,
    statistic: Statistic = _average_precision,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap CI of a statistic averaged over score vectors (e.g. seeds).

    Args:
        labels: (N,) clicks.
        scores: (S, N) or (N,); the statistic is averaged over the S vectors in the estimate and in each replicate.
        samples, seed, level: B, resampling seed, interval level.
        statistic: default average precision.

    Returns:
        (estimate, low, high).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = (rng.random(4000) < 0.3).astype(float)
        >>> est, lo, hi = bootstrap_ci(y, y, samples=200, statistic=lambda a, b: float(np.mean(b)))
        >>> lo < est < hi and hi - lo < 0.04
        True
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    estimate = float(np.nanmean([statistic(np.asarray(labels), row) for row in s]))
    reps = bootstrap_statistic(labels, s, samples, seed, statistic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate -> NaN, dropped below
        lo, hi = percentile_interval(np.nanmean(reps, axis=0), level)
    return estimate, lo, hi


def paired_bootstrap_lift(
    labels: np.ndarray,
    scores: np.ndarray,
    reference: np.ndarray,
    samples: int = 200,
    seed: int = 0,
    level: float = 0.95,
    statistic: Statistic = _average_precision,
) -> tuple[float, float, float]:
    """Relative lift mean_s f(scores_s) / mean_r f(reference_r) − 1 with a paired percentile bootstrap CI.

    Args:
        labels: (N,) clicks.
        scores: (S, N) or (N,) the model's scores (one row per seed).
        reference: (R, N) or (N,) the reference (baseline) model's scores on the same rows.
        samples, seed, level: B, resampling seed, interval level.
        statistic: default average precision (AUC-PR).

    Returns:
        (lift, low, high); NaN where the reference statistic is 0 or undefined.

    Example:
        >>> y = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0] * 20)
        >>> paired_bootstrap_lift(y, y.astype(float), y.astype(float), samples=50)
        (0.0, 0.0, 0.0)
    """
    a = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    r = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    reps = bootstrap_statistic(labels, np.vstack([a, r]), samples, seed, statistic)  # (S + R, B)
    y = np.asarray(labels)
    point_a = np.nanmean([statistic(y, row) for row in a])
    point_r = np.nanmean([statistic(y, row) for row in r])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = np.nanmean(reps[: len(a)], axis=0) / np.nanmean(reps[len(a):], axis=0) - 1.0  # (B,)
    lift = point_a / point_r - 1.0 if point_r and not math.isnan(point_r) else float("nan")
    lo, hi = percentile_interval(ratio[np.isfinite(ratio)], level)
    return float(lift), lo, hi
