"""Feature encoding: OOV (B09), missing values (B12), empty lists (B15), config keys (B13), identity ids (B11),
stable hashing (B28), dense dtypes (B17), state round trip and schema changes (B10, B30)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

import camoe
from camoe.config import SchemaConfig
from camoe.data.encoders import FeatureEncoder, stable_hash
from camoe.schema import MISSING_ID, NUM_RESERVED, OOV_ID

HEADER = "ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click"

B09_SCORE = f"""{HEADER}
1700000200,u999,a999,audio,smart_tv,podcasts,0.5,5,0
"""

B12_ROWS = f"""{HEADER}
1700000000,u1,a1,audio,,music,0.5,,1
1700000001,u2,a2,audio,ios,news,,3,0
1700000002,,a3,video,web,,0.3,4,0
"""

B15_ROWS = f"""{HEADER}
1700000000,u1,a1,audio,ios,,0.5,10,1
1700000001,u2,a2,audio,ios,music|news,0.5,10,0
"""

B11_ROWS = f"""{HEADER}
1700000000,3,10,display,1,2,0.5,10,1
1700000001,4,-1,display,1,2,0.5,10,0
"""


def _fitted(make_config, frame: pd.DataFrame, **updates) -> FeatureEncoder:
    return FeatureEncoder(make_config(**updates).schema).fit(frame)


def _col(enc: FeatureEncoder, name: str) -> int:
    assert enc.input_spec_ is not None
    return enc.input_spec_.dense_features.index(name)


def _cat(enc: FeatureEncoder, name: str) -> int:
    assert enc.input_spec_ is not None
    return enc.input_spec_.cat_features.index(name)


# ----------------------------------------------------------------------------- B09
def test_b09_unseen_values_map_to_oov_and_are_counted(make_config, b04_rows, rows) -> None:
    enc = _fitted(make_config, b04_rows)
    out = enc.transform(rows(B09_SCORE), "score")
    assert out.cat_ids.tolist() == [[OOV_ID, OOV_ID, OOV_ID]]  # user_id, ad_id, device
    assert out.multi_ids[0, 0].tolist()[0] == OOV_ID
    assert out.oov_counts == {"user_id": 1, "ad_id": 1, "device": 1, "interests": 1}


def test_b09_pipeline_scores_unseen_row_with_finite_pctr_and_reports_oov(make_config, b04_rows, rows) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    score = rows(B09_SCORE)
    pctr = pipe.predict_proba(score)
    assert pctr.shape == (1,)
    assert np.isfinite(pctr).all() and 0 < pctr[0] < 1
    assert pipe.scorer().score(score).quality.out_of_vocabulary == {"user_id": 1, "ad_id": 1, "device": 1,
                                                                    "interests": 1}
    metrics = pipe.evaluate(pd.concat([b04_rows, score], ignore_index=True))
    assert metrics["oov"] == {"user_id": 1, "ad_id": 1, "device": 1, "interests": 1}


def test_b09_oov_mapping_uses_no_deprecated_pandas_behaviour(make_config, b04_rows, rows) -> None:
    """Mapping unseen values must not rely on behaviour pandas deprecates (it would raise in pandas 4)."""
    enc = _fitted(make_config, b04_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = enc.transform(rows(B09_SCORE), "score")
    assert out.oov_counts["device"] == 1


def test_vocab_ids_ordered_by_frequency_after_reserved_ids(make_config) -> None:
    frame = pd.DataFrame({"user_id": ["b", "a", "b", "c", "b", "a"], "ad_id": ["x"] * 6, "device": ["ios"] * 6,
                          "interests": ["music"] * 6, "bid_price": [1.0] * 6, "dwell_sec": [1.0] * 6})
    enc = _fitted(make_config, frame)
    assert enc.vocab_["user_id"] == ["b", "a", "c"]
    ids = enc.transform(pd.DataFrame({**{k: frame[k][:3] for k in frame}, "user_id": ["c", "b", "zz"]})).cat_ids
    assert ids[:, _cat(enc, "user_id")].tolist() == [NUM_RESERVED + 2, NUM_RESERVED, OOV_ID]


def test_min_count_sends_rare_values_to_oov(config_dict) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][0]["min_count"] = 2  # user_id
    enc = FeatureEncoder(camoe.load_config(cfg).schema)
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "ad_id": ["x"] * 3, "device": ["ios"] * 3,
                          "interests": ["m"] * 3, "bid_price": [1.0, 2.0, 3.0], "dwell_sec": [1.0] * 3})
    out = enc.fit(frame).transform(frame)
    assert enc.vocab_["user_id"] == ["a"]
    assert out.cat_ids[:, 0].tolist() == [NUM_RESERVED, NUM_RESERVED, OOV_ID]
    assert out.oov_counts["user_id"] == 1


# ----------------------------------------------------------------------------- B12
def test_b12_missing_categorical_is_id_zero_distinct_from_oov(make_config, rows) -> None:
    frame = rows(B12_ROWS)
    enc = _fitted(make_config, frame)
    out = enc.transform(frame)
    assert out.cat_ids[0, _cat(enc, "device")] == MISSING_ID
    assert out.cat_ids[2, _cat(enc, "user_id")] == MISSING_ID
    assert MISSING_ID != OOV_ID
    unseen = enc.transform(frame.assign(device=["tv", None, " "]))
    assert unseen.cat_ids[:, _cat(enc, "device")].tolist() == [OOV_ID, MISSING_ID, MISSING_ID]
    assert unseen.oov_counts["device"] == 1
    assert unseen.missing_counts["device"] == 2
    assert "" not in enc.vocab_["device"]


def test_b12_missing_numeric_imputed_with_training_mean_and_nothing_nan(make_config, rows) -> None:
    frame = rows(B12_ROWS)
    enc = _fitted(make_config, frame)
    out = enc.transform(frame)
    assert np.isfinite(out.dense).all()
    assert out.dense.dtype == np.float32
    # bid_price: train values 0.5 and 0.3 -> mean 0.4, std 0.1; the missing row gets the mean -> 0 after scaling
    bid = out.dense[:, _col(enc, "bid_price")]
    assert bid.tolist() == pytest.approx([1.0, 0.0, -1.0], abs=1e-5)
    assert out.dense[0, _col(enc, "dwell_sec")] == pytest.approx(0.0, abs=1e-6)
    assert out.missing_counts["bid_price"] == 1 and out.missing_counts["dwell_sec"] == 1
    assert out.multi_ids[2].tolist() == [[0] * 8]  # empty interests -> all padding


def test_b12_fill_value_and_missing_indicator(config_dict, rows) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][4].update({"fill_value": 1.0, "missing_indicator": True})  # bid_price
    enc = FeatureEncoder(camoe.load_config(cfg).schema).fit(rows(B12_ROWS))
    assert enc.input_spec_ is not None
    assert enc.input_spec_.dense_features == ("bid_price", "bid_price_missing", "dwell_sec")
    out = enc.transform(rows(B12_ROWS))
    assert out.dense[:, 0].tolist() == pytest.approx([1.0, 6.0, -1.0], abs=1e-5)  # (1.0 - 0.4) / 0.1 = 6
    assert out.dense[:, 1].tolist() == [0.0, 1.0, 0.0]


def test_b12_pipeline_trains_on_missing_cells_with_finite_predictions(make_config, rows) -> None:
    frame = rows(B12_ROWS)
    pipe = camoe.CTRPipeline(make_config(train={"batch_size": 2})).fit(frame)
    pctr = pipe.predict_proba(frame)
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    assert all(e["total"] is not None and np.isfinite(e["total"]) for e in pipe.train_result_.history)


def test_missing_error_policy_names_feature_and_count(config_dict, rows) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][2]["missing"] = "error"  # device
    enc = FeatureEncoder(camoe.load_config(cfg).schema)
    with pytest.raises(ValueError, match=r"'device' has 1 missing"):
        enc.fit(rows(B12_ROWS), "train.csv")


# ----------------------------------------------------------------------------- B15
def test_b15_empty_interests_encode_to_padding_and_score_finite(make_config, rows) -> None:
    frame = rows(B15_ROWS)
    enc = _fitted(make_config, frame)
    out = enc.transform(frame)
    assert out.multi_ids[0, 0].tolist() == [0] * 8
    assert sorted(out.multi_ids[1, 0, :2].tolist()) == [NUM_RESERVED, NUM_RESERVED + 1]
    assert out.missing_counts["interests"] == 1
    assert out.oov_counts["interests"] == 0
    pipe = camoe.CTRPipeline(make_config(train={"batch_size": 2})).fit(frame)
    assert all(np.isfinite(e["total"]) for e in pipe.train_result_.history)
    assert np.isfinite(pipe.predict_proba(frame)).all()


def test_multi_valued_max_len_and_separator(config_dict) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][3].update({"separator": ";", "max_len": 2})
    enc = FeatureEncoder(camoe.load_config(cfg).schema)
    frame = pd.DataFrame({"user_id": ["u"] * 2, "ad_id": ["a"] * 2, "device": ["d"] * 2,
                          "interests": ["x; y ;z", ";;"], "bid_price": [1.0, 2.0], "dwell_sec": [1.0, 1.0]})
    out = enc.fit(frame).transform(frame)
    assert out.multi_ids.shape == (2, 1, 2)
    assert enc.vocab_["interests"] == ["x", "y"]  # only the kept (first max_len) values enter the vocabulary
    assert out.multi_ids[:, 0].tolist() == [[2, 3], [0, 0]]


# ----------------------------------------------------------------------------- B13
def test_b13_unknown_feature_key_rejected_with_accepted_keys(config_dict) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][4]["na_value"] = 0.0  # bid_price; the supported key is fill_value
    with pytest.raises(camoe.ConfigError) as info:
        camoe.load_config(cfg)
    msg = str(info.value)
    assert "na_value" in msg
    assert "fill_value" in msg
    assert "accepted keys" in msg
    assert isinstance(info.value, ValueError)


def test_b13_unknown_key_in_yaml_file_names_file_and_key(tmp_path, config_dict) -> None:
    cfg = config_dict()
    cfg["train"]["learning_rte"] = 0.1
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(camoe.ConfigError, match="learning_rte") as info:
        camoe.load_config(path)
    assert str(path) in str(info.value)
    assert "learning_rate" in str(info.value)


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"model": {"embedding_dim": 0}}, "embedding_dim"),
        ({"grouping": {"strategy": "by_colour"}}, "strategy"),
        ({"na_value": 1}, "na_value"),
    ],
)
def test_invalid_config_values_raise_config_error(config_dict, patch, needle) -> None:
    with pytest.raises(camoe.ConfigError, match=needle):
        camoe.load_config(config_dict(**patch))


# ----------------------------------------------------------------------------- B11
def _identity_config(config_dict, out_of_range: str):
    cfg = config_dict()
    cfg["schema"]["features"][1] = {"name": "ad_id", "type": "categorical", "encoding": "identity", "num_ids": 10,
                                    "out_of_range": out_of_range}
    return camoe.load_config(cfg)


def _b11_train(rows) -> pd.DataFrame:
    frame = rows(B11_ROWS)
    return frame.assign(ad_id=[3, 9])


def test_b11_identity_out_of_range_ids_raise_naming_feature_id_and_size(config_dict, rows) -> None:
    enc = FeatureEncoder(_identity_config(config_dict, "error").schema).fit(_b11_train(rows))
    good = enc.transform(_b11_train(rows))
    assert good.cat_ids[:, _cat(enc, "ad_id")].tolist() == [3 + NUM_RESERVED, 9 + NUM_RESERVED]
    with pytest.raises(ValueError) as info:
        enc.transform(rows(B11_ROWS), "b11.csv")
    msg = str(info.value)
    assert "ad_id" in msg and "-1" in msg and "10" in msg
    assert "table size 10" in msg
    assert "b11.csv" in msg


def test_b11_identity_lenient_mode_maps_to_oov_and_counts(config_dict, rows) -> None:
    cfg = _identity_config(config_dict, "oov")
    enc = FeatureEncoder(cfg.schema).fit(_b11_train(rows))
    assert enc.input_spec_ is not None
    assert enc.input_spec_.cat_cardinalities[_cat(enc, "ad_id")] == 10 + NUM_RESERVED
    mixed = pd.concat([rows(B11_ROWS), _b11_train(rows)], ignore_index=True)  # ids 10, -1, 3, 9
    out = enc.transform(mixed)
    assert out.cat_ids[:, _cat(enc, "ad_id")].tolist() == [OOV_ID, OOV_ID, 3 + NUM_RESERVED, 9 + NUM_RESERVED]
    assert out.oov_counts["ad_id"] == 2
    pipe = camoe.CTRPipeline(cfg).fit(_b11_train(rows))
    assert np.isfinite(pipe.predict_proba(rows(B11_ROWS))).all()


def test_b11_identity_rejects_non_integer_ids(config_dict, rows) -> None:
    enc = FeatureEncoder(_identity_config(config_dict, "oov").schema).fit(_b11_train(rows))
    with pytest.raises(ValueError, match="ad_id"):
        enc.transform(_b11_train(rows).assign(ad_id=[2.5, 3.0]))


def test_identity_ids_given_as_text_encode_like_integers(config_dict, rows) -> None:
    enc = FeatureEncoder(_identity_config(config_dict, "error").schema).fit(_b11_train(rows))
    out = enc.transform(_b11_train(rows).assign(ad_id=["3", "9"]))
    assert out.cat_ids[:, _cat(enc, "ad_id")].tolist() == [3 + NUM_RESERVED, 9 + NUM_RESERVED]


# ----------------------------------------------------------------------------- B28
_HASH_SCRIPT = (
    "import json, numpy as np\n"
    "from camoe.data.encoders import stable_hash\n"
    "vals = np.array(['u_abc', 'u1', 'ios', '12345'], dtype=object)\n"
    "print(json.dumps([stable_hash(vals, 4).tolist(), stable_hash(vals, 1000003).tolist()]))\n"
)


def test_b28_stable_hash_identical_across_processes_and_hash_seeds() -> None:
    results = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], env=env, capture_output=True, text=True, check=True,
                              timeout=120)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    vals = np.array(["u_abc", "u1", "ios", "12345"], dtype=object)
    assert results[0] == [stable_hash(vals, 4).tolist(), stable_hash(vals, 1000003).tolist()]
    small, big = np.array(results[0][0]), np.array(results[0][1])
    assert ((small >= 0) & (small < 4)).all()
    assert ((big >= 0) & (big < 1000003)).all()


def test_hash_encoding_ids_in_range_and_no_vocabulary(config_dict, b04_rows) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][0] = {"name": "user_id", "type": "categorical", "encoding": "hash", "hash_buckets": 4}
    enc = FeatureEncoder(camoe.load_config(cfg).schema).fit(b04_rows)
    assert "user_id" not in enc.vocab_
    assert enc.input_spec_.cat_cardinalities[0] == 4 + NUM_RESERVED
    ids = enc.transform(b04_rows.assign(user_id=[f"new{i}" for i in range(8)])).cat_ids[:, 0]
    assert ((ids >= NUM_RESERVED) & (ids < 4 + NUM_RESERVED)).all()
    expected = stable_hash(np.array([f"new{i}" for i in range(8)], dtype=object), 4) + NUM_RESERVED
    assert ids.tolist() == expected.tolist()


# ----------------------------------------------------------------------------- B17
def _exact_frame(b04_rows: pd.DataFrame) -> pd.DataFrame:
    """B04 rows with bid prices exactly representable in float16 (so every dtype holds the same numbers)."""
    return b04_rows.assign(bid_price=[0.5, 0.375, 0.625, 0.875, 0.75, 0.6875, 0.125, 0.25])


def test_b17_float16_and_int32_parquet_columns_encode_like_float32(tmp_path, make_config, b04_rows) -> None:
    base = _exact_frame(b04_rows)
    f32 = base.assign(bid_price=base["bid_price"].astype("float32"), dwell_sec=base["dwell_sec"].astype("float32"))
    odd = base.assign(bid_price=base["bid_price"].astype("float16"), dwell_sec=base["dwell_sec"].astype("int32"))
    f32.to_parquet(tmp_path / "f32.parquet", index=False)
    odd.to_parquet(tmp_path / "odd.parquet", index=False)
    f32_read = camoe.read_table(tmp_path / "f32.parquet")
    odd_read = camoe.read_table(tmp_path / "odd.parquet")
    assert str(odd_read["bid_price"].dtype) == "float16" and str(odd_read["dwell_sec"].dtype) == "int32"
    enc = _fitted(make_config, f32_read)
    a, b = enc.transform(f32_read), enc.transform(odd_read)
    assert b.dense.dtype == np.float32
    assert np.array_equal(a.dense, b.dense)
    assert np.array_equal(a.cat_ids, b.cat_ids) and np.array_equal(a.multi_ids, b.multi_ids)
    enc_odd = _fitted(make_config, odd_read)
    assert enc_odd.mean_ == enc.mean_ and enc_odd.std_ == enc.std_


def test_b17_float16_predictions_match_float32_within_tolerance(tmp_path, make_config, b04_rows) -> None:
    f32 = b04_rows.assign(bid_price=b04_rows["bid_price"].astype("float32"))
    odd = b04_rows.assign(bid_price=b04_rows["bid_price"].astype("float16"), dwell_sec=b04_rows["dwell_sec"].astype("int32"))
    odd.to_parquet(tmp_path / "odd.parquet", index=False)
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(f32)
    p32 = pipe.predict_proba(f32)
    p16 = pipe.predict_proba(camoe.read_table(tmp_path / "odd.parquet"))
    assert np.abs(p32 - p16).max() < 1e-3


def test_b17_integer_id_columns_encode_like_text(make_config, b04_rows) -> None:
    as_int = b04_rows.assign(user_id=np.arange(8, dtype=np.int64) + 100)
    as_float_gaps = b04_rows.assign(user_id=[100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, np.nan])
    as_text = b04_rows.assign(user_id=[str(i + 100) for i in range(8)])
    enc = _fitted(make_config, as_text)
    ids_int = enc.transform(as_int).cat_ids[:, 0]
    assert ids_int.tolist() == enc.transform(as_text).cat_ids[:, 0].tolist()
    assert (ids_int >= NUM_RESERVED).all()
    ids_gap = enc.transform(as_float_gaps).cat_ids[:, 0]
    assert ids_gap[:7].tolist() == ids_int[:7].tolist() and ids_gap[7] == MISSING_ID


# ----------------------------------------------------------------------------- state and schema
def test_state_round_trip_through_json_encodes_identically(make_config, b04_rows, rows) -> None:
    cfg = make_config()
    enc = FeatureEncoder(cfg.schema).fit(b04_rows)
    state = json.loads(json.dumps(enc.state_dict()))
    back = FeatureEncoder.from_state(cfg.schema, state)
    for frame in (b04_rows, rows(B09_SCORE), rows(B12_ROWS)):
        a, b = enc.transform(frame), back.transform(frame)
        assert np.array_equal(a.cat_ids, b.cat_ids)
        assert np.array_equal(a.multi_ids, b.multi_ids)
        assert np.array_equal(a.dense, b.dense)
        assert a.oov_counts == b.oov_counts
    assert back.input_spec_ == enc.input_spec_


def test_b30_state_from_other_feature_config_names_changed_feature(config_dict, b04_rows) -> None:
    enc = FeatureEncoder(camoe.load_config(config_dict()).schema).fit(b04_rows)
    changed = config_dict()
    changed["schema"]["features"][2]["min_count"] = 2  # device
    with pytest.raises(ValueError, match="device"):
        FeatureEncoder.from_state(camoe.load_config(changed).schema, enc.state_dict())


def test_b10_state_with_inconsistent_table_sizes_is_refused(make_config, b04_rows) -> None:
    cfg = make_config()
    state = FeatureEncoder(cfg.schema).fit(b04_rows).state_dict()
    state["input_spec"]["cat_cardinalities"] = [c + 1 for c in state["input_spec"]["cat_cardinalities"]]
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureEncoder.from_state(cfg.schema, state)


def test_b10_model_tables_sized_from_encoder(make_config, b04_rows) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    spec = pipe.encoder_.input_spec_
    assert pipe.model_.embedding.spec == spec
    assert spec.cat_cardinalities == (8 + NUM_RESERVED, 8 + NUM_RESERVED, 1 + NUM_RESERVED)
    assert pipe.model_.embedding.cat_table.num_embeddings == sum(spec.cat_cardinalities)


def test_numeric_column_with_text_raises_naming_column(make_config, b04_rows) -> None:
    bad = b04_rows.assign(bid_price=["0.5", "abc", "0.6", "0.9", "0.8", "0.7", "0.1", "0.2"])
    with pytest.raises(ValueError, match=r"bid_price.*abc"):
        FeatureEncoder(make_config().schema).fit(bad, "train.csv")
    enc = _fitted(make_config, b04_rows)
    with pytest.raises(ValueError, match="bid_price") as info:
        enc.transform(bad, "score.csv")
    assert "score.csv" in str(info.value)


def test_missing_feature_column_named(make_config, b04_rows) -> None:
    with pytest.raises(ValueError, match="dwell_sec"):
        FeatureEncoder(make_config().schema).fit(b04_rows.drop(columns=["dwell_sec"]))


def test_transform_before_fit_raises(make_config, b04_rows) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        FeatureEncoder(make_config().schema).transform(b04_rows)


def test_numeric_text_nan_is_missing_and_inf_is_refused_naming_the_feature(make_config, b04_rows) -> None:
    enc = _fitted(make_config, b04_rows)
    frame = b04_rows.assign(bid_price=["nan", "NA", "", "0.5", "0.4", "0.6", "0.9", "0.8"])
    out = enc.transform(frame)
    assert np.isfinite(out.dense).all()
    assert out.missing_counts["bid_price"] == 3
    for bad in ("inf", "-Infinity", "1e400"):
        with pytest.raises(ValueError, match=r"score\.csv: numeric column 'bid_price' holds infinite values"):
            enc.transform(frame.assign(bid_price=[bad] + frame["bid_price"].tolist()[1:]), "score.csv")


def test_schema_config_rejects_duplicate_and_label_features() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SchemaConfig(features=[{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}])
    with pytest.raises(ValueError, match="label"):
        SchemaConfig(features=[{"name": "click", "type": "numeric"}])


def test_integers_and_booleans_follow_one_rule_in_files_and_json(config_dict) -> None:
    """An integer feature fitted from CSV (hour 0..3, app_in_focus 0/1) scores the same when JSON sends 2, 2.0,
    "2.0" or true / "TRUE" for 1: one coercion rule, no silent out-of-vocabulary."""
    cfg = camoe.load_config({"schema": {"features": [{"name": "hour", "type": "categorical"},
                                                     {"name": "focus", "type": "categorical"}]}})
    enc = FeatureEncoder(cfg.schema).fit(pd.DataFrame({"hour": [0, 1, 2, 3], "focus": [0, 1, 1, 0]}))
    expected = enc.transform(pd.DataFrame({"hour": [2, 2, 2, 1], "focus": [1, 1, 1, 0]})).cat_ids
    sent = {"hour": [2, 2.0, "2.0", True], "focus": [True, "TRUE", " true ", False]}
    got = enc.transform(sent)
    np.testing.assert_array_equal(got.cat_ids, expected)
    assert got.oov_counts == {"hour": 0, "focus": 0}
    from_text = enc.transform(pd.DataFrame({"hour": ["2", "2.0", "2.00", "1"], "focus": ["1", "true", "1", "false"]}))
    np.testing.assert_array_equal(from_text.cat_ids, expected)


def test_multi_valued_cells_encode_alike_from_a_frame_a_request_and_a_repeated_cell() -> None:
    from camoe.data.columns import multi_values

    schema = SchemaConfig(features=[{"name": "genres", "type": "multi_categorical", "separator": "|", "max_len": 3}])
    cells = ["a||b", " a|b ", "", "3.0|x", "a|b|c|d", "solo", "a||b", None, "3|x"]
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"genres": cells * 3}), "train")
    from_frame = encoder.transform(pd.DataFrame({"genres": cells}), "test").multi_ids
    from_request = encoder.transform({"genres": cells}, "request").multi_ids
    np.testing.assert_array_equal(from_frame, from_request)  # (N, 1, 3)
    assert (from_frame[0] == from_frame[1]).all() and (from_frame[3] == from_frame[8]).all()  # "3.0" is "3"
    assert (from_frame[2] == 0).all() and (from_frame[7] == 0).all()  # blank and missing cells: padding only
    assert multi_values("a||b", "|") == ("a", "b") == multi_values("a||b", "|")  # memoised result, same answer
    assert multi_values(" ", "|") == () and multi_values(" 3.0 ", "|") == ("3",)


def test_a_request_encodes_like_the_same_rows_as_a_frame_on_first_and_repeated_calls() -> None:
    """The scoring request's fast paths (memoised lookups, numeric columns converted at once) follow the frame's
    rules: ids, multi-valued ids, dense values and every input-quality count agree, on a cold and a warm encoder."""
    schema = SchemaConfig(features=[
        {"name": "device", "type": "categorical"},
        {"name": "genres", "type": "multi_categorical", "separator": "|", "max_len": 2},
        {"name": "bid", "type": "numeric", "missing_indicator": True},
        {"name": "minutes", "type": "numeric", "transform": "log"},
    ])
    train = pd.DataFrame({"device": ["ios", "android", "web", "ios"], "genres": ["a|b", "b", "c|a", "a"],
                          "bid": [0.5, 1.0, 2.0, 1.5], "minutes": [1.0, 10.0, 100.0, 5.0]})
    encoder = FeatureEncoder(schema).fit(train, "train")
    request = {"device": ["ios", " web ", None, "tv", "ios"], "genres": ["a|b", ["b", "", "c"], None, "zz|a", "a|b"],
               "bid": [0.7, None, "1.25", 99.0, -5], "minutes": [3, 1e6, None, "2.5", 0]}
    frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in request.items()})
    expected = encoder.transform(frame, "frame")
    for attempt in range(2):  # the second call goes through the memos the first one filled
        got = encoder.transform(request, "request")
        np.testing.assert_array_equal(got.cat_ids, expected.cat_ids)
        np.testing.assert_array_equal(got.multi_ids, expected.multi_ids)
        np.testing.assert_allclose(got.dense, expected.dense, rtol=1e-6)
        assert got.quality == expected.quality, attempt
    assert expected.clipped_counts == {"bid": 2, "minutes": 2} and expected.oov_counts["device"] == 1
    assert expected.missing_counts == {"device": 1, "genres": 1, "bid": 1, "minutes": 1}


def test_one_bad_numeric_list_in_a_request_is_named_and_a_changed_clip_rule_applies_at_once() -> None:
    schema = SchemaConfig(features=[{"name": "bid", "type": "numeric"}, {"name": "minutes", "type": "numeric"}])
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"bid": [0.5, 1.0], "minutes": [1.0, 2.0]}), "train")
    with pytest.raises(ValueError, match=r"request: numeric column 'minutes' \(dtype string\) holds non-numeric"):
        encoder.transform({"bid": [0.7, 0.8], "minutes": [1.5, "many"]}, "request")
    with pytest.raises(ValueError, match=r"request: numeric column 'bid' holds infinite values"):
        encoder.transform({"bid": [0.7, 1e400], "minutes": [1.5, 1.0]}, "request")
    with pytest.raises(ValueError, match=r"request: numeric feature 'minutes' holds \['list'\] values"):
        encoder.transform({"bid": [0.7, 0.8], "minutes": [[1.5], [1.0]]}, "request")
    assert encoder.transform({"bid": [9.0], "minutes": [1.5]}).clipped_counts == {"bid": 1, "minutes": 0}
    schema.clip = "error"
    with pytest.raises(ValueError, match=r"numeric feature 'bid' has 1 values outside its training range"):
        encoder.transform({"bid": [9.0], "minutes": [1.5]}, "request")
    schema.clip = "off"
    assert encoder.transform({"bid": [9.0], "minutes": [1.5]}).clipped_counts == {"bid": 0, "minutes": 0}


def test_request_memos_hit_only_values_that_normalise_alike_whatever_came_first() -> None:
    """A memo keyed by raw values must not hand a value the id of an equal value of another type that normalises
    differently: Decimal / numpy scalars are never keys, and ints / floats beyond 2^53 are never memoised."""
    from decimal import Decimal

    schema = SchemaConfig(features=[{"name": "user", "type": "categorical", "encoding": "hash", "hash_buckets": 997}])
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"user": ["a", "b"]}), "train")

    def request_id(value) -> int:
        return int(encoder.transform({"user": [value]}, "request").cat_ids[0, 0])

    def frame_id(value) -> int:
        return int(encoder.transform(pd.DataFrame({"user": pd.Series([value], dtype=object)}), "frame").cat_ids[0, 0])

    pairs = [(3, Decimal("3.0")), (2**70, float(2**70)), (float(2**70), 2**70), (2**70, np.float64(2.0**70)),
             (3.5, np.float64(3.5)), (True, 1), (1, 1.0)]
    for first, second in pairs:
        for value in (first, second, first, second):
            assert request_id(value) == frame_id(value), (first, second, value)


def test_a_nested_multi_valued_cell_is_named_by_its_request_row_after_memo_hits() -> None:
    schema = SchemaConfig(features=[{"name": "genres", "type": "multi_categorical", "separator": "|"}])
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"genres": ["a|b", "c"]}), "train")
    encoder.transform({"genres": ["a|b", "c"]}, "request")
    with pytest.raises(ValueError, match=r"multi-valued feature 'genres', row 2: nested value"):
        encoder.transform({"genres": ["a|b", "c", ("x", ("y",))]}, "request")


def test_numeric_text_in_a_request_follows_the_file_rule_whatever_the_other_rows_hold() -> None:
    schema = SchemaConfig(features=[{"name": "bid", "type": "numeric"}])
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"bid": [0.5, 1.0]}), "train")
    for text in ("1_000", "１", "-nan"):  # Python's float() takes these; a CSV column does not
        for rows in ([text], [text, ""], [text, 0.5]):
            with pytest.raises(ValueError, match=r"numeric column 'bid' .* holds non-numeric values"):
                encoder.transform({"bid": rows}, "request")
    for rows in ([True], [""], [True, ""], ["0.75", None, 1]):  # booleans are 1 / 0, blanks missing, in any mix
        encoded = encoder.transform({"bid": rows}, "request")
        frame = encoder.transform(pd.DataFrame({"bid": pd.Series([int(v) if isinstance(v, bool) else v
                                                                  for v in rows], dtype=object)}), "frame")
        np.testing.assert_array_equal(encoded.dense, frame.dense)


def test_an_all_empty_multi_valued_column_in_a_file_scores_as_missing_not_a_crash() -> None:
    schema = SchemaConfig(features=[{"name": "genres", "type": "multi_categorical", "separator": "|"}])
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"genres": ["a|b", "c"]}), "train")
    out = encoder.transform(pd.DataFrame({"genres": [np.nan] * 5000}), "score.csv")  # how pandas reads it
    assert (out.multi_ids == MISSING_ID).all() and out.missing_counts == {"genres": 5000}


def test_request_sized_text_is_never_kept_in_a_memo() -> None:
    from camoe.data.columns import MEMO_MAX_TEXT, memoisable

    schema = SchemaConfig(features=[{"name": "device", "type": "categorical"},
                                    {"name": "genres", "type": "multi_categorical", "separator": "|"}])
    encoder = FeatureEncoder(schema).fit(pd.DataFrame({"device": ["ios", "web"], "genres": ["a", "b"]}), "train")
    for i in range(20):
        big = f"{i}" + "x" * (MEMO_MAX_TEXT + 1)
        encoder.transform({"device": [big], "genres": [big]}, "request")
    encoder.transform({"device": ["ios"], "genres": ["a|b"]}, "request")
    assert [len(m) for m in encoder._raw_ids.values()] == [1] and [len(m) for m in encoder._raw_cells.values()] == [1]
    assert not memoisable("x" * (MEMO_MAX_TEXT + 1)) and not memoisable(2**60) and memoisable(2**40)
