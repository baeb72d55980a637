"""Experiment analysis and report: metrics per run, seed statistics, bootstrap CIs, lifts, Pareto front,
calibration, gate diagnostics and claim checks, written as ``results.csv``, ``report.md``, a self-contained
``index.html`` (images embedded) and PNGs.

Definitions used in the tables:

* AUC-PR = average precision (scikit-learn), per format and per slice value (e.g. modality), each row scored by its
  own task's head.
* mean ± std: over the seeds of a configuration (std with ddof = 1).
* CI: 95% percentile bootstrap over test rows of the seed-mean AUC-PR (``camoe.experiments.stats``).
* lift: AUC-PR_config / AUC-PR_baseline − 1 (seed means), CI from the paired bootstrap (same resampled rows).
* Pareto front: configurations whose vector of per-format (or per-slice-value) lifts no other configuration dominates.
* ECE / calibration ratio: ``camoe.evaluation.metrics``; post-hoc isotonic / Platt maps are fitted per task on the
  validation split and evaluated on test.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from camoe.evaluation.diagnostics import gate_warnings
from camoe.evaluation.metrics import binary_metrics
from camoe.calibration import PosthocCalibration, reliability_points
from camoe.experiments.pareto import pareto_front
from camoe.evaluation.plots import plot_gate_heatmap, plot_pareto_pairs, plot_reliability
from camoe.evaluation.report import render_html
from camoe.experiments.spec import ConfigurationSpec, ExperimentConfig, RunSpec
from camoe.experiments.stats import bootstrap_statistic, mean_std, percentile_interval

__all__ = ["Analysis", "analyse", "write_report"]

_METRICS = ("auc_pr", "auc_roc", "logloss", "ne", "ece", "calibration_ratio", "oracle_auc_pr", "rows", "positives")


@dataclass
class Analysis:
    """Everything the report shows, as tables.

    Attributes:
        metrics: long table, one row per run × slice × calibration × metric (``results.csv``).
        auc_pr: configuration × slice: seed mean, std, bootstrap CI of the seed-mean AUC-PR.
        lifts: configuration × slice: lift over the baseline and its paired bootstrap CI.
        pareto: configuration: mean per-format lift and Pareto-front membership per objective set.
        calibration: configuration × calibration variant: ECE and calibration ratio averaged over formats.
        gates: configuration -> task -> mean gate weight per expert (averaged over seeds).
        gate_issues: (configuration, seed, warning) for collapsed / uniform gates and identical experts.
        claims: one row per claim check.
        replicates: slice -> configuration -> (B,) bootstrap replicates of the seed-mean AUC-PR.
        timings: configuration -> seconds per run (mean over seeds).
    """

    metrics: pd.DataFrame
    auc_pr: pd.DataFrame
    lifts: pd.DataFrame
    pareto: pd.DataFrame
    calibration: pd.DataFrame
    gates: dict[str, dict[str, list[float]]]
    gate_issues: list[tuple[str, int, str]]
    claims: pd.DataFrame
    replicates: dict[tuple[str, str], dict[str, np.ndarray]] = field(repr=False, default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reliability: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = field(repr=False,
                                                                                         default_factory=dict)


def _slices(formats: np.ndarray, attributes: dict[str, dict[str, str]], names: list[str]) -> list[tuple[str, str]]:
    present = [f for f in attributes if (formats == f).any()] or sorted(set(formats))
    out = [("format", f) for f in present]
    for attr in names:
        values = sorted({attributes.get(f, {}).get(attr) for f in present} - {None})
        out += [(attr, v) for v in values]
    return out + [("all", "all")]


def _slice_mask(formats: np.ndarray, attributes: dict[str, dict[str, str]], kind: str, value: str) -> np.ndarray:
    if kind == "all":
        return np.ones(len(formats), dtype=bool)
    if kind == "format":
        return formats == value
    members = [f for f, a in attributes.items() if a.get(kind) == value]
    return np.isin(formats, members)


def _task_index(formats: np.ndarray, format_to_task: dict[str, str]) -> np.ndarray:
    tasks = sorted(set(format_to_task.values()))
    lookup = {f: tasks.index(t) for f, t in format_to_task.items()}
    return np.array([lookup.get(f, -1) for f in formats], dtype=np.int64)


def analyse(
    exp: ExperimentConfig,
    configurations: list[ConfigurationSpec],
    runs: list[RunSpec],
    evaluation: Any,
    output_dir: Path,
    bootstrap_samples: int,
    log: Callable[[str], None] | None = None,
) -> Analysis:
    """Compute every table of the report from the saved runs.

    Args:
        exp: the experiment.
        configurations: its configurations (grid order).
        runs: its runs; each must be finished (``run.json`` and ``predictions.npz`` under ``output_dir/runs``).
        evaluation: ``camoe.experiments.runner.EvalData``.
        output_dir: experiment folder.
        bootstrap_samples: B.
        log: progress lines.

    Raises:
        FileNotFoundError: a run is not finished.
    """
    say = log or (lambda _m: None)
    y_test, f_test = evaluation.labels["test"], evaluation.formats["test"]
    y_valid, f_valid = evaluation.labels["valid"], evaluation.formats["valid"]
    tp_test = evaluation.true_prob["test"]
    attributes = evaluation.attributes
    slices = _slices(f_test, attributes, exp.slices)
    masks = {s: _slice_mask(f_test, attributes, *s) for s in slices}
    records = []
    for run in runs:
        run_dir = output_dir / "runs" / run.key
        if not (run_dir / "run.json").is_file():
            raise FileNotFoundError(f"run {run.configuration.name} seed {run.seed} ({run_dir}) is not finished")
        payload = json.loads((run_dir / "run.json").read_text())
        with np.load(run_dir / "predictions.npz") as npz:
            records.append((run, payload, npz["valid"], npz["test"]))

    # ---------------------------------------------------------------- per-run metrics (raw and post-hoc)
    rows: list[dict[str, Any]] = []
    reliability: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
    first_seed = {c.name: None for c in configurations}
    for run, payload, p_valid, p_test in records:
        conf = run.configuration
        variants = {"none": p_test}
        t_valid = _task_index(f_valid, payload["format_to_task"])
        t_test = _task_index(f_test, payload["format_to_task"])
        ok_valid = np.isfinite(p_valid) & (t_valid >= 0)
        for method in exp.calibration.post_hoc:
            if ok_valid.sum() == 0:
                continue
            tasks = sorted(set(payload["format_to_task"].values()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # single-class tasks keep their pCTR; the report lists ECE per task
                cal = PosthocCalibration.fit(method, p_valid[ok_valid], y_valid[ok_valid], t_valid[ok_valid], tasks)
            variants[method] = cal.apply(p_test, t_test, tasks)
        if first_seed[conf.name] is None:
            first_seed[conf.name] = run.seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for variant, p in variants.items():
                for (kind, value), sel in masks.items():
                    m = binary_metrics(y_test[sel], p[sel], None if tp_test is None else tp_test[sel],
                                       name=f"{kind}={value}", split="test")
                    for metric in _METRICS:
                        if metric == "oracle_auc_pr" and (tp_test is None or variant != "none"):
                            continue
                        rows.append({"experiment": exp.name, "configuration": conf.name, "model": conf.model,
                                     "grouping": conf.grouping, "ablation": conf.ablation,
                                     "training": conf.training, "seed": run.seed, "run_key": run.key,
                                     "slice_type": kind, "slice": value, "calibration": variant,
                                     "metric": metric, "value": m[metric]})
        if first_seed[conf.name] == run.seed:
            reliability[conf.name] = {
                f: {v: reliability_points(y_test[masks[("format", f)]], p[masks[("format", f)]],
                                          exp.calibration.reliability_bins) for v, p in variants.items()}
                for kind, f in slices if kind == "format"}
    metrics = pd.DataFrame(rows)
    say(f"metrics: {len(records)} runs × {len(slices)} slices")

    # ---------------------------------------------------------------- seed statistics and bootstrap
    raw = metrics[metrics["calibration"] == "none"]
    ap = raw[raw["metric"] == "auc_pr"]
    names = [c.name for c in configurations]
    seed_rows = {name: [i for i, (run, *_rest) in enumerate(records) if run.configuration.name == name]
                 for name in names}
    level = exp.bootstrap.level
    auc_rows, lift_rows = [], []
    replicates: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    point: dict[tuple[str, str], dict[str, float]] = {}
    for s in slices:
        kind, value = s
        sel = masks[s]
        vals = ap[(ap["slice_type"] == kind) & (ap["slice"] == value)]
        point[s] = {n: mean_std(vals[vals["configuration"] == n]["value"].to_numpy())[0] for n in names}
        if kind == "all" or y_test[sel].sum() == 0:
            continue  # "all" is reported as a point estimate only (the bootstrap's cost grows with the rows)
        scores = np.vstack([records[i][3][sel] for n in names for i in seed_rows[n]])  # (S, n_slice)
        reps = bootstrap_statistic(y_test[sel], scores, bootstrap_samples, exp.bootstrap.seed)  # (S, B)
        replicates[s] = {}
        offset = 0
        for n in names:
            k = len(seed_rows[n])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                replicates[s][n] = np.nanmean(reps[offset:offset + k], axis=0)  # (B,)
            offset += k
    say(f"bootstrap: {bootstrap_samples} resamples × {len(replicates)} slices")
    base = exp.baseline
    for s in slices:
        kind, value = s
        vals = ap[(ap["slice_type"] == kind) & (ap["slice"] == value)]
        for n in names:
            mean, std = mean_std(vals[vals["configuration"] == n]["value"].to_numpy())
            lo, hi = percentile_interval(replicates[s][n], level) if s in replicates else (math.nan, math.nan)
            auc_rows.append({"configuration": n, "slice_type": kind, "slice": value, "mean": mean, "std": std,
                             "ci_low": lo, "ci_high": hi, "seeds": len(seed_rows[n])})
            lift, llo, lhi = lift_between(point, replicates, s, n, base, level)
            lift_rows.append({"configuration": n, "slice_type": kind, "slice": value, "lift": lift,
                              "ci_low": llo, "ci_high": lhi})
    auc_pr = pd.DataFrame(auc_rows)
    lifts = pd.DataFrame(lift_rows)

    # ---------------------------------------------------------------- Pareto
    pareto_rows = {n: {"configuration": n} for n in names}
    format_slices = [s for s in slices if s[0] == "format"]
    objective_sets = {"formats": format_slices}
    for attr in exp.slices:
        objective_sets[attr] = [s for s in slices if s[0] == attr]
    for label, objs in objective_sets.items():
        if not objs:
            continue
        matrix = np.array([[lifts_point(point, s, n, base) for s in objs] for n in names])  # (C, K)
        front = pareto_front(matrix)
        for n, on, row in zip(names, front, matrix):
            pareto_rows[n][f"mean_lift_{label}"] = float(np.nanmean(row)) if np.isfinite(row).any() else math.nan
            pareto_rows[n][f"front_{label}"] = bool(on)
    pareto = pd.DataFrame(list(pareto_rows.values()))

    # ---------------------------------------------------------------- calibration summary
    fmt_metrics = metrics[(metrics["slice_type"] == "format") & metrics["metric"].isin(["ece", "calibration_ratio",
                                                                                       "logloss", "auc_pr"])]
    per_seed = fmt_metrics.groupby(["configuration", "calibration", "seed", "metric"])["value"].mean().reset_index()
    calib = per_seed.groupby(["configuration", "calibration", "metric"])["value"].agg(["mean", "std"]).reset_index()

    # ---------------------------------------------------------------- gates
    gates: dict[str, dict[str, list[float]]] = {}
    issues: list[tuple[str, int, str]] = []
    for run, payload, *_ in records:
        name = run.configuration.name
        diag = payload["train"].get("gates") or {}
        for w in diag.get("warnings", []):
            issues.append((name, run.seed, w))
        summary = diag.get("mean_gate_weight") or {}
        if summary and len(next(iter(summary.values()))) > 1:
            acc = gates.setdefault(name, {})
            for task, weights in summary.items():
                acc.setdefault(task, []).append(weights)
    gates = {n: {t: np.mean(ws, axis=0).round(4).tolist() for t, ws in per.items()} for n, per in gates.items()}
    for name, summary in gates.items():  # also check the seed-averaged gates
        for w in gate_warnings(summary):
            issues.append((name, -1, f"seed mean: {w}"))

    timings = {n: float(np.mean([records[i][1]["seconds"] for i in seed_rows[n]])) for n in names if seed_rows[n]}
    analysis = Analysis(metrics, auc_pr, lifts, pareto, calib, gates, issues, pd.DataFrame(), replicates, timings,
                        reliability)
    analysis.claims = check_claims(exp, analysis, point, slices)
    return analysis


def lifts_point(point: dict[tuple[str, str], dict[str, float]], s: tuple[str, str], name: str, ref: str) -> float:
    """Seed-mean AUC-PR of ``name`` over that of ``ref`` on slice ``s``, minus 1 (NaN when undefined)."""
    a, b = point[s].get(name, math.nan), point[s].get(ref, math.nan)
    return a / b - 1.0 if b and not math.isnan(b) and not math.isnan(a) else math.nan


def lift_between(
    point: dict[tuple[str, str], dict[str, float]],
    replicates: dict[tuple[str, str], dict[str, np.ndarray]],
    s: tuple[str, str],
    name: str,
    ref: str,
    level: float,
) -> tuple[float, float, float]:
    """Lift of configuration ``name`` over ``ref`` on slice ``s`` with its paired bootstrap CI."""
    lift = lifts_point(point, s, name, ref)
    if s not in replicates or name not in replicates[s] or ref not in replicates[s]:
        return lift, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = replicates[s][name] / replicates[s][ref] - 1.0
    lo, hi = percentile_interval(ratio[np.isfinite(ratio)], level)
    return lift, lo, hi


def _mean_lift_ci(
    point: dict[tuple[str, str], dict[str, float]],
    replicates: dict[tuple[str, str], dict[str, np.ndarray]],
    slices: list[tuple[str, str]],
    name: str,
    ref: str,
    level: float,
) -> tuple[float, float, float]:
    """Mean over slices of the lift of ``name`` over ``ref`` (each slice weighted equally), paired CI."""
    lifts = [lifts_point(point, s, name, ref) for s in slices]
    reps = []
    for s in slices:
        if s in replicates and name in replicates[s] and ref in replicates[s]:
            with np.errstate(divide="ignore", invalid="ignore"):
                reps.append(replicates[s][name] / replicates[s][ref] - 1.0)
    if not reps:
        return float(np.nanmean(lifts)), math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_reps = np.nanmean(np.vstack(reps), axis=0)
    lo, hi = percentile_interval(mean_reps[np.isfinite(mean_reps)], level)
    return float(np.nanmean(lifts)), lo, hi


def _verdict(lo: float, hi: float) -> str:
    if math.isnan(lo):
        return "n/a"
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    return "inconclusive (CI spans 0)"


def check_claims(
    exp: ExperimentConfig, analysis: Analysis, point: dict[tuple[str, str], dict[str, float]],
    slices: list[tuple[str, str]],
) -> pd.DataFrame:
    """The paper's claims, measured on this experiment (only those whose configurations are in the grid)."""
    c, level, rows = exp.claims, exp.bootstrap.level, []
    names = set(point[slices[0]]) if slices else set()
    formats = [s for s in slices if s[0] == "format"]
    if c.pareto and all(n in names for n in c.pareto):
        pareto = analysis.pareto.set_index("configuration")
        for label in [k[len("front_"):] for k in pareto.columns if k.startswith("front_")]:
            on = [n for n in c.pareto if bool(pareto.loc[n, f"front_{label}"])]
            front = [n for n in pareto.index if bool(pareto.loc[n, f"front_{label}"])]
            if len(front) == len(pareto.index):
                verdict = f"uninformative: all {len(front)} configurations are on the front"
            else:
                verdict = "supported" if len(on) == len(c.pareto) else ("partly supported" if on else "not supported")
            rows.append({"claim": f"grouping {' / '.join(c.pareto)} is Pareto-optimal (lifts per {label})",
                         "measure": f"on the front: {on or 'none'}; front ({len(front)} of {len(pareto.index)}): "
                                    f"{front}",
                         "verdict": verdict})
    if c.two_task and c.two_task in names:
        for other in (c.one_task, c.many_task):
            if other and other in names:
                lift, lo, hi = _mean_lift_ci(point, analysis.replicates, formats, c.two_task, other, level)
                overall = lifts_point(point, ("all", "all"), c.two_task, other)
                rows.append({"claim": f"{c.two_task} beats {other} overall",
                             "measure": f"mean per-format AUC-PR lift {100 * lift:+.2f}% "
                                        f"[{100 * lo:+.2f}%, {100 * hi:+.2f}%]; pooled test AUC-PR lift "
                                        f"{100 * overall:+.2f}%",
                             "verdict": _verdict(lo, hi)})
    if c.dcn and c.mlp and c.dcn in names and c.mlp in names:
        cal = analysis.calibration
        ece = cal[(cal["metric"] == "ece") & (cal["calibration"] == "none")].set_index("configuration")
        fm = analysis.metrics
        per_fmt = fm[(fm["slice_type"] == "format") & (fm["metric"] == "ece") & (fm["calibration"] == "none")]
        by = per_fmt.groupby(["configuration", "slice"])["value"].mean()
        lower = sum(by[c.dcn][f] < by[c.mlp][f] for _, f in formats)
        d_m, d_s = ece.loc[c.dcn, "mean"], ece.loc[c.dcn, "std"]
        m_m, m_s = ece.loc[c.mlp, "mean"], ece.loc[c.mlp, "std"]
        separated = (m_m - d_m) > (d_s + m_s)
        rows.append({"claim": f"DCN experts ({c.dcn}) have lower calibration error than MLP experts ({c.mlp})",
                     "measure": f"mean ECE over formats {d_m:.5f} ± {d_s:.5f} vs {m_m:.5f} ± {m_s:.5f} (seeds); "
                                f"lower in {lower} of {len(formats)} formats",
                     "verdict": "supported" if separated and lower > len(formats) / 2 else (
                         "contradicted" if (d_m - m_m) > (d_s + m_s) else "inconclusive (within seed spread)")})
    if c.masked and c.unmasked and c.masked in names and c.unmasked in names:
        rare = [("format", f) for f in c.rare_formats if ("format", f) in point] or formats
        parts, verdicts = [], []
        for s in rare:
            lift, lo, hi = lift_between(point, analysis.replicates, s, c.masked, c.unmasked, level)
            parts.append(f"{s[1]} {100 * lift:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}]")
            verdicts.append(_verdict(lo, hi))
        lift, lo, hi = _mean_lift_ci(point, analysis.replicates, rare, c.masked, c.unmasked, level)
        rows.append({"claim": f"masking ({c.masked} vs {c.unmasked}) improves the rare formats",
                     "measure": f"AUC-PR lift per rare format: {'; '.join(parts)}; mean {100 * lift:+.2f}% "
                                f"[{100 * lo:+.2f}%, {100 * hi:+.2f}%]",
                     "verdict": _verdict(lo, hi)})
    if c.rare_task and c.rare_slice and c.rare_task in names:
        kind, value = c.rare_slice.split("=", 1)
        rare, same_kind = (kind, value), [s for s in slices if s[0] == kind]
        for other in [o for o in c.rare_versus if o in names]:
            lift, lo, hi = lift_between(point, analysis.replicates, rare, c.rare_task, other, level)
            mlift, mlo, mhi = _mean_lift_ci(point, analysis.replicates, same_kind, c.rare_task, other, level)
            rows.append({"claim": f"{c.rare_task} beats {other} on the rare {kind} {value} and on the mean over "
                                  f"the {kind} slices",
                         "measure": f"AUC-PR lift on {value} {100 * lift:+.2f}% [{100 * lo:+.2f}%, {100 * hi:+.2f}%]; "
                                    f"mean over {len(same_kind)} {kind} slices {100 * mlift:+.2f}% "
                                    f"[{100 * mlo:+.2f}%, {100 * mhi:+.2f}%]",
                         "verdict": f"{_verdict(lo, hi)} / {_verdict(mlo, mhi)}"})
    return pd.DataFrame(rows, columns=["claim", "measure", "verdict"])


