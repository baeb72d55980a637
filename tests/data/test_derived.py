"""Derived features: hour and day of week of the timestamp, per-entity counts of the rows strictly before each
row's timestamp (no row at or after a row's own time ever counts), and the match of a one-valued column against a
multi-valued one (the same on frames, files, requests and the service)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import camoe
from camoe.data.derived import prior_counts, time_parts
from camoe.data.encoders import FeatureEncoder
from camoe.serving import create_app

FEATURES = [
    {"name": "device", "type": "categorical"},
    {"name": "hour_of_day", "type": "categorical", "derive": "hour"},
    {"name": "weekday", "type": "categorical", "derive": "day_of_week"},
    {"name": "user_prior_rows", "type": "numeric", "transform": "log", "derive": "count", "key": "user_id"},
]


def _brute_force(keys: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return np.array([int(((keys == k) & (ts < t)).sum()) if k != "" else 0 for k, t in zip(keys, ts)])


def test_count_features_never_use_a_row_at_or_after_the_rows_own_timestamp() -> None:
    rng = np.random.default_rng(0)
    keys = rng.choice(np.array(["a", "b", "c", ""], dtype=object), 3000)
    ts = rng.integers(0, 40, 3000).astype(np.float64)  # heavy ties: 3,000 rows on 40 timestamps
    counts = prior_counts(keys, ts)
    np.testing.assert_array_equal(counts, _brute_force(keys, ts))
    # with history (the training rows of each key before this batch): the earlier rows are added, never later ones
    seeded = prior_counts(keys, ts + 100, {"a": 7, "b": 2})
    np.testing.assert_array_equal(seeded, counts + np.select([keys == "a", keys == "b"], [7, 2], 0))


def test_time_parts_are_utc_hour_and_weekday() -> None:
    stamps = pd.to_datetime(["2026-01-01 00:30", "2026-01-03 23:59", "2026-01-05 12:00"], utc=True)
    hour, weekday = time_parts(stamps.as_unit("s").asi8.astype(np.float64))
    assert hour.tolist() == [0, 23, 12] and weekday.tolist() == [int(d) for d in stamps.day_of_week]


def test_a_run_with_derived_features_counts_training_rows_among_themselves_and_later_rows_after_them() -> None:
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=6000, seed=1))
    frame["ts"] = frame["ts"] // 600 * 600  # ten-minute stamps: many ties
    cfg = camoe.load_config(camoe.demo_config_path(), {
        "schema": {"features": FEATURES, "clip": "off"},  # counts above the training range are kept, not clipped
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 1}})
    splits = camoe.split_frame(frame, cfg.data.split, "ts")
    train, valid = splits["train"], splits["valid"]
    pipe = camoe.CTRPipeline(cfg).fit(train, valid)
    enc = pipe.encoder_
    users = lambda f: f["user_id"].astype(str).to_numpy(dtype=object)  # noqa: E731
    column = list(enc.input_spec_.dense_features).index("user_prior_rows")

    def counts(rows: pd.DataFrame, history: bool) -> np.ndarray:
        dense = enc.transform(rows, history=history).dense[:, column].astype(np.float64)
        raw = np.expm1(dense * enc.std_["user_prior_rows"] + enc.mean_["user_prior_rows"])  # undo log + scaling
        return np.round(raw).astype(int)

    np.testing.assert_array_equal(counts(train, False), _brute_force(users(train), train["ts"].to_numpy()))
    both = pd.concat([train, valid], ignore_index=True)  # valid rows: every training row is earlier
    expected = _brute_force(users(both), both["ts"].to_numpy())[len(train):]
    np.testing.assert_array_equal(counts(valid, True), expected)
    hours = enc.transform(valid).cat_ids[:, list(enc.input_spec_.cat_features).index("hour_of_day")]
    assert set(hours) <= set(range(2, 26))  # ids of the 24 hours seen in training (0 = missing, 1 = unseen)
    request = {"format": ["audio_music"], "device": ["ios"], "user_id": [train["user_id"].iloc[-1]]}  # no ts: now
    assert np.isfinite(pipe.predict_proba(request)).all()


def test_count_features_refuse_a_streamed_training_split(tmp_path) -> None:
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=3000, seed=2))
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_parquet(tmp_path / f"p{i}.parquet", index=False)
    cfg = camoe.load_config(camoe.demo_config_path(), {
        "schema": {"features": FEATURES}, "data": {"path": str(tmp_path), "streaming": {"enabled": True}},
        "train": {"epochs": 1}})
    with pytest.raises(ValueError, match=r"derive: count.*data.streaming.enabled: false"):
        camoe.train_and_evaluate(cfg, output_dir=tmp_path / "m")


def test_derived_feature_settings_are_checked() -> None:
    with pytest.raises(camoe.ConfigError, match="derive: count needs type: numeric and key"):
        camoe.load_config({"schema": {"features": [{"name": "n", "type": "numeric", "derive": "count"}]}})
    with pytest.raises(camoe.ConfigError, match="set schema.timestamp"):
        camoe.load_config({"schema": {"timestamp": None, "features": [
            {"name": "h", "type": "categorical", "derive": "hour"}]}})
    assert FeatureEncoder  # the encoder computes them (camoe.data.encoders)


MATCH = [
    {"name": "device", "type": "categorical"},
    {"name": "interest_match", "type": "categorical", "derive": "match", "key": "ad_category", "within": "interests"},
]


def test_a_match_feature_is_one_when_the_key_is_among_the_rows_values_on_frames_csv_and_requests(tmp_path) -> None:
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=4000, seed=3))
    # key and multi-valued column are read for the match only (neither is a feature of its own here)
    cfg = camoe.load_config(camoe.demo_config_path(), {
        "schema": {"features": MATCH, "timestamp": None}, "data": {"split": {"method": "random"}},
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 1}})
    pipe = camoe.CTRPipeline(cfg).fit(frame.iloc[:3000], frame.iloc[3000:])
    enc = pipe.encoder_
    j = list(enc.input_spec_.cat_features).index("interest_match")
    vocab = {v: i + 2 for i, v in enumerate(enc.vocab_["interest_match"])}  # id = position + 2
    expected = [c in s.split("|") for c, s in zip(frame["ad_category"], frame["interests"])]
    ids = enc.transform(frame).cat_ids[:, j]
    assert ids.tolist() == [vocab["1"] if e else vocab["0"] for e in expected] and 0 < np.mean(expected) < 1
    as_request = {c: frame[c].head(300).tolist() for c in frame.columns}  # text cells: the request's memoised path
    assert (enc.transform(as_request).cat_ids[:, j] == ids[:300]).all()
    # a CSV and a request ({column: list}, values with spaces, list cells) give the same ids
    frame.to_csv(tmp_path / "rows.csv", index=False)
    assert (enc.transform(camoe.read_table(tmp_path / "rows.csv")).cat_ids[:, j] == ids).all()
    request = {"format": ["audio_music"] * 4, "device": ["ios"] * 4,
               "ad_category": [" rock", "jazz", None, "pop"], "interests": ["rock|pop", ["pop", "jazz"], "jazz", ""]}
    assert enc.transform(request).cat_ids[:, j].tolist() == [vocab["1"], vocab["1"], 0, vocab["0"]]  # 0 = missing
    expected_pctr = pipe.predict_proba(request)
    assert np.isfinite(expected_pctr).all()
    # the service takes the columns a derived feature reads (neither is a feature here), not the derived name
    client = TestClient(create_app(pipe.scorer("torch")))
    candidates = [{k: v[i] for k, v in request.items()} for i in range(4)]
    scores = client.post("/v1/score", json={"candidates": candidates}).json()["scores"]
    np.testing.assert_allclose([c["pctr"] for c in scores], expected_pctr, rtol=1e-6)
    refused = client.post("/v1/score", json={"candidates": [{**candidates[0], "interest_match": "1"}]})
    assert refused.status_code == 422 and "interest_match" in refused.json()["detail"]
    with pytest.raises(ValueError, match=r"multi-valued feature 'interests', row 1: got a dict"):
        pipe.predict_proba({**request, "interests": ["rock", {"a": 1}, "jazz", ""]})
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['interests'\]"):
        pipe.predict_proba({k: v for k, v in request.items() if k != "interests"})


def test_match_feature_settings_are_checked() -> None:
    for bad in ({"type": "numeric", "key": "a", "within": "b"}, {"type": "categorical", "key": "a"},
                {"type": "categorical", "within": "b"}):
        with pytest.raises(camoe.ConfigError, match="derive: match needs type: categorical"):
            camoe.load_config({"schema": {"features": [{"name": "m", "derive": "match", **bad}]}})
    with pytest.raises(camoe.ConfigError, match="within is read by derive: match only"):
        camoe.load_config({"schema": {"features": [{"name": "m", "type": "categorical", "within": "b"}]}})
    # no timestamp needed: a match is computed from the row alone
    assert camoe.load_config({"schema": {"timestamp": None, "features": MATCH}}).schema_.features[1].derive == "match"


@pytest.mark.parametrize("bad, message", [
    ({"key": "interests", "within": "interests"}, "key and within are both 'interests'"),
    ({"key": "interests", "within": "genres"}, "key 'interests' is a multi_categorical feature"),
    ({"key": "ad_category", "within": "interests", "separator": ","}, "give both the same separator"),
    ({"key": "click", "within": "interests"}, "the label or true_prob column"),
    ({"key": "hour_of_day", "within": "interests"}, "'hour_of_day' is itself a derived feature"),
])
def test_a_match_feature_that_cannot_mean_a_user_ad_match_is_refused(bad: dict, message: str) -> None:
    features = [{"name": "interests", "type": "multi_categorical"},
                {"name": "hour_of_day", "type": "categorical", "derive": "hour"},
                {"name": "m", "type": "categorical", "derive": "match", **bad}]
    with pytest.raises(camoe.ConfigError, match=message):
        camoe.load_config({"schema": {"features": features}})


def test_a_log_whose_multi_valued_column_is_a_parquet_list_trains_in_memory_and_streamed_alike(tmp_path) -> None:
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=6000, seed=0))
    frame["interests"] = frame["interests"].map(lambda s: [v for v in s.split("|") if v])  # list<string> in Parquet
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    metrics = []
    for stream in (False, True):
        cfg = camoe.load_config(camoe.demo_config_path(), {
            "data": {"path": str(tmp_path / "log.parquet"), "streaming": {"enabled": stream}},
            "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
            "train": {"epochs": 1}})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few clicks per task at this size
            metrics.append(camoe.train_and_evaluate(cfg, output_dir=tmp_path / f"m{stream}")[1]["test"]["macro"])
    assert metrics[0]["auc_pr"] == pytest.approx(metrics[1]["auc_pr"], rel=1e-6)
