"""Plain-text tables of metrics (per format, per modality, per task), and the block renderer of HTML reports."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["format_table", "render_html"]

_COLUMNS = {
    "rows": "rows",
    "positives": "clicks",
    "ctr": "CTR",
    "mean_pctr": "mean pCTR",
    "auc_pr": "AUC-PR",
    "oracle_auc_pr": "oracle AUC-PR",
    "auc_roc": "AUC-ROC",
    "gauc": "GAUC",
    "logloss": "logloss",
    "ne": "NE",
    "ece": "ECE",
    "calibration_ratio": "calib ratio",
}


def format_table(metrics: dict[str, Any], sections: tuple[str, ...] = ("formats", "modality", "tasks")) -> str:
    """Render ``evaluate_groups`` output as aligned text, one block per section present.

    Adds ``AUC-PR / oracle`` when the oracle is known. NaN prints as ``nan``.
    """
    blocks = []
    for section in sections:
        rows = metrics.get(section)
        if not rows:
            continue
        frame = pd.DataFrame.from_dict(rows, orient="index")
        cols = [c for c in _COLUMNS if c in frame.columns]
        frame = frame[cols]
        if "oracle_auc_pr" in frame and frame["oracle_auc_pr"].notna().any():
            frame["AUC-PR / oracle"] = frame["auc_pr"] / frame["oracle_auc_pr"]
        else:
            frame = frame.drop(columns=["oracle_auc_pr"], errors="ignore")
        if "gauc" in frame and not frame["gauc"].notna().any():
            frame = frame.drop(columns=["gauc"])
        frame = frame.rename(columns=_COLUMNS)
        for c in ("rows", "clicks"):
            frame[c] = frame[c].map(lambda v: "nan" if isinstance(v, float) and math.isnan(v) else f"{int(v)}")
        frame.index.name = section
        blocks.append(frame.to_string(float_format=lambda v: f"{v:.4f}"))
    return "\n\n".join(blocks)


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1500px} table{border-collapse:collapse;font-size:12px;"
          "margin:0.5em 0} td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#f3f3f3} "
          "img{max-width:100%;border:1px solid #eee;margin:4px 0} pre{font-size:12px;background:#fafafa;padding:8px}")


def render_html(blocks: list[tuple[str, Any]], title: str) -> str:
    """One self-contained HTML page from (kind, value) blocks: ``h1`` / ``h2`` / ``h3`` / ``p`` / ``pre`` (text),
    ``ul`` (list of text), ``table`` (DataFrame), ``img`` (path of a PNG, embedded as a data URI). Text is escaped."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>"]
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3", "p", "pre"):
            parts.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in value) + "</ul>")
        elif kind == "table":
            parts.append(value.to_html(na_rep="", escape=True))
        elif kind == "img":
            data = base64.b64encode(Path(value).read_bytes()).decode("ascii")
            parts.append(f"<div><img alt='{html.escape(Path(value).stem)}' src='data:image/png;base64,{data}'></div>")
        else:
            raise ValueError(f"unknown report block kind {kind!r}")
    parts.append("</body></html>")
    return "\n".join(parts)
