"""The train / valid / test split (``camoe.data.split``): temporal by timestamp, ties kept in one split, errors that
name the column. Parity of the split between rows in memory and rows streamed from Parquet: ``tests/test_run.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import camoe
from camoe.config import SplitConfig
from camoe.data.sources import FrameSource
from camoe.data.split import plan_split

def test_temporal_split_puts_the_earliest_rows_in_train_and_the_latest_in_test() -> None:
    frame = pd.DataFrame({"ts": [5, 1, 4, 2, 3, 9, 8, 7, 6, 10], "x": range(10)})
    cfg = camoe.config.SplitConfig(method="temporal", valid_fraction=0.2, test_fraction=0.3)
    splits = camoe.split_frame(frame, cfg, "ts")
    assert splits["train"]["ts"].tolist() == [5, 1, 4, 2, 3]  # rows keep their order inside a split
    assert sorted(splits["valid"]["ts"]) == [6, 7]
    assert sorted(splits["test"]["ts"]) == [8, 9, 10]


def test_temporal_split_errors_name_the_column() -> None:
    cfg = camoe.config.SplitConfig()
    with pytest.raises(ValueError, match="'ts' not found"):
        camoe.split_frame(pd.DataFrame({"x": [1, 2]}), cfg, "ts")
    with pytest.raises(ValueError, match="1 missing or unparseable"):
        camoe.split_frame(pd.DataFrame({"ts": ["2024-01-01", "soon", "2024-01-02"]}), cfg, "ts")


def test_rows_sharing_the_cut_timestamp_go_to_the_earlier_split() -> None:
    frame = pd.DataFrame({"ts": [1, 2, 3, 3, 3, 3, 4, 5, 6, 7]})
    parts = camoe.split_frame(frame, SplitConfig(valid_fraction=0.2, test_fraction=0.3), "ts")
    assert sorted(parts["train"]["ts"]) == [1, 2, 3, 3, 3, 3]  # the 5th row in time is a 3: every 3 stays in train
    assert sorted(parts["valid"]["ts"]) == [4] and sorted(parts["test"]["ts"]) == [5, 6, 7]


@pytest.mark.parametrize("kind", ["int", "float", "ns"])
def test_cut_points_are_exact_order_statistics_with_few_histogram_bins(kind: str) -> None:
    rng = np.random.default_rng(0)
    ts = {"int": rng.integers(0, 40, 2000), "float": rng.normal(size=2000),
          "ns": rng.integers(0, 10**18, 2000)}[kind]
    plan = plan_split(FrameSource(pd.DataFrame({"ts": ts})), SplitConfig(valid_fraction=0.1, test_fraction=0.2), "ts",
                      bins=16, max_exact_keys=8)  # forces several narrowing passes
    ordered = np.sort(ts)
    assert plan.cuts == (ordered[1399].item(), ordered[1599].item())
    assert plan.rows == {"train": int((ts <= ordered[1399]).sum()), "valid": int(((ts > ordered[1399]) & (
        ts <= ordered[1599])).sum()), "test": int((ts > ordered[1599]).sum())}


def test_random_split_is_seeded_and_has_the_fractions() -> None:
    frame = pd.DataFrame({"x": np.arange(1000)})
    cfg = SplitConfig(method="random", valid_fraction=0.1, test_fraction=0.2, seed=3)
    a, b = camoe.split_frame(frame, cfg, None), camoe.split_frame(frame, cfg, None)
    assert [len(a[s]) for s in ("train", "valid", "test")] == [700, 100, 200]
    assert a["test"]["x"].tolist() == b["test"]["x"].tolist()
    other = camoe.split_frame(frame, cfg.model_copy(update={"seed": 4}), None)
    assert other["test"]["x"].tolist() != a["test"]["x"].tolist()
