"""Gate diagnostics (case B05): mean gate weight per task and expert, and warnings for degenerate mixtures.

Works on arrays of gate weights; the caller runs the model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gate_summary", "gate_warnings", "identical_pairs"]


def gate_summary(gate_sums: np.ndarray, row_counts: np.ndarray, tasks: tuple[str, ...] | list[str]) -> dict[str, list[float]]:
    """Mean gate weight per expert for each task, over the rows that task scores.

    Args:
        gate_sums: (T, E) sum of task t's gate weights over its rows.
        row_counts: (T,) rows per task.
        tasks: the T task names.

    Returns:
        task -> E mean weights (each list sums to 1); tasks without rows are left out.

    Example:
        >>> gate_summary(np.array([[3.0, 1.0]]), np.array([4]), ["audio"])
        {'audio': [0.75, 0.25]}
    """
    return {t: (gate_sums[i] / row_counts[i]).round(6).tolist() for i, t in enumerate(tasks) if row_counts[i] > 0}


def identical_pairs(stacked: list[np.ndarray]) -> list[tuple[int, int]]:
    """Pairs of experts whose parameters are all equal.

    Args:
        stacked: parameters with the expert as leading axis, each (E, ...).

    Example:
        >>> identical_pairs([np.array([[1.0], [1.0], [2.0]])])
        [(0, 1)]
    """
    if not stacked:
        return []
    n = stacked[0].shape[0]
    flat = np.concatenate([p.reshape(n, -1) for p in stacked], axis=1)  # (E, P)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if np.array_equal(flat[i], flat[j])]


def gate_warnings(summary: dict[str, list[float]], collapse: float = 0.95, allowed: np.ndarray | None = None) -> list[str]:
    """Warnings for collapsed gates (one expert > ``collapse`` of a task's mass) and exactly uniform gates.

    Args:
        summary: ``gate_summary`` output.
        collapse: mass threshold for a collapsed gate.
        allowed: optional (T, E) bool of experts each task may use (CGC); uniformity is judged over those.

    Example:
        >>> gate_warnings({"audio": [0.97, 0.03], "video": [0.5, 0.5]})
        ["task 'audio': gate collapsed on expert 0 (0.970 of the mass)", "task 'video': gate is exactly uniform over 2 experts"]
    """
    out = []
    for i, (task, weights) in enumerate(summary.items()):
        w = np.asarray(weights)
        if allowed is not None:
            w = w[np.asarray(allowed)[i]]
        if len(w) < 2:
            continue
        if w.max() > collapse:
            out.append(f"task '{task}': gate collapsed on expert {int(np.argmax(weights))} ({w.max():.3f} of the mass)")
        elif np.allclose(w, w[0], rtol=0, atol=1e-6):
            out.append(f"task '{task}': gate is exactly uniform over {len(w)} experts")
    return out
