"""What a replay shows: terminal tables, ``replay.json`` and a self-contained ``replay.html`` with lift charts.

Definitions (see ``camoe.replay.estimators``): wins = requests a policy's auction filled with a candidate of the
group; CTR = clicks / wins; eCPC = spend / clicks (currency units per click); revenue per 1,000 requests =
1000 · spend / all requests. "true" values are exact expectations from the log's ``p_true``; IPS / SNIPS / DR are
estimated from the logged choice, propensity and click only; ESS = effective sample size of the importance weights.
Lift = value / baseline value − 1 with its paired bootstrap CI (every policy is measured on the same resampled
requests). The paper reports its online result in this form: "audio CTR +14.5%, video CTR +1.3%, audio-slot eCPC
−4.8%" (Verma, Chen & Mei, KDD 2025).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from camoe.files import write_bytes, write_json
from camoe.evaluation.report import render_html
from camoe.replay.engine import LOGGED, ReplayResult

__all__ = ["format_lifts", "format_tables", "lift_table", "paper_form", "policy_table", "write_replay_report"]


def _pct(x: float, signed: bool = False, digits: int = 1) -> str:
    if not np.isfinite(x):
        return "n/a"
    text = f"{100 * x:+.{digits}f}%" if signed else f"{100 * x:.{digits}f}%"
    return text.replace("-", "−")


def _num(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}f}" if np.isfinite(x) else "n/a"


def _ci(result: ReplayResult, policy: str, metric: str, i: int, fmt: Any, lift: bool = False) -> str:
    entry = (result.lifts if lift else result.metrics)[policy][metric]
    v, lo, hi = (float(entry[k][i]) for k in ("value", "lo", "hi"))
    if not np.isfinite(v):
        return "n/a"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"
    return fmt(v)


def policy_table(result: ReplayResult, policy: str) -> pd.DataFrame:
    """One policy's metrics per group as text cells (rows: formats, groups, all)."""
    rows = []
    ctr = lambda x: _pct(x, digits=3)
    ecpc = lambda x: _num(x, 3)
    logged = policy == LOGGED
    for i, (level, name) in enumerate(result.groups):
        m = result.metrics[policy]
        row: dict[str, str] = {"group": name if level in ("format", "total") else f"{name} ({level})",
                               "wins": f"{m['wins']['value'][i]:,.0f}", "share": _pct(m["win_share"]["value"][i])}
        if result.has_truth:
            row["CTR true"] = _ci(result, policy, "truth_ctr", i, ctr)
        if result.has_propensity or logged:
            label = "observed" if logged else "DR"
            row[f"CTR {label}"] = _ci(result, policy, "dr_ctr", i, ctr)
            if not logged:
                row["CTR SNIPS"] = _ci(result, policy, "snips_ctr", i, ctr)
                row["CTR IPS"] = ctr(float(m["ips_ctr"]["value"][i]))
        if result.has_truth:
            row["eCPC true"] = _ci(result, policy, "truth_ecpc", i, ecpc)
        if result.has_propensity or logged:
            row["eCPC " + ("observed" if logged else "DR")] = ecpc(float(m["dr_ecpc"]["value"][i]))
        if result.has_truth:
            row["rev/1k req true"] = _num(float(m["truth_revenue_per_1k"]["value"][i]), 2)
        elif result.has_propensity or logged:
            row["rev/1k req " + ("observed" if logged else "DR")] = _num(float(m["dr_revenue_per_1k"]["value"][i]), 2)
        if result.has_propensity and not logged:
            row["ESS"] = f"{m['ess']['value'][i]:,.0f}" if np.isfinite(m["ess"]["value"][i]) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


def format_tables(result: ReplayResult) -> str:
    """Every policy's table, as text for the terminal."""
    out = []
    for policy in result.policies:
        title = ("logged policy (what the log shows: its choices, clicks and prices)" if policy == LOGGED
                 else f"model {policy}")
        d = result.diagnostics.get(policy, {})
        extra = ""
        if d.get("requests_without_known_format"):
            extra = f"; {d['requests_without_known_format']:,} requests without a format it scores (unfilled)"
        out.append(f"{title}{extra}")
        out.append(policy_table(result, policy).to_string())
        out.append("")
    return "\n".join(out)


def _groups_in_order(result: ReplayResult) -> list[int]:
    """Second-level groups (e.g. modalities), then formats, then the total."""
    order = [i for i, (lv, _) in enumerate(result.groups) if lv not in ("format", "total")]
    order += [i for i, (lv, _) in enumerate(result.groups) if lv == "format"]
    return order + [i for i, (lv, _) in enumerate(result.groups) if lv == "total"]


