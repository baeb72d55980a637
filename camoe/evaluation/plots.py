"""PNG figures of runs and experiments (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_gate_heatmap", "plot_pareto_pairs", "plot_pctr_distributions", "plot_reliability",
           "plot_training_curves"]


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


def plot_pctr_distributions(histograms: dict[str, tuple[list[float], list[float], list[float]]], path: Path,
                            title: str) -> Path:
    """pCTR distribution of each format: share of its impressions and of its clicks per log-spaced pCTR bin.

    Args:
        histograms: format -> (bin edges (B + 1,), impressions per bin (B,), clicks per bin (B,)).
        path: PNG to write.
        title: figure title.
    """
    formats = list(histograms)
    cols = min(4, max(1, len(formats)))
    rows = int(np.ceil(len(formats) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.7 * rows), squeeze=False)
    for ax, name in zip(axes.flat, formats):
        edges, rows_per, clicks_per = (np.asarray(a, dtype=np.float64) for a in histograms[name])
        widths = np.diff(edges)
        for counts, color, label in ((rows_per, "tab:blue", "impressions"), (clicks_per, "tab:red", "clicks")):
            share = counts / counts.sum() if counts.sum() else counts
            ax.bar(edges[:-1], share, width=widths, align="edge", alpha=0.5, color=color, label=label)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("pCTR", fontsize=7)
        ax.set_ylabel("share", fontsize=7)
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


def plot_training_curves(history: list[dict], path: Path, title: str) -> Path:
    """Training loss per task and mean validation AUC-PR against optimizer steps (one point per evaluation).

    Args:
        history: ``TrainResult.history`` entries (``step``, ``total``, ``loss/<task>``, ``valid_score``).
        path: PNG to write.
        title: figure title.
    """
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    keys = sorted({k for h in history for k in h if k.startswith("loss/")})
    for key in ["total", *keys]:
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            left.plot(steps, [np.nan if v is None else v for v in values], marker="o", ms=3, lw=1,
                      label=key.removeprefix("loss/"))
    left.set_xlabel("step", fontsize=7)
    left.set_ylabel("training loss (mean since the last evaluation)", fontsize=7)
    left.legend(fontsize=6)
    left.grid(alpha=0.3)
    scores = [h.get("valid_score") for h in history]
    if any(s is not None for s in scores):
        right.plot(steps, [np.nan if s is None else s for s in scores], marker="o", ms=3, lw=1, color="tab:green")
    right.set_xlabel("step", fontsize=7)
    right.set_ylabel("mean validation AUC-PR", fontsize=7)
    right.grid(alpha=0.3)
    for ax in (left, right):
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
