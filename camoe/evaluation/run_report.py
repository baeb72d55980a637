"""``report.html`` of one run: what a person looks at before shipping a model.

One self-contained HTML file (figures embedded as PNG): the per-format / per-modality / per-task table, warnings
(near-constant tasks, undefined metrics), reliability diagrams per task, pCTR distributions per format, the gate
heatmap, training curves and input quality. ``camoe train`` writes it into the artifact, ``camoe evaluate`` into its
output folder. Everything it draws comes from ``metrics.json`` (``plots``), the training history and the gate
diagnostics, so it can be rebuilt from a finished run.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from camoe.evaluation.plots import plot_gate_heatmap, plot_pctr_distributions, plot_reliability, plot_training_curves
from camoe.files import write_bytes

__all__ = ["write_run_report"]

_COLUMNS = {"rows": "rows", "positives": "clicks", "ctr": "CTR", "mean_pctr": "mean pCTR", "auc_pr": "AUC-PR",
            "oracle_auc_pr": "oracle AUC-PR", "auc_roc": "AUC-ROC", "gauc": "GAUC", "logloss": "logloss",
            "ne": "NE", "ece": "ECE", "calibration_ratio": "calib ratio"}
_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.warn{color:#a33}.note{color:#666;font-size:12px}
img{max-width:100%;margin:6px 0}"""


def _table(section: dict[str, dict[str, float]], name: str) -> str:
    frame = pd.DataFrame.from_dict(section, orient="index")
    cols = [c for c in _COLUMNS if c in frame.columns and frame[c].notna().any()]
    frame = frame[cols]
    if "oracle_auc_pr" in frame:
        frame["AUC-PR / oracle"] = frame["auc_pr"] / frame["oracle_auc_pr"]
    frame = frame.rename(columns=_COLUMNS)
    frame.index.name = name
    formatters = {c: (lambda v: "" if v != v else f"{int(v):,}") for c in ("rows", "clicks") if c in frame}
    return frame.to_html(float_format=lambda v: f"{v:.4f}", formatters=formatters, na_rep="NaN", border=0)


def _image(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def write_run_report(
    path: str | Path, title: str, metrics: dict[str, Any], facts: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None, gates: dict[str, Any] | None = None,
) -> Path:
    """Write ``report.html``.

    Args:
        path: the HTML file to write (atomically).
        title: page title (e.g. "camoe train runs/demo/model").
        metrics: ``camoe.scoring.evaluate_source`` output of the split reported.
        facts: name -> value lines shown under the title (model, grouping, rows, split, ...).
        history: ``TrainResult.history`` (training curves), or None.
        gates: gate diagnostics (``mean_gate_weight``, ``warnings``), or None.

    Returns:
        ``path``.
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if facts:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                                         for k, v in facts.items()) + "</table>")
    warnings_ = list(metrics.get("warnings", [])) + list((gates or {}).get("warnings", []))
    skipped = metrics.get("macro", {}).get("skipped", {})
    if warnings_ or skipped:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in warnings_))
        if skipped:
            parts.append(f"<li>undefined metrics (NaN, left out of the averages): {html.escape(str(skipped))}</li>")
        parts.append("</ul>")
    split = metrics.get("split", "")
    parts.append(f"<h2>Metrics on the {html.escape(str(split))} split</h2>"
                 f"<p class='note'>AUC-PR = average precision; calibration ratio = Σ pCTR / Σ clicks; "
                 f"{html.escape(str(metrics.get('metric_precision', '')))}.</p>")
    for section in ("formats", "modality", "tasks"):
        if metrics.get(section):
            parts.append(_table(metrics[section], section))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plots = metrics.get("plots", {})
        curves = {task: {"none": tuple(points)} for task, points in plots.get("reliability", {}).items() if points[0]}
        if curves:
            parts.append("<h2>Reliability per task</h2><p class='note'>Observed CTR against mean pCTR in ten "
                         "equal-mass pCTR bins; the dashed line is perfect calibration.</p>")
            parts.append(_image(plot_reliability(curves, folder / "reliability.png", "reliability per task")))
        histograms = {f: tuple(h) for f, h in plots.get("pctr_histogram", {}).items()}
        if histograms:
            parts.append("<h2>pCTR distribution per format</h2><p class='note'>Share of each format's impressions "
                         "and clicks per pCTR bin (log scale): clicks should sit to the right of impressions.</p>")
            parts.append(_image(plot_pctr_distributions(histograms, folder / "pctr.png", "pCTR per format")))
        if gates and gates.get("mean_gate_weight"):
            parts.append("<h2>Gates</h2><p class='note'>Mean gate weight of each task on each expert, over the "
                         "rows the task scores.</p>")
            parts.append(_image(plot_gate_heatmap(gates["mean_gate_weight"], folder / "gates.png",
                                                  "mean gate weight per task and expert")))
        if history:
            parts.append("<h2>Training</h2>")
            parts.append(_image(plot_training_curves(history, folder / "training.png", "training curves")))
    quality = metrics.get("input_quality") or {}
    if any(quality.get(k) for k in ("out_of_vocabulary", "missing", "clipped")):
        rows = quality.get("rows") or 0
        parts.append(f"<h2>Input quality</h2><p class='note'>Rows (values, for multi-valued features) the encoder "
                     f"mapped, out of {rows:,} rows.</p><table><tr><th>feature</th><th>out of vocabulary</th>"
                     f"<th>missing</th><th>clipped to the training range</th></tr>")
        names = sorted(set(quality.get("out_of_vocabulary", {})) | set(quality.get("missing", {}))
                       | set(quality.get("clipped", {})))
        for name in names:
            cells = [quality.get(k, {}).get(name, 0) for k in ("out_of_vocabulary", "missing", "clipped")]
            parts.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c:,}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = Path(path)
    write_bytes(path, "\n".join(parts).encode())
    return path
