"""Per-format and per-task CTR metrics on arrays (this module never imports a model).

Definitions (all from scikit-learn where it has them):

* ``auc_pr``: AUC-PR = **average precision** (``sklearn.metrics.average_precision_score``), not the trapezoid
  area. Constant scores give the prevalence (case B25). No positives -> NaN + warning.
* ``auc_roc``: ``roc_auc_score``; one class present -> NaN + warning naming the group and split (case B01).
* ``logloss``: ``log_loss`` with ``labels=[0, 1]``, so a single-class slice is defined (case B02); pCTR is clipped
  to [1e-7, 1 - 1e-7] first.
* ``ne``: normalised entropy = logloss / H(ctr), H the binary entropy of the slice's CTR (He et al. 2014). NaN when
  the slice has one class.
* ``ece``: expected calibration error over 15 **equal-mass** bins of pCTR (quantile edges; ties stay in one bin):
  Σ_b (n_b / n) · |mean pCTR_b − CTR_b|. scikit-learn has no ECE; its ``calibration_curve`` drops empty bins without
  their counts, so the weighted sum is computed here.
* ``calibration_ratio``: Σ pCTR / Σ clicks (1 = calibrated, > 1 over-prediction, case B24).
* ``oracle_auc_pr``: AUC-PR of the true click probability, when the log carries it.
* ``gauc``: group AUC, the impression-weighted mean of each user's AUC-ROC over the users with both a click and a
  non-click (Zhou et al. 2018, "Deep Interest Network", Eq. 8), when rows carry a user id (``schema.user``).

For a task, metrics use only that task's head (column) and only rows whose format belongs to that task (case B03).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

__all__ = [
    "METRIC_NAMES",
    "PCTR_CLIP",
    "UndefinedMetricWarning",
    "binary_entropy",
    "binary_metrics",
    "evaluate_groups",
    "expected_calibration_error",
    "group_sections",
    "own_task_scores",
    "too_few_clicks",
]

METRIC_NAMES = (
    "rows", "positives", "ctr", "mean_pctr", "auc_pr", "auc_roc", "gauc", "logloss", "ne", "ece", "calibration_ratio",
    "oracle_auc_pr",
)
PCTR_CLIP = 1e-7  # log loss clips pCTR to [PCTR_CLIP, 1 - PCTR_CLIP]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for a slice (e.g. one class only); its value is NaN."""


def expected_calibration_error(
    labels: np.ndarray, pctr: np.ndarray, n_bins: int = 15, sample_weight: np.ndarray | None = None
) -> float:
    """ECE over equal-mass bins of pCTR.

    Args:
        labels: (N,) clicks in {0, 1}.
        pctr: (N,) predicted CTR.
        n_bins: number of quantile bins (fewer when pCTR has ties).
        sample_weight: (N,) non-negative row weights (e.g. counts of identical rows), or None. With weights the
            bin edges are weighted quantiles (``np.quantile(..., method="inverted_cdf")``).

    Returns:
        Σ_b (n_b / N) |mean(pctr_b) − mean(labels_b)|, n_b and N weighted; NaN for N = 0.

    Example:
        >>> round(expected_calibration_error(np.array([1, 0, 0, 0, 0]), np.full(5, 0.1)), 6)
        0.1
        >>> round(expected_calibration_error(np.array([1, 0]), np.full(2, 0.1), sample_weight=np.array([1, 4])), 6)
        0.1
    """
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    if sample_weight is None:
        if len(labels) == 0:
            return float("nan")
        w = np.ones(len(labels))
        edges = np.unique(np.quantile(pctr, qs))
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.sum() <= 0:
            return float("nan")
        edges = np.unique(np.quantile(pctr, qs, weights=w, method="inverted_cdf"))
    bins = np.searchsorted(edges, pctr, side="right")  # (N,) in [0, len(edges)]
    counts = np.bincount(bins, weights=w, minlength=len(edges) + 1)
    sum_p = np.bincount(bins, weights=w * pctr, minlength=len(edges) + 1)
    sum_y = np.bincount(bins, weights=w * labels, minlength=len(edges) + 1)
    nonempty = counts > 0
    gap = np.abs(sum_p[nonempty] - sum_y[nonempty]) / counts[nonempty]
    return float(np.sum(counts[nonempty] / counts.sum() * gap))


