"""Plain-text tables of metrics (per format, per modality, per task)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["format_table"]

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