# ==================================================================================================== rendering
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _fmt(v: float, digits: int = 4) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return "nan" if math.isnan(v) else f"{100 * v:+.1f}%"


def _wide(frame: pd.DataFrame, cell: Callable[[pd.Series], str], order: list[str], columns: list[str]) -> pd.DataFrame:
    table = {}
    for row in frame.itertuples(index=False):
        table.setdefault(row.configuration, {})[row.slice] = cell(row)  # type: ignore[attr-defined]
    return pd.DataFrame.from_dict(table, orient="index").reindex(index=order, columns=columns)


def _md_table(frame: pd.DataFrame, index_name: str = "configuration") -> str:
    cols = [index_name, *map(str, frame.columns)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for idx, row in frame.iterrows():
        lines.append("| " + " | ".join([str(idx), *("" if pd.isna(v) else str(v) for v in row)]) + " |")
    return "\n".join(lines)


Block = tuple[str, Any]


def _blocks(exp: ExperimentConfig, analysis: Analysis, configurations: list[ConfigurationSpec], runs: list[RunSpec],
            evaluation: Any, images: dict[str, list[Path]], quick: bool, samples: int) -> list[Block]:
    names = [c.name for c in configurations]
    y = evaluation.labels["test"]
    formats = [f for f in evaluation.attributes if (evaluation.formats["test"] == f).any()]
    seeds = sorted({r.seed for r in runs})
    blocks: list[Block] = [
        ("h1", f"Experiment {exp.name}" + (" (quick mode)" if quick else "")),
        ("p", f"{len(configurations)} configurations × {len(seeds)} seeds (seeds {seeds}) = {len(runs)} runs. "
              f"Test split: {len(y):,} rows, {int(y.sum()):,} clicks. Baseline for lifts: {exp.baseline}. "
              f"AUC-PR = average precision; mean ± std over seeds; [low, high] = {int(100 * exp.bootstrap.level)}% "
              f"percentile bootstrap over test rows ({samples} resamples) of the seed-mean AUC-PR; lifts are "
              f"relative to the baseline with a paired bootstrap CI."),
    ]
    auc = analysis.auc_pr
    lifts = analysis.lifts
    sections = [("format", formats, "format")] + [
        (attr, sorted(auc[auc["slice_type"] == attr]["slice"].unique()), attr) for attr in exp.slices]
    for kind, cols, label in sections:
        if not cols:
            continue
        part = auc[auc["slice_type"] == kind]
        blocks.append(("h2", f"AUC-PR per {label} (test)"))
        blocks.append(("table", _wide(part, lambda r: f"{_fmt(r.mean)} ± {_fmt(r.std)} [{_fmt(r.ci_low)}, "
                                                      f"{_fmt(r.ci_high)}]", names, cols)))
        blocks.append(("h2", f"AUC-PR lift over {exp.baseline} per {label}"))
        blocks.append(("table", _wide(lifts[lifts["slice_type"] == kind],
                                      lambda r: f"{_pct(r.lift)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}]", names, cols)))
    overall = auc[auc["slice_type"] == "all"].set_index("configuration")
    if "oracle_auc_pr" in set(analysis.metrics["metric"]):
        oracle = analysis.metrics[(analysis.metrics["metric"] == "oracle_auc_pr")]
        orc = oracle.groupby(["slice_type", "slice"])["value"].first()
        blocks.append(("p", "Oracle AUC-PR (true click probability) on test: " + ", ".join(
            f"{s} {orc[('format', s)]:.4f}" for s in formats if ("format", s) in orc.index)))
    blocks.append(("h2", "Pareto analysis"))
    blocks.append(("p", "A configuration is on the front when no other configuration has a lift at least as high on "
                        "every objective and higher on one (objectives: AUC-PR lift of each format, or of each "
                        "slice value)."))
    pareto = analysis.pareto.set_index("configuration").reindex(names)
    pareto.insert(0, "pooled AUC-PR (all rows)", [_fmt(overall["mean"].get(n, math.nan)) for n in names])
    pareto.insert(1, "s/run", [f"{analysis.timings.get(n, math.nan):.1f}" for n in names])
    for col in pareto.columns:
        if col.startswith("mean_lift_"):
            pareto[col] = pareto[col].map(_pct)
        if col.startswith("front_"):
            pareto[col] = pareto[col].map(lambda v: "front" if v else "")
    blocks.append(("table", pareto))
    for path in images.get("pareto", []):
        blocks.append(("img", path))
    blocks.append(("h2", "Calibration (test; post-hoc maps fitted per task on validation)"))
    cal = analysis.calibration
    wide = {}
    for row in cal.itertuples(index=False):
        wide.setdefault(row.configuration, {})[f"{row.metric} ({row.calibration})"] = (
            f"{row.mean:.5f} ± {0.0 if math.isnan(row.std) else row.std:.5f}" if row.metric == "ece"
            else f"{row.mean:.4f}")
    variants = ["none", *exp.calibration.post_hoc]
    cols = [f"{m} ({v})" for m in ("ece", "calibration_ratio", "auc_pr") for v in variants]
    blocks.append(("p", "Mean over formats (ECE mean ± std over seeds; calibration ratio = Σ pCTR / Σ clicks)."))
    blocks.append(("table", pd.DataFrame.from_dict(wide, orient="index").reindex(index=names, columns=cols)))
    ece_fmt = analysis.metrics[(analysis.metrics["slice_type"] == "format") & (analysis.metrics["metric"] == "ece")
                               & (analysis.metrics["calibration"] == "none")]
    ece_tab = ece_fmt.groupby(["configuration", "slice"])["value"].agg(["mean", "std"]).reset_index()
    blocks.append(("h3", "ECE per format (no post-hoc calibration)"))
    blocks.append(("table", _wide(ece_tab.rename(columns={"mean": "m", "std": "s"}),
                                  lambda r: f"{r.m:.5f} ± {0.0 if math.isnan(r.s) else r.s:.5f}", names, formats)))
    ratio_fmt = analysis.metrics[(analysis.metrics["slice_type"] == "format")
                                 & (analysis.metrics["metric"] == "calibration_ratio")
                                 & (analysis.metrics["calibration"] == "none")]
    ratio_tab = ratio_fmt.groupby(["configuration", "slice"])["value"].mean().reset_index()
    blocks.append(("h3", "Calibration ratio per format (no post-hoc calibration, seed mean)"))
    blocks.append(("table", _wide(ratio_tab, lambda r: f"{r.value:.3f}", names, formats)))
    for path in images.get("reliability", []):
        blocks.append(("img", path))
    blocks.append(("h2", "Gate diagnostics"))
    if analysis.gate_issues:
        blocks.append(("ul", [f"{n} (seed {s if s >= 0 else 'mean'}): {w}" for n, s, w in analysis.gate_issues]))
    else:
        blocks.append(("p", "No collapsed (> 95% on one expert) or exactly uniform gates, and no identical experts."))
    for path in images.get("gates", []):
        blocks.append(("img", path))
    if len(analysis.claims):
        blocks.append(("h2", "The paper's claims, measured here"))
        blocks.append(("table", analysis.claims.set_index("claim")))
    return blocks


def _render_md(blocks: list[Block], base: Path) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + value)
        elif kind == "p":
            out.append(value)
        elif kind == "ul":
            out.append("\n".join(f"- {v}" for v in value))
        elif kind == "table":
            out.append(_md_table(value, value.index.name or "configuration"))
        elif kind == "img":
            out.append(f"![{value.stem}]({value.relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


def write_report(
    exp: ExperimentConfig,
    configurations: list[ConfigurationSpec],
    runs: list[RunSpec],
    evaluation: Any,
    output_dir: Path,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
    missing: list[RunSpec] | None = None,
) -> list[Path]:
    """Analyse the finished runs and write ``report/`` (results.csv, report.md, index.html, PNGs).

    ``missing`` lists runs of the grid not finished yet (a partial report names them).

    Returns:
        The written files.
    """
    samples = exp.quick.bootstrap_samples if quick else exp.bootstrap.samples
    analysis = analyse(exp, configurations, runs, evaluation, output_dir, samples, log)
    report_dir = output_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    results = report_dir / "results.csv"
    analysis.metrics.to_csv(results, index=False)
    analysis.auc_pr.to_csv(report_dir / "auc_pr.csv", index=False)
    analysis.lifts.to_csv(report_dir / "lifts.csv", index=False)
    analysis.pareto.to_csv(report_dir / "pareto.csv", index=False)
    analysis.claims.to_csv(report_dir / "claims.csv", index=False)
    files += [results, report_dir / "auc_pr.csv", report_dir / "lifts.csv", report_dir / "pareto.csv",
              report_dir / "claims.csv"]
    images: dict[str, list[Path]] = {"pareto": [], "reliability": [], "gates": []}
    point = analysis.lifts[analysis.lifts["slice_type"] != "all"]
    pareto = analysis.pareto.set_index("configuration")
    for attr in ["format", *exp.slices]:
        part = point[point["slice_type"] == attr]
        values = list(dict.fromkeys(part["slice"]))
        if attr == "format" or len(values) < 2:
            continue
        lifts = {n: dict(zip(g["slice"], g["lift"])) for n, g in part.groupby("configuration", sort=False)}
        front = {n: bool(pareto.loc[n, f"front_{attr}"]) for n in lifts if f"front_{attr}" in pareto.columns}
        path = plot_pareto_pairs(lifts, front, values, report_dir / f"pareto_{_safe(attr)}.png",
                                 f"AUC-PR lift over {exp.baseline}, per {attr}")
        if path is not None:
            images["pareto"].append(path)
    for conf in configurations:
        if conf.name in analysis.reliability:
            images["reliability"].append(plot_reliability(
                analysis.reliability[conf.name], report_dir / f"reliability_{_safe(conf.name)}.png",
                f"{conf.name}: reliability per format (test, first seed)"))
    for name, summary in analysis.gates.items():
        images["gates"].append(plot_gate_heatmap(summary, report_dir / f"gates_{_safe(name)}.png",
                                                 f"{name}: mean gate weight (seed mean)"))
    files += [p for ps in images.values() for p in ps]
    blocks = _blocks(exp, analysis, configurations, runs, evaluation, images, quick, samples)
    if missing:
        blocks.insert(1, ("p", f"PARTIAL REPORT: {len(missing)} runs of the grid are not finished and are left out: "
                              + ", ".join(f"{r.configuration.name} seed {r.seed}" for r in missing)))
    md = report_dir / "report.md"
    md.write_text(_render_md(blocks, report_dir))
    index = report_dir / "index.html"
    index.write_text(render_html(blocks, f"camoe experiment {exp.name}"))
    return [*files, md, index]
