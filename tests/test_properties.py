"""Property-based tests (hypothesis) of the encoder, the CSV loader and the scoring service's request model.

Each property holds for every generated input: the encoder gives the same ids for typed pandas columns and for the
same values sent as Python/JSON values (no training/serving skew), its outputs stay inside the tables and finite, the
loader returns rows or raises ValueError naming the file, and the service answers 200 or 4xx, never 5xx.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import camoe
from camoe.config import SchemaConfig
from camoe.data.encoders import FeatureEncoder
from camoe.data.readers import read_table
from camoe.serving import create_app

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SCHEMA = SchemaConfig(features=[
    {"name": "device", "type": "categorical"},
    {"name": "slot", "type": "categorical", "encoding": "hash", "hash_buckets": 7},
    {"name": "code", "type": "categorical"},
    {"name": "interests", "type": "multi_categorical", "max_len": 3},
    {"name": "bid", "type": "numeric", "missing_indicator": True},
])
TEXT = st.text(alphabet=st.sampled_from(list("ab |,\t0")), max_size=5)
FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-10, 10).map(float))


def _fitted() -> FeatureEncoder:
    train = pd.DataFrame({
        "device": ["a", "b", " a", "ab"], "slot": ["0", "a", "b", ""], "code": [1.0, 2.0, 3.0, np.nan],
        "interests": ["a|b", "b", "", "0|a"], "bid": [0.5, 1.0, np.nan, 2.0],
    })
    return FeatureEncoder(SCHEMA).fit(train)


ENCODER = _fitted()


def _rows(draw: st.DrawFn) -> dict[str, list]:
    n = draw(st.integers(1, 6))
    return {
        "device": draw(st.lists(TEXT, min_size=n, max_size=n)),
        "slot": draw(st.lists(TEXT, min_size=n, max_size=n)),
        "code": draw(st.lists(FLOAT, min_size=n, max_size=n)),
        "interests": draw(st.lists(TEXT, min_size=n, max_size=n)),
        "bid": draw(st.lists(FLOAT, min_size=n, max_size=n)),
    }


@st.composite
def rows(draw: st.DrawFn) -> dict[str, list]:
    return _rows(draw)


def _typed(values: dict[str, list]) -> pd.DataFrame:
    """The rows as a file reader types them: text columns as pandas strings, numbers as float64."""
    return pd.DataFrame({
        "device": pd.Series(values["device"], dtype="str"), "slot": pd.Series(values["slot"], dtype="str"),
        "code": pd.Series(values["code"], dtype="float64"), "interests": pd.Series(values["interests"], dtype="str"),
        "bid": pd.Series(values["bid"], dtype="float64"),
    })


@SETTINGS
@given(rows())
def test_typed_columns_and_python_values_encode_identically(values: dict[str, list]) -> None:
    try:
        typed = ENCODER.transform(_typed(values), "typed")
    except ValueError as err:  # e.g. a huge finite value overflowing float32 after scaling: both forms refuse it
        with pytest.raises(ValueError) as info:
            ENCODER.transform(values, "values")
        assert str(info.value).split(":", 1)[1] == str(err).split(":", 1)[1]
        return
    python = ENCODER.transform(values, "values")
    np.testing.assert_array_equal(typed.cat_ids, python.cat_ids)
    np.testing.assert_array_equal(typed.multi_ids, python.multi_ids)
    np.testing.assert_array_equal(typed.dense, python.dense)
    assert typed.oov_counts == python.oov_counts and typed.missing_counts == python.missing_counts


@SETTINGS
@given(rows())
def test_encoded_ids_stay_in_their_tables_and_dense_is_finite(values: dict[str, list]) -> None:
    try:
        out = ENCODER.transform(values, "values")
    except ValueError as err:
        assert "'bid'" in str(err)  # the only way to fail here: a value overflowing float32, named
        return
    spec = ENCODER.input_spec_
    assert ((out.cat_ids >= 0) & (out.cat_ids < np.array(spec.cat_cardinalities))).all()
    assert ((out.multi_ids >= 0) & (out.multi_ids < spec.multi_cardinalities[0])).all()
    assert np.isfinite(out.dense).all()
    missing_bid = [v is None or not math.isfinite(v) for v in values["bid"]]
    np.testing.assert_array_equal(out.dense[:, 1], np.array(missing_bid, dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab1,"\n\r ')), max_size=60))
def test_loader_returns_rows_or_names_the_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("csv")) / "log.csv"
    path.write_text(text)
    try:
        frame = read_table(path)
    except ValueError as err:
        assert str(path) in str(err)
        return
    assert isinstance(frame, pd.DataFrame)


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
FEATURES = ["user_id", "ad_id", "device", "interests", "bid_price", "dwell_sec", "format", "nope"]
CANDIDATE = st.dictionaries(st.sampled_from(FEATURES), st.one_of(JSON_VALUE, st.sampled_from(["audio", "video"])),
                            max_size=5)
BODY = st.one_of(
    JSON_VALUE,
    st.fixed_dictionaries({"context": st.dictionaries(st.sampled_from(FEATURES), JSON_VALUE, max_size=4),
                           "candidates": st.lists(CANDIDATE, max_size=4)}),
    st.fixed_dictionaries({"candidates": st.lists(CANDIDATE, min_size=1, max_size=4)}),
)


@pytest.fixture(scope="module")
def service() -> TestClient:
    from tests.conftest import B04_CSV, base_config_dict, parse_csv

    cfg = base_config_dict()
    cfg["train"]["epochs"] = 1
    pipe = camoe.CTRPipeline(camoe.load_config(cfg)).fit(parse_csv(B04_CSV))
    return TestClient(create_app(pipe.scorer(), max_body_bytes=20_000, max_candidates=50), raise_server_exceptions=False)


@SETTINGS
@given(BODY)
def test_service_never_answers_5xx(service: TestClient, body: object) -> None:
    response = service.post("/v1/score", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 413, 422), (response.status_code, response.text)
    if response.status_code == 200:
        scores = [s["pctr"] for s in response.json()["scores"]]
        assert all(0.0 < p < 1.0 for p in scores)
