"""Post-hoc calibration per task (fitted on validation, applied to test) and reliability-diagram points.

* Isotonic regression (Zadrozny & Elkan 2002): ``sklearn.isotonic.IsotonicRegression`` on pCTR, clipped outside
  the fitted range.
* Platt scaling (Platt 1999): ``sklearn.linear_model.LogisticRegression`` on logit(pCTR), i.e.
  q = σ(a · logit(p) + b).

Each task (the group of formats one head scores) gets its own map. A task whose validation rows hold a single class
keeps its pCTR unchanged (there is nothing to fit) and is listed in ``skipped_``.
"""

from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

__all__ = ["TaskCalibrator", "reliability_points"]

_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q)).reshape(-1, 1)  # (N, 1)


class TaskCalibrator:
    """One post-hoc calibration map per task.

    Args:
        method: "isotonic" or "platt".

    Fitted attributes: ``maps_`` (task -> fitted scikit-learn estimator), ``skipped_`` (tasks left unchanged).

    Raises:
        ValueError: unknown method; arrays of different lengths.

    Example:
        >>> p = np.array([0.1, 0.2, 0.3, 0.4] * 25); y = np.array([0, 0, 1, 1] * 25); t = np.zeros(100, dtype=int)
        >>> cal = TaskCalibrator("isotonic").fit(p, y, t)
        >>> cal.transform(np.array([0.15, 0.35]), np.array([0, 0])).tolist()
        [0.0, 1.0]
    """

    def __init__(self, method: str) -> None:
        if method not in ("isotonic", "platt"):
            raise ValueError(f"post-hoc calibration method must be 'isotonic' or 'platt', got '{method}'")
        self.method = method
        self.maps_: dict[int, object] = {}
        self.skipped_: list[int] = []

    def fit(self, pctr: np.ndarray, labels: np.ndarray, tasks: np.ndarray) -> TaskCalibrator:
        """Fit on validation rows: pCTR (N,), clicks (N,), task index (N,). Returns self."""
        p, y, t = np.asarray(pctr, dtype=np.float64), np.asarray(labels), np.asarray(tasks)
        if not (len(p) == len(y) == len(t)):
            raise ValueError(f"calibration: pctr {len(p)}, labels {len(y)} and tasks {len(t)} rows differ")
        self.maps_, self.skipped_ = {}, []
        for task in np.unique(t):
            sel = t == task
            if len(np.unique(y[sel])) < 2:
                self.skipped_.append(int(task))
                continue
            if self.method == "isotonic":
                est = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[sel], y[sel])
            else:
                est = LogisticRegression(C=1e4).fit(_logit(p[sel]), y[sel])
            self.maps_[int(task)] = est
        return self

    def transform(self, pctr: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Calibrated pCTR (N,); tasks without a map keep their pCTR."""
        p, t = np.asarray(pctr, dtype=np.float64), np.asarray(tasks)
        out = p.copy()
        for task, est in self.maps_.items():
            sel = t == task
            if not sel.any():
                continue
            if self.method == "isotonic":
                out[sel] = est.predict(p[sel])  # type: ignore[attr-defined]
            else:
                out[sel] = est.predict_proba(_logit(p[sel]))[:, 1]  # type: ignore[attr-defined]
        return out


def reliability_points(labels: np.ndarray, pctr: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean pCTR, observed CTR) per equal-mass bin, from ``sklearn.calibration.calibration_curve``.

    Returns:
        (mean predicted (n,), fraction of clicks (n,)), n ≤ n_bins (bins emptied by ties are dropped); empty arrays
        when the slice has no rows or one class only.
    """
    y = np.asarray(labels)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return np.zeros(0), np.zeros(0)
    frac, mean_pred = calibration_curve(y, np.asarray(pctr, dtype=np.float64), n_bins=n_bins, strategy="quantile")
    return mean_pred, frac
