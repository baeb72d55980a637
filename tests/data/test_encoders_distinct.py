"""Typed columns (strings, categories, integers, floats, booleans) of more than a scoring request's rows are encoded
once per distinct value and taken by row: the ids, missing masks and counts equal the value-by-value path's."""

from __future__ import annotations

import numpy as np
import pandas as pd

from camoe.config import SchemaConfig
from camoe.data.encoders import FeatureEncoder

SCHEMA = SchemaConfig(
    label="click", format="format",
    features=[
        {"name": "device", "type": "categorical"},
        {"name": "age", "type": "categorical"},
        {"name": "score", "type": "categorical"},
        {"name": "flag", "type": "categorical"},
        {"name": "cat", "type": "categorical"},
        {"name": "hashed", "type": "categorical", "encoding": "hash", "hash_buckets": 97},
        {"name": "interests", "type": "multi_categorical", "separator": "|", "max_len": 3},
        {"name": "x", "type": "numeric"},
    ],
)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    text = np.array([" ios ", "ios", "android", "True", "false", "3.0", "", None, "web", "Tv"], dtype=object)
    multi = np.array(["pop|rock", "pop||rock", " jazz ", "", None, "a|b|c|d|e", "news", "pop"], dtype=object)
    score = rng.choice([1.0, 2.5, np.nan, 3.0, -0.0], n)
    return pd.DataFrame({
        "device": pd.array(text[rng.integers(0, len(text), n)], dtype="str"),
        "age": rng.integers(0, 6, n),
        "score": score,
        "flag": pd.array(rng.choice([True, False], n), dtype="boolean"),
        "cat": pd.Categorical(text[rng.integers(0, len(text), n)]),
        "hashed": pd.array(text[rng.integers(0, len(text), n)], dtype="str"),
        "interests": pd.array(multi[rng.integers(0, len(multi), n)], dtype="str"),
        "x": rng.normal(size=n),
        "format": "f",
        "click": rng.integers(0, 2, n),
    })


def _as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """The same values as Python objects: the value-by-value path."""
    out = frame.copy()
    for col in ("device", "age", "score", "flag", "cat", "hashed", "interests"):
        values = frame[col].astype(object).to_numpy()
        out[col] = pd.Series([None if v is pd.NA else v for v in values], dtype=object)
    return out


def test_distinct_value_encoding_equals_value_by_value_encoding() -> None:
    enc = FeatureEncoder(SCHEMA).fit(_frame(3000, 0))
    frame = _frame(20_000, 1)  # > 4096 rows: the distinct-value path
    fast, slow = enc.transform(frame, "typed"), enc.transform(_as_objects(frame), "objects")
    np.testing.assert_array_equal(fast.cat_ids, slow.cat_ids)
    np.testing.assert_array_equal(fast.multi_ids, slow.multi_ids)
    np.testing.assert_array_equal(fast.dense, slow.dense)
    assert fast.quality.to_dict() == slow.quality.to_dict()
    assert fast.missing_rows.keys() == slow.missing_rows.keys()
    for name in fast.missing_rows:
        np.testing.assert_array_equal(fast.missing_rows[name], slow.missing_rows[name])
    # the values really vary: several ids per feature, missing rows and OOV present
    assert all(len(np.unique(fast.cat_ids[:, j])) >= 2 for j in range(fast.cat_ids.shape[1]))
    assert fast.quality.to_dict()["missing"]["device"] > 0
