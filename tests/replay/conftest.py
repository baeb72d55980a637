"""Fixtures of the replay tests: a model with fixed pCTRs (read from a column of the log) and hand-made logs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest


@dataclass
class ColumnModel:
    """A replay model whose pCTR is a column of the log (so tests know every pCTR by hand)."""

    name: str
    formats: tuple[str, ...] = ("fa", "fv")
    column: str = "model_pctr"
    format_attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: int = 0

    @property
    def columns(self) -> list[str]:
        return [self.column]

    def score(self, rows: pd.DataFrame, source: str) -> np.ndarray:
        self.calls += 1
        assert set(rows["format"].astype(str)) <= set(self.formats), "scored a format it does not know"
        return rows[self.column].to_numpy(dtype=np.float64)


# The 5-request log of the hand computation (tests/replay/test_estimators.py). Formats: fa (audio), fv (video).
#  request  cand  format  bid  model_pctr  p_true  shown  propensity  click  price
FIVE = [
    (1, "A", "fa", 1.0, 0.10, 0.08, 1, 0.50, 1, 0.4),
    (1, "B", "fv", 2.0, 0.02, 0.05, 0, 0.50, 0, np.nan),
    (2, "A", "fa", 1.0, 0.05, 0.04, 1, 0.60, 1, 0.5),
    (2, "B", "fv", 1.0, 0.08, 0.10, 0, 0.40, 0, np.nan),
    (3, "A", "fa", 1.0, 0.20, 0.10, 1, 0.25, 0, 0.5),
    (3, "B", "fa", 0.5, 0.20, 0.30, 0, 0.75, 0, np.nan),
    (4, "A", "fv", 3.0, 0.10, 0.20, 1, 0.80, 1, 1.0),
    (4, "B", "fa", 1.0, 0.10, 0.10, 0, 0.10, 0, np.nan),
    (4, "C", "fa", 1.0, 0.05, 0.02, 0, 0.10, 0, np.nan),
    (5, "A", "fa", 1.0, 0.01, 0.02, 0, 0.50, 0, np.nan),
    (5, "B", "fv", 1.0, 0.03, 0.04, 1, 0.50, 0, 0.3),
]


@pytest.fixture
def five_request_log() -> pd.DataFrame:
    frame = pd.DataFrame(FIVE, columns=["request_id", "candidate", "format", "bid", "model_pctr", "p_true", "shown",
                                        "propensity", "click", "price"])
    frame["modality"] = frame["format"].map({"fa": "audio", "fv": "video"})
    return frame


@pytest.fixture
def column_model() -> ColumnModel:
    return ColumnModel("fixed")


def random_log(requests: int, candidates: int, seed: int, formats: tuple[str, ...] = ("fa", "fv")) -> pd.DataFrame:
    """A random valid log: softmax-ish propensities, one shown candidate drawn from them, clicks from p_true."""
    rng = np.random.default_rng(seed)
    n = requests * candidates
    req = np.repeat(np.arange(requests), candidates)
    p_true = rng.uniform(0.01, 0.2, n)
    prop = rng.dirichlet(np.ones(candidates), requests)  # (R, K)
    shown_k = np.array([rng.choice(candidates, p=row) for row in prop])
    shown = np.zeros((requests, candidates), dtype=np.int8)
    shown[np.arange(requests), shown_k] = 1
    click = (shown.reshape(-1) == 1) & (rng.random(n) < p_true)
    fmt = np.array(formats, dtype=object)[rng.integers(0, len(formats), n)]
    return pd.DataFrame({
        "request_id": req, "format": fmt, "modality": np.where(fmt == "fa", "audio", "video"),
        "bid": rng.uniform(0.5, 2.0, n), "model_pctr": np.clip(p_true * rng.lognormal(0, 0.3, n), 1e-4, 0.9),
        "p_true": p_true, "shown": shown.reshape(-1), "propensity": prop.reshape(-1),
        "click": click.astype(np.int8), "price": np.where(shown.reshape(-1) == 1, 0.5, np.nan),
    })


@pytest.fixture
def make_log():
    """``random_log(requests, candidates, seed)``: a random valid replay log."""
    return random_log


@pytest.fixture
def make_model():
    """``ColumnModel(name, formats=...)``: a model whose pCTR is the log's ``model_pctr`` column."""
    return ColumnModel
