"""PNG figures of an experiment (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_gate_heatmap", "plot_pareto_pairs", "plot_reliability"]


def plot_pareto_pairs(
    lifts: dict[str, dict[str, float]], front: dict[str, bool], values: list[str], path: Path, title: str
) -> Path | None:
    """Scatter of AUC-PR lifts for every pair of slice values (e.g. audio vs video), front marked.

    Args:
        lifts: configuration -> slice value -> relative AUC-PR lift over the baseline.
        front: configuration -> on the Pareto front of these values' lifts.
        values: the slice values (≥ 2) to pair.
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``, or None when fewer than 2 values.
    """
    pairs = list(itertools.combinations(values, 2))
    if not pairs:
        return None
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.6), squeeze=False)
    names = list(lifts)
    for ax, (a, b) in zip(axes[0], pairs):
        for name in names:
            x, y = 100 * lifts[name].get(a, np.nan), 100 * lifts[name].get(b, np.nan)
            on = front.get(name, False)
            ax.scatter([x], [y], s=46 if on else 22, c="tab:red" if on else "tab:gray", zorder=3 if on else 2,
                       edgecolors="black" if on else "none", linewidths=0.6)
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points",
                        color="black" if on else "dimgray")
        ax.axhline(0, color="lightgray", lw=0.8)
        ax.axvline(0, color="lightgray", lw=0.8)
        ax.set_xlabel(f"AUC-PR lift, {a} (%)")
        ax.set_ylabel(f"AUC-PR lift, {b} (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} (red: Pareto front)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str
) -> Path:
    """Reliability diagram, one panel per format: observed CTR against mean pCTR per equal-mass bin.

    Args:
        curves: format -> calibration variant ("none", "isotonic", "platt") -> (mean pCTR (n,), observed CTR (n,)).
        path: PNG to write.
        title: figure title.
    """
    formats = list(curves)
    cols = min(4, max(1, len(formats)))
    rows = int(np.ceil(len(formats) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows), squeeze=False)
    styles = {"none": ("tab:blue", "o"), "isotonic": ("tab:green", "s"), "platt": ("tab:orange", "^")}
    for ax, name in zip(axes.flat, formats):
        top = 0.0
        for variant, (mean_pred, frac) in curves[name].items():
            if len(mean_pred) == 0:
                continue
            color, marker = styles.get(variant, ("black", "x"))
            ax.plot(mean_pred, frac, marker=marker, ms=3, lw=1, color=color, label=variant)
            top = max(top, float(np.max(mean_pred)), float(np.max(frac)))
        top = top * 1.05 or 1.0
        ax.plot([0, top], [0, top], ls="--", color="gray", lw=0.8)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("mean pCTR", fontsize=7)
        ax.set_ylabel("observed CTR", fontsize=7)
    for ax in list(axes.flat)[len(formats):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gate_heatmap(summary: dict[str, list[float]], path: Path, title: str) -> Path:
    """Heatmap of the mean gate weight of each task (rows) on each expert (columns).

    Args:
        summary: task -> E mean gate weights (``camoe.evaluation.diagnostics.gate_summary``).
        path: PNG to write.
        title: figure title.
    """
    tasks = list(summary)
    weights = np.array([summary[t] for t in tasks], dtype=np.float64)  # (T, E)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * weights.shape[1], 0.9 + 0.45 * len(tasks)))
    im = ax.imshow(weights, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for (t, e), w in np.ndenumerate(weights):
        ax.text(e, t, f"{w:.2f}", ha="center", va="center", fontsize=7, color="white" if w < 0.6 else "black")
    ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
    ax.set_xticks(range(weights.shape[1]), [f"e{e}" for e in range(weights.shape[1])], fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