def binary_entropy(rate: float) -> float:
    """H(rate) = −r·log r − (1 − r)·log(1 − r) in nats; NaN outside (0, 1) (the NE denominator).

    Example:
        >>> round(binary_entropy(0.5), 6)
        0.693147
    """
    if rate <= 0.0 or rate >= 1.0:
        return float("nan")
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def group_auc(labels: np.ndarray, pctr: np.ndarray, groups: np.ndarray) -> float:
    """GAUC = Σ_u n_u · AUC_u / Σ_u n_u over the groups u (users) holding both classes, n_u their rows
    (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate Prediction", Eq. 8). Ties share ranks.

    Args:
        labels: (N,) clicks in {0, 1}.
        pctr: (N,) scores.
        groups: (N,) group keys (any hashable values).

    Returns:
        GAUC, or NaN when no group holds both classes.

    Example:
        >>> round(group_auc(np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.1, 0.2, 0.8, 0.3]),
        ...                 np.array(["a", "a", "b", "b", "b"])), 4)  # (2 · 1.0 + 3 · 0.0) / 5
        0.4
    """
    y = np.asarray(labels, dtype=np.float64)
    if not len(y):
        return float("nan")
    codes = pd.factorize(np.asarray(groups, dtype=object))[0]
    order = np.lexsort((np.asarray(pctr, dtype=np.float64), codes))
    g, s, y = codes[order], np.asarray(pctr, dtype=np.float64)[order], y[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(g)), 0))
    new_run = new_group | np.r_[True, s[1:] != s[:-1]]  # runs of tied scores inside a group
    run_id = np.cumsum(new_run) - 1
    position = np.arange(len(g)) - group_start + 1.0  # 1-based rank inside the group
    run_rank = np.bincount(run_id, weights=position) / np.bincount(run_id)  # average rank of each tie run
    rank = run_rank[run_id]
    n = np.bincount(g).astype(np.float64)
    pos = np.bincount(g, weights=y)
    neg = n - pos
    rank_pos = np.bincount(g, weights=rank * y)
    both = (pos > 0) & (neg > 0)
    if not both.any():
        return float("nan")
    auc = (rank_pos[both] - pos[both] * (pos[both] + 1) / 2) / (pos[both] * neg[both])
    return float(np.sum(n[both] * auc) / n[both].sum())


