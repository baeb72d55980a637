"""Post-hoc per-task calibration of pCTR, stored in the artifact and applied wherever the model scores.

Fitted with scikit-learn on validation rows, per task, on each row's own-task pCTR (after the negative-downsampling
correction), and kept as plain parameters so that batch scoring, ONNX scoring and the service apply the same map:

* ``isotonic`` (Zadrozny & Elkan 2002): ``sklearn.isotonic.IsotonicRegression(out_of_bounds="clip")``; stored as
  its thresholds, applied by linear interpolation between them (what ``IsotonicRegression.predict`` computes).
* ``platt`` (Platt 1999): ``sklearn.linear_model.LogisticRegression`` on logit(pCTR); stored as (a, b), applied as
  q = sigmoid(a · logit(p) + b).

A task whose validation rows hold a single class keeps the identity map (a warning names it).

Example:
    >>> import numpy as np
    >>> p = np.linspace(0.01, 0.5, 200); y = (np.arange(200) % 4 == 0) * 1.0; task = np.zeros(200, dtype=int)
    >>> cal = PosthocCalibration.fit("isotonic", p, y, task, ["audio"])
    >>> cal.apply(np.array([0.005, 0.3]), np.array([0, 0]), ["audio"]).round(3).tolist()
    [0.25, 0.25]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["PosthocCalibration", "reliability_points"]

_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class PosthocCalibration:
    """Per-task calibration maps.

    Attributes:
        method: ``isotonic`` or ``platt``.
        params: task -> {"x": thresholds, "y": values} (isotonic) or {"a": slope, "b": intercept} (platt); tasks
            absent here keep their pCTR.
        fitted_on: rows per task the map was fitted on.
    """

    method: Literal["isotonic", "platt"]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    fitted_on: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, method: str, pctr: np.ndarray, labels: np.ndarray, task_index: np.ndarray, tasks: list[str] | tuple[str, ...]
    ) -> PosthocCalibration:
        """Fit one map per task on (N,) own-task pCTR, (N,) clicks and (N,) task index.

        Raises:
            ValueError: unknown method, or arrays of different lengths.
        """
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression

        if method not in ("isotonic", "platt"):
            raise ValueError(f"calibration method must be 'isotonic' or 'platt', got '{method}'")
        pctr, labels, task_index = np.asarray(pctr, np.float64), np.asarray(labels, np.float64), np.asarray(task_index)
        if not len(pctr) == len(labels) == len(task_index):
            raise ValueError(f"pctr, labels and task_index differ in length: {len(pctr)}, {len(labels)}, {len(task_index)}")
        out = cls(method)  # type: ignore[arg-type]
        skipped = []
        for t, task in enumerate(tasks):
            sel = task_index == t
            y, p = labels[sel], pctr[sel]
            if len(np.unique(y)) < 2:
                skipped.append(task)
                continue
            if method == "isotonic":
                # fitted values kept inside (0, 1): a pCTR of exactly 0 or 1 would give an infinite logloss
                iso = IsotonicRegression(y_min=_EPS, y_max=1 - _EPS, out_of_bounds="clip").fit(p, y)
                out.params[task] = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
            else:
                lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
                out.params[task] = {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
            out.fitted_on[task] = int(sel.sum())
            if min(y.sum(), len(y) - y.sum()) < 20:
                warnings.warn(f"calibration: task '{task}' has only {int(y.sum())} clicks in {len(y)} fitting rows; "
                              f"the {method} map is unreliable", stacklevel=2)
        if skipped:
            warnings.warn(f"calibration: tasks {skipped} have a single class in the fitting rows; left uncalibrated",
                          stacklevel=2)
        return out

    def apply(self, pctr: np.ndarray, task_index: np.ndarray, tasks: list[str] | tuple[str, ...]) -> np.ndarray:
        """(N,) calibrated pCTR of rows scored by task ``tasks[task_index[i]]``."""
        pctr = np.asarray(pctr, dtype=np.float64).copy()
        task_index = np.asarray(task_index)
        for t, task in enumerate(tasks):
            if task in self.params:
                sel = task_index == t
                pctr[sel] = self._map(task, pctr[sel])
        return pctr

    def apply_matrix(self, probs: np.ndarray, tasks: list[str] | tuple[str, ...]) -> np.ndarray:
        """(N, T) pCTR of every task head -> calibrated, column by column."""
        probs = np.asarray(probs, dtype=np.float64).copy()
        for t, task in enumerate(tasks):
            if task in self.params:
                probs[:, t] = self._map(task, probs[:, t])
        return probs

    def _map(self, task: str, p: np.ndarray) -> np.ndarray:
        par = self.params[task]
        if self.method == "isotonic":
            return np.interp(p, par["x"], par["y"])  # clipped to the end values outside the fitted range
        z = par["a"] * _logit(p) + par["b"]
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PosthocCalibration:
        return cls(state["method"], dict(state["params"]), dict(state.get("fitted_on", {})))


def reliability_points(labels: np.ndarray, pctr: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean pCTR, observed CTR) per equal-mass bin, from ``sklearn.calibration.calibration_curve``.

    Returns:
        (mean predicted (n,), fraction of clicks (n,)), n <= n_bins (bins emptied by ties are dropped); empty arrays
        when the slice has no rows or one class only.
    """
    from sklearn.calibration import calibration_curve

    y = np.asarray(labels)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return np.zeros(0), np.zeros(0)
    frac, mean_pred = calibration_curve(y, np.asarray(pctr, dtype=np.float64), n_bins=n_bins, strategy="quantile")
    return mean_pred, frac
