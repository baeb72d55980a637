"""Bad input found by breaking the tools: each kind keeps a test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import camoe
from camoe.artifact import ArtifactError
from camoe.cli import main
from camoe.data.readers import read_table
from camoe.run import read_for_config

CSV = """ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click
1700000000,u1,007,audio,NA,music,0.5,10,1
1700000001,u2,7,audio,null,news,0.4,3,0
1700000002,u3,9007199254740993,video,None,sports,0.9,20,0
1700000003,u4,9007199254740992,video,web,sports,0.8,1,1
1700000004,u5,a5,display,web,,0.1,0,1
1700000005,u6,a6,display,ios,news,0.2,2,0
"""


def _config() -> camoe.RunConfig:
    return camoe.load_config({
        "schema": {"features": [
            {"name": "ad_id", "type": "categorical"},
            {"name": "device", "type": "categorical"},
            {"name": "interests", "type": "multi_categorical"},
            {"name": "bid_price", "type": "numeric"},
        ]},
        "formats": {"audio": {"modality": "audio"}, "video": {"modality": "video"}, "display": {"modality": "display"}},
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 1, "batch_size": 4},
        "data": {"split": {"method": "random", "valid_fraction": 0.0, "test_fraction": 0.0}},
    })


def test_csv_keeps_literal_na_strings_and_id_digits(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    frame = read_for_config(_config(), path)
    assert frame["device"].tolist()[:3] == ["NA", "null", "None"]  # category values, not missing
    assert frame["ad_id"].tolist()[:4] == ["007", "7", "9007199254740993", "9007199254740992"]  # no digits lost
    assert frame["interests"].isna().tolist() == [False] * 4 + [True, False]  # only empty cells are missing
    pipe = camoe.CTRPipeline(_config()).fit(frame)
    assert {"NA", "null", "None", "007", "7"} <= set(pipe.encoder_.vocab_["device"] + pipe.encoder_.vocab_["ad_id"])


def test_list_cells_equal_separator_cells() -> None:
    cfg = _config()
    rows = pd.read_csv(pd.io.common.StringIO(CSV), dtype=str, keep_default_na=False, na_values=[""])
    pipe = camoe.CTRPipeline(cfg).fit(rows)
    as_lists = rows.copy()
    as_lists["interests"] = [["music"], ["news"], ["sports"], ["sports"], [], ["news"]]
    np.testing.assert_array_equal(pipe.predict_proba(rows), pipe.predict_proba(as_lists))


def test_mixed_and_inconsistent_folders_are_refused(tmp_path: Path) -> None:
    frame = pd.read_csv(pd.io.common.StringIO(CSV))
    frame.to_parquet(tmp_path / "a.parquet")
    frame.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match="mixes CSV and Parquet"):
        read_table(tmp_path)
    other = tmp_path / "csvs"
    other.mkdir()
    frame.to_csv(other / "a.csv", index=False)
    frame.drop(columns=["device"]).to_csv(other / "b.csv", index=False)
    with pytest.raises(ValueError, match=r"b\.csv: columns differ.*missing \['device'\]"):
        read_table(other)


def test_overflowing_numeric_feature_is_named() -> None:
    frame = pd.read_csv(pd.io.common.StringIO(CSV))
    frame.loc[0, "bid_price"] = 1e300
    with pytest.raises(ValueError, match="'bid_price'.*overflow"):
        camoe.CTRPipeline(_config()).fit(frame)


def test_nan_label_is_counted() -> None:
    frame = pd.read_csv(pd.io.common.StringIO(CSV))
    frame.loc[1, "click"] = np.nan
    with pytest.raises(ValueError, match="<missing>"):
        camoe.CTRPipeline(_config()).fit(frame)


def test_artifact_manifest_must_cover_files_and_fingerprint(tmp_path: Path) -> None:
    frame = pd.read_csv(pd.io.common.StringIO(CSV))
    pipe = camoe.CTRPipeline(_config()).fit(frame)
    folder = pipe.save(tmp_path / "model")
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["encoder.json"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not cover"):
        camoe.CTRPipeline.load(folder)


def test_cli_bad_set_and_paths_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "none.yaml"), "--set", "train.epochs"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: [unclosed\n")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["generate", "--rows", "10", "--output", str(tmp_path / "g.txt")]) == 2
    assert ".parquet or .csv" in capsys.readouterr().err


def test_config_rejects_non_finite_and_negative_weights() -> None:
    base = {"schema": {"features": [{"name": "d", "type": "categorical"}]}}
    for train in ({"learning_rate": float("inf")}, {"task_weights": {"audio": -5.0}}):
        with pytest.raises(camoe.ConfigError):
            camoe.load_config({**base, "train": train})
    with pytest.raises(camoe.ConfigError, match="separator"):
        camoe.load_config({"schema": {"features": [{"name": "i", "type": "multi_categorical", "separator": ""}]}})


def test_csv_row_with_too_few_or_too_many_fields_names_file_and_row(tmp_path: Path) -> None:
    lines = CSV.strip().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join([*lines[:3], "1700000009,u9,a9,audio", *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match=r"short\.csv: malformed CSV: 1 rows .* line 4: 4 fields, expected 9"):
        read_table(short)
    long = tmp_path / "long.csv"
    long.write_text("\n".join([*lines, lines[-1] + ",extra"]) + "\n")
    with pytest.raises(ValueError, match=r"long\.csv: malformed CSV"):
        read_table(long)
    # a quoted value holding the separator or a newline is one field, not a malformed row
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(lines[0] + "\n" + '1700000000,u1,a1,audio,"ios, v2","music\nnews",0.5,10,1\n')
    assert read_table(quoted).loc[0, "device"] == "ios, v2"


def test_missing_error_counts_separator_only_multi_cells() -> None:
    cfg = _config()
    cfg.schema.features[2].missing = "error"
    frame = pd.read_csv(__import__("io").StringIO(CSV), keep_default_na=False, na_values=[""], dtype={"ad_id": str})
    frame.loc[4, "interests"] = "|"  # only the separator: no value
    frame.loc[5, "interests"] = " | "
    with pytest.raises(ValueError, match=r"'interests' has 2 missing values"):
        camoe.CTRPipeline(cfg).fit(frame)


def test_encoding_errors_in_an_explicit_split_file_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(CSV)
    lines = CSV.strip().splitlines()
    (tmp_path / "valid.csv").write_text("\n".join([lines[0], lines[1].replace(",0.5,", ",cheap,")]) + "\n")
    cfg = _config()
    cfg.data.path, cfg.data.valid_path = str(tmp_path / "train.csv"), str(tmp_path / "valid.csv")
    with pytest.raises(ValueError, match=r"valid \(.*valid\.csv\).*bid_price.*cheap"):
        camoe.train_and_evaluate(cfg, output_dir=tmp_path / "out")


def _fitted_on_csv(tmp_path: Path) -> tuple[camoe.CTRPipeline, Path]:
    (tmp_path / "rows.csv").write_text(CSV)
    cfg = _config()
    pipe = camoe.CTRPipeline(cfg).fit(read_for_config(cfg, tmp_path / "rows.csv"))
    return pipe, tmp_path / "rows.csv"


def test_inputs_that_overflow_the_model_are_clipped_or_refused_never_scored_nan(tmp_path: Path) -> None:
    pipe, path = _fitted_on_csv(tmp_path)
    rows = read_for_config(pipe.config, path)
    rows.loc[0, "bid_price"] = 1e36  # finite, fits float32 after scaling, overflows inside the network
    scores = pipe.scorer().score(rows, "rows.csv")  # default clip: scored at the top of the training range
    assert np.isfinite(scores.pctr).all() and scores.quality.clipped == {"bid_price": 1}
    pipe.config.schema.clip = "off"  # without the guard the overflow is refused, naming the feature
    with pytest.raises(ValueError, match=r"non-finite or saturated pCTR.*'bid_price'"):
        pipe.predict_proba(rows, source="rows.csv")


def test_a_saturated_pctr_is_refused_like_a_nan_one_even_with_clipping_off(tmp_path: Path) -> None:
    pipe, path = _fitted_on_csv(tmp_path)
    rows = read_for_config(pipe.config, path)
    pipe.config.schema.clip = "off"
    for value in (-1e6, 1e18):  # finite, and finite after scaling; the logit is huge -> pCTR exactly 0 or 1
        rows.loc[0, "bid_price"] = value
        with pytest.raises(ValueError, match=r"saturated pCTR.*'bid_price'"):
            pipe.predict_proba(rows, source="rows.csv")
    scores = pipe.predict_proba(rows.iloc[1:], source="rows.csv")
    assert ((scores > 0) & (scores < 1)).all()


def test_a_numeric_feature_without_training_values_bounds_scoring_by_imputing(tmp_path: Path) -> None:
    cfg = _config()
    (tmp_path / "rows.csv").write_text(CSV)
    train = read_for_config(cfg, tmp_path / "rows.csv")
    train["bid_price"] = np.nan
    with pytest.warns(UserWarning, match="numeric feature 'bid_price' has no value in the training rows"):
        pipe = camoe.CTRPipeline(cfg).fit(train)
    rows = train.copy()
    rows["bid_price"] = [1e300, -1e300] + [0.5] * (len(rows) - 2)
    scores = pipe.scorer().score(rows, "rows.csv")
    assert scores.quality.clipped == {"bid_price": len(rows)}
    assert np.allclose(scores.pctr, pipe.scorer().score(train, "rows.csv").pctr)  # as if missing: imputed
    pipe.config.schema.clip = "error"
    with pytest.raises(ValueError, match="had none in the training rows"):
        pipe.predict_proba(rows, source="rows.csv")


def test_numbers_beyond_float64_lists_for_scalars_and_na_tokens() -> None:
    cfg = _config()
    train = pd.read_csv(__import__("io").StringIO(CSV), keep_default_na=False, na_values=[""], dtype={"ad_id": str})
    pipe = camoe.CTRPipeline(cfg).fit(train)
    base = {c: train[c].tolist()[:2] for c in train.columns}
    with pytest.raises(ValueError, match=r"'bid_price' holds an integer beyond the float64 range"):
        pipe.predict_proba({**base, "bid_price": [10**400, 1.0]})
    with pytest.raises(ValueError, match=r"'bid_price' holds \['list'\] values"):
        pipe.predict_proba({**base, "bid_price": [[1.0], 1.0]})
    with pytest.raises(ValueError, match=r"feature 'device': expected one value per row, got a list"):
        pipe.predict_proba({**base, "device": [["ios", "web"], "ios"]})
    text = train.astype({"bid_price": str})
    with pytest.raises(ValueError, match=r"'bid_price' holds infinite values or values beyond the float64 range \['1e400'\]"):
        pipe.predict_proba(text.assign(bid_price=["1e400"] + text["bid_price"].tolist()[1:]))
    na = pipe.predict_proba(text.assign(bid_price=["NA", "n/a", "null", "None", "nan", ""]))  # explicit missing
    assert np.isfinite(na).all()


def test_csv_with_repeated_header_or_no_content_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("ts,device,device,click\n1,ios,web,0\n")
    with pytest.raises(ValueError, match=r"dup\.csv: the header repeats column\(s\) \['device'\]"):
        read_table(tmp_path / "dup.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: the CSV file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "quote.csv").write_text('a,b\n"1,2\n')
    with pytest.raises(ValueError, match=r"quote\.csv"):
        read_table(tmp_path / "quote.csv")
    (tmp_path / "utf16.csv").write_bytes("a,b\n1,2\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"utf16\.csv"):
        read_table(tmp_path / "utf16.csv")


def test_cli_predict_never_overwrites_its_input_or_the_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipe, path = _fitted_on_csv(tmp_path)
    folder = pipe.save(tmp_path / "model")
    before = path.read_text()
    for output, message in ((path, "input data file"), (folder / "encoder.csv", "inside the artifact folder"),
                            (tmp_path / "out.json", "ending in .csv or .parquet")):
        assert main(["predict", str(folder), str(path), "--output", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert path.read_text() == before
    camoe.CTRPipeline.load(folder)  # untouched


def test_1e400_is_refused_naming_the_feature_in_csv_and_parquet_files(tmp_path: Path) -> None:
    pipe, path = _fitted_on_csv(tmp_path)
    folder = pipe.save(tmp_path / "model")
    text = path.read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("bid_price")] = "1e400"  # pandas reads it as inf: an overflow, not a missing value
    (tmp_path / "big.csv").write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    frame = read_for_config(pipe.config, tmp_path / "big.csv")
    frame.to_parquet(tmp_path / "big.parquet", index=False)
    for name in ("big.csv", "big.parquet"):
        assert main(["predict", str(folder), str(tmp_path / name), "--output", str(tmp_path / "p.csv")]) == 2
        assert main(["evaluate", str(folder), "--data", str(tmp_path / name), "--output", str(tmp_path / "e")]) == 2


def test_out_of_range_values_are_clipped_counted_and_leave_in_range_rows_unchanged(tmp_path: Path, capsys) -> None:
    pipe, path = _fitted_on_csv(tmp_path)
    rows = read_for_config(pipe.config, path)
    before = pipe.predict_proba(rows)
    wild = rows.astype({"bid_price": "float64"})
    wild.loc[0, "bid_price"] = -1e10
    wild.loc[1, "bid_price"] = 1e30
    scores = pipe.scorer().score(wild)
    np.testing.assert_array_equal(scores.pctr[2:], before[2:])  # rows inside the range score exactly as before
    assert scores.quality.clipped == {"bid_price": 2}
    lo = wild.assign(bid_price=rows["bid_price"].min())  # clipping = scoring at the edge of the range
    assert scores.pctr[0] == pytest.approx(pipe.predict_proba(lo)[0], abs=1e-12)
    folder = pipe.save(tmp_path / "model")
    wild.to_csv(tmp_path / "wild.csv", index=False)
    assert main(["predict", str(folder), str(tmp_path / "wild.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    assert "values clipped to the training range: {'bid_price': 2}" in capsys.readouterr().out
    assert main(["evaluate", str(folder), "--data", str(tmp_path / "wild.csv"), "--output", str(tmp_path / "e")]) == 0
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["input_quality"]["clipped"] == {"bid_price": 2}
    pipe.config.schema.clip = "error"
    with pytest.raises(ValueError, match=r"'bid_price' has 2 values outside its training range"):
        pipe.predict_proba(wild)


def test_yaml_off_for_clip_and_true_false_text_labels_follow_the_documented_rules() -> None:
    import yaml

    from camoe.data.columns import label_values

    cfg = camoe.load_config(camoe.demo_config_path(), yaml.safe_load("schema: {clip: off}"))  # YAML reads off as false
    assert cfg.schema.clip == "off"
    labels = label_values({"click": ["true", " FALSE ", "1.0", 0, True]}, "click", "rows.csv")
    assert labels.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"rows.csv: label column 'click' must hold 0 or 1.*'yes': 1"):
        label_values({"click": ["yes", "1"]}, "click", "rows.csv")