def lift_table(result: ReplayResult, policy: str) -> pd.DataFrame:
    """Lifts of ``policy`` over the baseline per group as text cells (value [CI])."""
    pct = lambda x: _pct(x, signed=True)
    rows = []
    for i in _groups_in_order(result):
        row = {"group": result.groups[i][1], "wins": pct(float(result.lifts[policy]["wins"]["value"][i]))}
        for metric, label in (("ctr", "CTR"), ("ecpc", "eCPC"), ("revenue_per_1k", "rev/1k req")):
            if result.has_truth:
                row[f"{label} true"] = _ci(result, policy, f"truth_{metric}", i, pct, lift=True)
            if result.has_propensity:
                row[f"{label} DR"] = _ci(result, policy, f"dr_{metric}", i, pct, lift=True)
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


def paper_form(result: ReplayResult, policy: str, estimate: str = "truth") -> str:
    """One line in the paper's form: "audio CTR +x% [lo, hi], audio eCPC −y% [lo, hi]; video ..." over the
    second-level groups (modalities), from ``truth`` or ``dr``."""
    pct = lambda x: _pct(x, signed=True)
    groups = [i for i, (lv, _) in enumerate(result.groups) if lv not in ("format", "total")] or \
        [i for i, (lv, _) in enumerate(result.groups) if lv == "total"]
    parts = []
    for i in groups:
        g = result.groups[i][1]
        part = f"{g} CTR {_ci(result, policy, f'{estimate}_ctr', i, pct, lift=True)}"
        if np.isfinite(result.lifts[policy][f"{estimate}_ecpc"]["value"][i]):  # no spend without prices
            part += f", {g} eCPC {_ci(result, policy, f'{estimate}_ecpc', i, pct, lift=True)}"
        parts.append(part)
    return "; ".join(parts)


def format_lifts(result: ReplayResult) -> str:
    """Each model's lift over the baseline: the paper's form per modality, then a table per group."""
    level = f"{100 * result.settings['level']:.0f}% CIs, paired bootstrap"
    lines = []
    for policy in result.lifts:
        lines.append(f"lift of {policy} over {result.baseline} ({level}):")
        if result.has_truth:
            lines.append(f"  true:  {paper_form(result, policy, 'truth')}")
        if result.has_propensity:
            lines.append(f"  DR:    {paper_form(result, policy, 'dr')}")
        lines.append(lift_table(result, policy).to_string())
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- charts
def _order(result: ReplayResult) -> list[int]:
    return _groups_in_order(result)


def _finite(x: np.ndarray) -> np.ndarray:
    """Non-finite values as 0 (bars and whiskers of undefined values are not drawn)."""
    return np.where(np.isfinite(x), x, 0.0)


def _bars(ax: Any, result: ReplayResult, policy: str, metric: str, order: list[int], title: str) -> None:
    """Horizontal lift bars with CI whiskers: truth (solid) and DR (light), per group."""
    labels = [result.groups[i][1] for i in order]
    y = np.arange(len(order))
    series = [(f"truth_{metric}", "true", "tab:blue", 1.0)] if result.has_truth else []
    if result.has_propensity:
        series.append((f"dr_{metric}", "DR estimate", "tab:orange", 0.55))
    height = 0.8 / max(1, len(series))
    span = []  # what sets the axis: every point, and the true values' CIs (DR CIs can be far wider)
    for s, (key, label, color, alpha) in enumerate(series):
        entry = result.lifts[policy][key]
        v = 100 * np.asarray(entry["value"], dtype=float)[order]
        lo = 100 * np.asarray(entry["lo"], dtype=float)[order]
        hi = 100 * np.asarray(entry["hi"], dtype=float)[order]
        err = np.clip(_finite(np.vstack([v - lo, hi - v])), 0, None)  # (2, groups)
        pos = y + (s - (len(series) - 1) / 2) * height
        ax.barh(pos, _finite(v), height=height * 0.95, color=color, alpha=alpha, label=label, xerr=err,
                error_kw={"elinewidth": 0.8, "capsize": 2})
        span += [v, lo, hi] if key.startswith("truth") or not result.has_truth else [v]
    values = np.concatenate(span) if span else np.zeros(1)
    values = values[np.isfinite(values)]
    if len(values):
        lo_x, hi_x = min(values.min(), -1.0), max(values.max(), 1.0)
        pad = 0.15 * (hi_x - lo_x)
        ax.set_xlim(lo_x - pad, hi_x + pad)  # wider CIs run off the axis
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% change over " + result.baseline, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="best")