def binary_metrics(
    labels: np.ndarray,
    pctr: np.ndarray,
    true_prob: np.ndarray | None = None,
    *,
    sample_weight: np.ndarray | None = None,
    name: str = "all",
    split: str = "eval",
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one slice.

    Args:
        labels: (N,) clicks in {0, 1}.
        pctr: (N,) predicted CTR in [0, 1].
        true_prob: (N,) true click probability, or None.
        sample_weight: (N,) non-negative row weights, or None (every row counts once). ``rows`` and ``positives``
            are then weighted sums; every metric is computed by scikit-learn with these weights (used by
            ``camoe.evaluation.binned``, where a row stands for the impressions of one score bucket).
        name: slice name (task or format) used in warnings.
        split: split name used in warnings.
        groups: (N,) user ids for ``gauc``, or None (``gauc`` NaN).

    Returns:
        dict with every key of ``METRIC_NAMES`` (NaN where undefined; ``oracle_auc_pr`` NaN without true_prob).

    Raises:
        ValueError: lengths differ, labels outside {0, 1}, pCTR non-finite, or weights negative / non-finite.

    Example:
        >>> m = binary_metrics(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))
        >>> m["auc_pr"], m["auc_roc"], m["calibration_ratio"]
        (1.0, 1.0, 1.5)
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(pctr, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"{name}/{split}: labels {y.shape} and pctr {p.shape} differ in shape")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name}/{split}: labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError(f"{name}/{split}: {int((~np.isfinite(p)).sum())} non-finite pCTR values")
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w is not None and (w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any()):
        raise ValueError(f"{name}/{split}: sample_weight must be {y.shape} finite non-negative values")
    n = float(len(y)) if w is None else float(w.sum())
    pos = float(y.sum()) if w is None else float(w @ y)
    sum_p = float(p.sum()) if w is None else float(w @ p)
    nan = float("nan")
    out: dict[str, float] = dict.fromkeys(METRIC_NAMES, nan)
    out["rows"], out["positives"] = n, pos
    if n == 0:
        warnings.warn(f"no rows for '{name}' on split '{split}': all metrics NaN", UndefinedMetricWarning, stacklevel=2)
        return out
    ctr = pos / n
    out["ctr"], out["mean_pctr"] = ctr, sum_p / n
    p_clip = np.clip(p, PCTR_CLIP, 1 - PCTR_CLIP)
    out["logloss"] = float(log_loss(y, p_clip, labels=[0, 1], sample_weight=w))
    entropy = binary_entropy(ctr)
    out["ne"] = out["logloss"] / entropy if not math.isnan(entropy) else nan
    out["ece"] = expected_calibration_error(y, p, sample_weight=w)
    one_class = pos == 0 or pos == n
    if pos == 0:
        warnings.warn(
            f"AUC-PR, AUC-ROC, NE and calibration ratio undefined for '{name}' on split '{split}': no positives "
            f"in {n:.0f} rows (NaN)",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    else:
        out["auc_pr"] = float(average_precision_score(y, p, sample_weight=w))
        out["calibration_ratio"] = sum_p / pos
        if true_prob is not None:
            out["oracle_auc_pr"] = float(average_precision_score(y, np.asarray(true_prob, dtype=np.float64),
                                                                 sample_weight=w))
    if one_class and pos == n:
        warnings.warn(
            f"AUC-ROC and NE undefined for '{name}' on split '{split}': all {n:.0f} rows are positive (NaN)",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    if not one_class:
        out["auc_roc"] = float(roc_auc_score(y, p, sample_weight=w))
    if groups is not None:
        out["gauc"] = group_auc(y, p, groups)
    return out


def own_task_scores(task_scores: np.ndarray, task_index: np.ndarray) -> np.ndarray:
    """Pick each row's own head: (N, T) scores and (N,) task index -> (N,) scores.

    Example:
        >>> own_task_scores(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])).tolist()
        [0.9, 0.8]
    """
    return np.take_along_axis(np.asarray(task_scores), np.asarray(task_index)[:, None], axis=1)[:, 0]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_groups(
    labels: np.ndarray,
    task_scores: np.ndarray,
    formats: np.ndarray,
    format_to_task: dict[str, str],
    tasks: list[str] | tuple[str, ...],
    true_prob: np.ndarray | None = None,
    split: str = "test",
    group_attributes: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Metrics per format, per task, per format attribute (e.g. modality) and macro averages.

    Args:
        labels: (N,) clicks.
        task_scores: (N, T) pCTR of every head, columns in ``tasks`` order. Each row is scored by its own task's
            column only; other heads' outputs on the row are ignored (case B03).
        formats: (N,) ad format of each row.
        format_to_task: format -> task.
        tasks: the T task names, column order of ``task_scores``.
        true_prob: (N,) true click probability or None.
        split: split name for warnings.
        group_attributes: format -> attributes; adds a section per attribute (e.g. ``modality``) over its values.

    Returns:
        ``{"formats": {name: metrics}, "tasks": {name: metrics}, "macro": {...}}`` plus one section per attribute.
        ``macro`` averages each metric over tasks, skipping NaN; ``macro["skipped"]`` lists what was skipped.

    Raises:
        ValueError: a row's format has no task, or shapes differ.
    """
    formats = np.asarray(formats).astype(str)
    task_scores = np.asarray(task_scores, dtype=np.float64)
    if task_scores.ndim != 2 or task_scores.shape != (len(labels), len(tasks)):
        raise ValueError(f"task_scores must be (N, T) = ({len(labels)}, {len(tasks)}), got {task_scores.shape}")
    unknown = sorted(set(np.unique(formats)) - set(format_to_task))
    if unknown:
        raise ValueError(f"split '{split}': formats {unknown} have no task; known formats {sorted(format_to_task)}")
    task_of_format = np.array([list(tasks).index(format_to_task[f]) for f in formats], dtype=np.int64)
    pctr = own_task_scores(task_scores, task_of_format) if len(formats) else np.zeros(0)
    labels = np.asarray(labels)

    def _slice(group: list[str], name: str) -> dict[str, float]:
        sel = np.isin(formats, group)
        tp = None if true_prob is None else np.asarray(true_prob)[sel]
        return binary_metrics(labels[sel], pctr[sel], tp, name=name, split=split)

    return group_sections(set(np.unique(formats)), format_to_task, tasks, _slice, group_attributes,
                          has_true_prob=true_prob is not None)


def group_sections(
    present: set[str],
    format_to_task: dict[str, str],
    tasks: list[str] | tuple[str, ...],
    metrics_of: Callable[[list[str], str], dict[str, float]],
    group_attributes: dict[str, dict[str, str]] | None = None,
    has_true_prob: bool = False,
    has_groups: bool = False,
) -> dict[str, Any]:
    """The sections of ``evaluate_groups`` from a function scoring a group of formats.

    Args:
        present: formats that have rows.
        format_to_task: format -> task.
        tasks: the T task names.
        metrics_of: (formats of the group, group name) -> ``binary_metrics`` dict over the rows of those formats,
            each row scored by its own task's head.
        group_attributes: format -> attributes; one section per attribute.
        has_true_prob: whether ``oracle_auc_pr`` can be defined (else its NaN is not listed as skipped).
        has_groups: whether ``gauc`` can be defined (likewise).

    Returns:
        ``{"formats": ..., "tasks": ..., <attribute>: ..., "macro": ...}`` as documented in ``evaluate_groups``.
    """
    result: dict[str, Any] = {
        "formats": {f: metrics_of([f], f) for f in format_to_task if f in present},
        "tasks": {t: metrics_of([f for f, ft in format_to_task.items() if ft == t], t) for t in tasks},
    }
    for attribute in sorted({a for attrs in (group_attributes or {}).values() for a in attrs}):
        value_of = {f: attrs.get(attribute) for f, attrs in (group_attributes or {}).items()}
        section: dict[str, dict[str, float]] = {}
        for value in sorted({v for v in value_of.values() if v is not None}):
            group = [f for f, v in value_of.items() if v == value]
            if present.intersection(group):
                section[value] = metrics_of(group, f"{attribute}={value}")
        result[attribute] = section
    macro: dict[str, Any] = {}
    skipped: dict[str, list[str]] = {}
    for metric in ("auc_pr", "auc_roc", "gauc", "logloss", "ne", "ece", "calibration_ratio", "oracle_auc_pr"):
        values = {t: m[metric] for t, m in result["tasks"].items()}
        macro[metric] = _nanmean(list(values.values()))
        nan_tasks = [t for t, v in values.items() if math.isnan(v)]
        absent = (metric == "oracle_auc_pr" and not has_true_prob) or (metric == "gauc" and not has_groups)
        if nan_tasks and not absent:
            skipped[metric] = nan_tasks
    macro["skipped"] = skipped
    result["macro"] = macro
    return result


def too_few_clicks(task_clicks: dict[str, float], min_clicks: int, split: str = "validation",
                   relative_width: float = 0.1) -> list[str]:
    """Messages for tasks whose rows hold too few clicks to choose between settings (or epochs) on.

    A rule of thumb for the 95% interval of a task's AUC-PR: a relative half-width of about 1.96 / √clicks (the
    binomial interval of a precision estimated from the clicks; Boyd, Eng & Page 2013 discuss AUC-PR intervals), so
    18 clicks know AUC-PR to about ±46% and a ±``relative_width`` interval needs about (1.96 / relative_width)² clicks.

    Args:
        task_clicks: task -> clicks in the split.
        min_clicks: tasks below this get a message.

    Example:
        >>> too_few_clicks({"video": 18, "audio": 900}, 200)[0][:59]
        "validation split: task 'video' has 18 clicks: its AUC-PR is"
    """
    needed = math.ceil((1.96 / relative_width) ** 2)
    out = []
    for task, clicks in task_clicks.items():
        if clicks < min_clicks:
            width = (f"is known to about ±{1.96 / math.sqrt(clicks):.0%} (relative, 95%)" if clicks > 0 else
                     "is undefined")
            out.append(f"{split} split: task '{task}' has {int(clicks)} clicks: its AUC-PR {width}, too few to "
                       f"choose between settings or epochs on; a ±{relative_width:.0%} interval needs about {needed} "
                       f"clicks (train.min_valid_clicks = {min_clicks})")
    return out
