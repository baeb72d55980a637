"""Pareto analysis of configurations over several objectives (per-format or per-modality AUC-PR lifts).

Dominance (maximisation; Pareto 1906, as used in multi-objective optimisation, e.g. Deb 2001 Sec. 2.4): point a
dominates point b when a_k ≥ b_k for every objective k and a_k > b_k for at least one. The front is the set of
points no other point dominates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dominates", "pareto_front"]


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` Pareto-dominates ``b`` (maximisation).

    Example:
        >>> dominates(np.array([1.0, 2.0]), np.array([1.0, 1.0])), dominates(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
        (True, False)
    """
    return bool(np.all(a >= b) and np.any(a > b))


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of a (C, K) matrix of objectives to maximise.

    Args:
        points: (C, K) one row per configuration, one column per objective (e.g. AUC-PR lift of each format).
            Columns holding a NaN in any row are left out of the comparison (an objective not measured for every
            configuration cannot rank them).

    Returns:
        (C,) bool, True for configurations on the Pareto front. Equal rows are both on the front.

    Raises:
        ValueError: ``points`` is not 2-D.

    Example:
        >>> pareto_front(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4]])).tolist()
        [True, True, True, False]
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must be (C, K), got shape {p.shape}")
    p = p[:, ~np.isnan(p).any(axis=0)]  # (C, K')
    front = np.ones(len(p), dtype=bool)
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j and dominates(p[j], p[i]):
                front[i] = False
                break
    return front