def plot_lifts(result: ReplayResult, policy: str, path: Path) -> Path:
    """PNG: CTR lift and eCPC change of ``policy`` over the baseline per group, with CIs."""
    order = _order(result)
    panels = [(m, t) for m, t in (("ctr", "CTR lift"), ("ecpc", "eCPC change"),
                                  ("revenue_per_1k", "revenue per 1,000 requests, change"))
              if any(np.isfinite(result.lifts[policy][f"{e}_{m}"]["value"]).any() for e in ("truth", "dr"))]
    panels = panels or [("ctr", "CTR lift")]  # a log without prices has no spend: CTR only
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels) + 0.8, 0.45 * len(order) + 1.6),
                             sharey=True, squeeze=False)
    for ax, (metric, title) in zip(axes[0], panels):
        _bars(ax, result, policy, metric, order, title)
    fig.suptitle(f"{policy} vs {result.baseline}\n({100 * result.settings['level']:.0f}% CIs, paired bootstrap over "
                 f"{result.requests:,} requests; CIs wider than the axis run off it)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ctr(result: ReplayResult, path: Path) -> Path:
    """PNG: CTR per group for every policy (true values as bars; estimates as dots with CIs)."""
    order = _order(result)
    policies = result.policies
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(order) * len(policies) / 2 + 3), 4.2))
    width = 0.8 / len(policies)
    x = np.arange(len(order))
    colors = plt.get_cmap("tab10")
    for p, policy in enumerate(policies):
        pos = x + (p - (len(policies) - 1) / 2) * width
        m = result.metrics[policy]
        if result.has_truth:
            ax.bar(pos, 100 * _finite(np.asarray(m["truth_ctr"]["value"], float)[order]), width * 0.95,
                   color=colors(p), alpha=0.75, label=f"{policy} (true)")
        if result.has_propensity or policy == LOGGED:
            v = 100 * np.asarray(m["dr_ctr"]["value"], float)[order]
            lo = 100 * np.asarray(m["dr_ctr"]["lo"], float)[order]
            hi = 100 * np.asarray(m["dr_ctr"]["hi"], float)[order]
            err = np.clip(_finite(np.vstack([v - lo, hi - v])), 0, None)
            ax.errorbar(pos, v, yerr=err, fmt="o", ms=3, color="black" if result.has_truth else colors(p), lw=0.8,
                        capsize=2, label=None if result.has_truth and p else
                        ("observed / DR estimate" if result.has_truth else f"{policy} (DR / observed)"))
    ax.set_xticks(x, [result.groups[i][1] for i in order], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("CTR (%)", fontsize=8)
    ax.set_title("CTR per group: true (bars) and estimated from the logged clicks (dots, CI)" if result.has_truth
                 else "CTR per group: observed (logged policy) and DR estimates (models), with CIs", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration_table(result: ReplayResult, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """eCPC and spend per format of each (uncalibrated, calibrated) pair of the same model, side by side."""
    est = "truth" if result.has_truth else "dr"
    rows = []
    for raw, cal in pairs:
        for i, (level, name) in enumerate(result.groups):
            r, c = result.metrics[raw], result.metrics[cal]
            rows.append({
                "model": cal, "group": name,
                "wins uncal.": f"{r['wins']['value'][i]:,.0f}", "wins cal.": f"{c['wins']['value'][i]:,.0f}",
                f"eCPC uncal. ({est})": _num(float(r[f"{est}_ecpc"]["value"][i])),
                f"eCPC cal. ({est})": _num(float(c[f"{est}_ecpc"]["value"][i])),
                f"spend uncal. ({est})": _num(float(r[f"{est}_spend"]["value"][i]), 1),
                f"spend cal. ({est})": _num(float(c[f"{est}_spend"]["value"][i]), 1),
                f"CTR uncal. ({est})": _pct(float(r[f"{est}_ctr"]["value"][i]), digits=3),
                f"CTR cal. ({est})": _pct(float(c[f"{est}_ctr"]["value"][i]), digits=3),
            })
    return pd.DataFrame(rows).set_index(["model", "group"]) if rows else pd.DataFrame()


def plot_calibration(result: ReplayResult, pairs: Sequence[tuple[str, str]], path: Path) -> Path:
    """PNG: eCPC and spend per format, uncalibrated vs calibrated, for each pair."""
    est = "truth" if result.has_truth else "dr"
    order = _order(result)
    labels = [result.groups[i][1] for i in order]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(13, 3.6 * len(pairs)), squeeze=False)
    x = np.arange(len(order))
    for row, (raw, cal) in enumerate(pairs):
        for col, (metric, title) in enumerate(((f"{est}_ecpc", "eCPC"), (f"{est}_spend", "spend"))):
            ax = axes[row, col]
            for s, (policy, label, color) in enumerate(((raw, "uncalibrated", "tab:gray"),
                                                        (cal, "calibrated", "tab:green"))):
                entry = result.metrics[policy][metric]
                v = np.asarray(entry["value"], float)[order]
                lo, hi = np.asarray(entry["lo"], float)[order], np.asarray(entry["hi"], float)[order]
                err = np.clip(_finite(np.vstack([v - lo, hi - v])), 0, None)
                ax.bar(x + (s - 0.5) * 0.4, _finite(v), 0.38, color=color, label=label, yerr=err,
                       error_kw={"elinewidth": 0.8, "capsize": 2})
            ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{cal}: {title} per group ({'true' if est == 'truth' else 'DR'})", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- files
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_replay_report(
    result: ReplayResult, output: str | Path, calibration_pairs: Sequence[tuple[str, str]] = (),
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``replay.json``, ``replay.html`` and the chart PNGs into ``output``.

    Args:
        result: the replay.
        output: folder.
        calibration_pairs: (uncalibrated name, calibrated name) of the same model, shown side by side.
        extra: more JSON fields (e.g. the models' artifact paths).

    Returns:
        The written files.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["calibration_pairs"] = [list(p) for p in calibration_pairs]
    payload.update(extra or {})
    files = [out / "replay.json"]
    write_json(files[0], payload)
    images = [plot_ctr(result, out / "ctr.png")]
    lift_images = [plot_lifts(result, p, out / f"lift_{_safe(p)}.png") for p in result.lifts]
    cal_image = plot_calibration(result, calibration_pairs, out / "calibration.png") if calibration_pairs else None
    s = result.settings
    blocks: list[tuple[str, Any]] = [
        ("h1", f"Auction replay of {result.log}"),
        ("p", (f"{result.requests:,} requests, {result.candidates:,} candidates; {s['pricing']} price, CPC "
               f"reserve {s['reserve']:g}; {s['bootstrap']} Poisson bootstrap replicates over requests, "
               f"{100 * s['level']:.0f}% percentile CIs; lifts are over {result.baseline} (paired). "
               f"Truth (exact expected clicks from p_true): {'yes' if result.has_truth else 'no'}; "
               f"propensities (IPS / SNIPS / DR): {'yes' if result.has_propensity else 'no'}. "
               f"Replay took {result.seconds:.1f} s ({result.candidates_per_s:,.0f} candidates scored per second).")),
        ("p", ("wins = requests the policy's auction filled with a candidate of the group; CTR = clicks / wins; "
               "eCPC = spend / clicks (currency units per click); rev/1k req = spend per 1,000 requests (all "
               "requests); DR = doubly robust estimate (Dudík et al. 2011) with the model's own pCTR as reward "
               "model; SNIPS = self-normalised IPS (Swaminathan & Joachims 2015); IPS = Horvitz-Thompson; ESS = "
               "effective sample size (Σw)²/Σw² of the importance weights.")),
    ]
    if result.notes:
        blocks += [("h2", "Warnings"), ("ul", result.notes)]
    for policy, image in zip(result.lifts, lift_images):
        blocks += [("h2", f"Lift of {policy} over {result.baseline}")]
        if result.has_truth:
            blocks.append(("p", f"true: {paper_form(result, policy, 'truth')}"))
        if result.has_propensity:
            blocks.append(("p", f"DR estimate: {paper_form(result, policy, 'dr')}"))
        blocks += [("table", lift_table(result, policy)), ("img", image)]
    blocks += [("h2", "CTR per group"), ("img", images[0])]
    for policy in result.policies:
        blocks += [("h2", "logged policy" if policy == LOGGED else f"model {policy}"),
                   ("table", policy_table(result, policy))]
    if calibration_pairs and cal_image is not None:
        blocks += [("h2", "Calibration in the auction: the same model uncalibrated and calibrated"),
                   ("p", ("A winner's second-price CPC is the runner-up's eCPM divided by its own pCTR, so the pCTR "
                          "scale moves prices: an over-predicting model lets its winners pay less per click, and a "
                          "format whose pCTRs are shifted up or down wins more or fewer requests.")),
                   ("table", calibration_table(result, calibration_pairs)), ("img", cal_image)]
    page = out / "replay.html"
    write_bytes(page, render_html(blocks, f"camoe replay {result.log}").encode("utf-8"))
    return [*files, page, *images, *lift_images, *([cal_image] if cal_image else [])]
