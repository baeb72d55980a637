"""Train / validation / test splits: temporal by timestamp (default) or random (only when asked)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from camoe.config import SplitConfig

__all__ = ["split_frame", "timestamp_values"]


def timestamp_values(frame: pd.DataFrame, column: str, source: str = "data") -> np.ndarray:
    """Timestamps as sortable int64 (numbers as they are; date strings -> ns since epoch, UTC).

    Raises:
        ValueError: the column is missing or has missing / unparseable values (with counts and examples).
    """
    if column not in frame.columns:
        raise ValueError(
            f"{source}: timestamp column '{column}' not found (schema.timestamp); columns: {list(frame.columns)}. "
            f"Set schema.timestamp: null and split.method: random for logs without time."
        )
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
    else:
        # one format inferred for the whole column (no per-value guessing of day/month order)
        parsed = pd.to_datetime(series, utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        values = np.where(bad, 0, parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64))
    if bad.any():
        examples = series[bad].astype(str).unique()[:5].tolist()
        raise ValueError(
            f"{source}: timestamp column '{column}' has {int(bad.sum())} missing or unparseable values, e.g. {examples}; "
            f"use epoch numbers or one date format (ISO 8601) for every row"
        )
    return np.asarray(values)


def split_frame(
    frame: pd.DataFrame, config: SplitConfig, timestamp: str | None, source: str = "data"
) -> dict[str, pd.DataFrame]:
    """Split rows into ``train`` / ``valid`` / ``test``.

    Temporal: rows ordered by timestamp (stable), the last ``test_fraction`` is test, the ``valid_fraction`` before
    it is validation. Random: a seeded permutation.

    Raises:
        ValueError: temporal split without a timestamp column, or too few rows for the fractions.
    """
    n = len(frame)
    if config.method == "temporal":
        if timestamp is None:
            raise ValueError(f"{source}: temporal split needs schema.timestamp; set split.method: random to split randomly")
        order = np.argsort(timestamp_values(frame, timestamp, source), kind="stable")
    else:
        order = np.random.default_rng(config.seed).permutation(n)
    n_test = int(round(n * config.test_fraction))
    n_valid = int(round(n * config.valid_fraction))
    n_train = n - n_test - n_valid
    if n_train < 1:
        raise ValueError(f"{source}: {n} rows leave no training rows with the split fractions")
    return {
        "train": frame.iloc[order[:n_train]].reset_index(drop=True),
        "valid": frame.iloc[order[n_train : n_train + n_valid]].reset_index(drop=True),
        "test": frame.iloc[order[n_train + n_valid :]].reset_index(drop=True),
    }
