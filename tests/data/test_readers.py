"""Readers: the public logs in shared/data, and clear errors for malformed, empty or corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import camoe
from camoe.data.datasets import read_ipinyou_fm, read_open_bandit
from camoe.data.readers import expand_paths

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OPEN_BANDIT = SHARED_DATA / "open-bandit-dataset"
IPINYOU_TRAIN = SHARED_DATA / "ipinyou-2997" / "train.fm.txt"

IPINYOU_FIELDS = [
    "weekday", "hour", "useragent", "IP", "region", "city", "adexchange", "domain", "slotid", "slotwidth",
    "slotheight", "slotvisibility", "slotformat", "creative", "advertiser", "slotprice",
]


# ----------------------------------------------------------------------------- Open Bandit
@pytest.fixture(scope="module")
def open_bandit() -> pd.DataFrame:
    return read_open_bandit(OPEN_BANDIT)


def test_open_bandit_rows_formats_and_affinity(open_bandit) -> None:
    frame = open_bandit
    assert len(frame) == 60_000
    formats = set(frame["format"].unique())
    assert {"all_pos1", "all_pos2", "all_pos3", "men_pos1", "women_pos3"} <= formats
    assert len(formats) == 9  # 3 campaigns x 3 positions
    assert frame["item_affinity"].isna().sum() == 0
    assert np.isfinite(frame["item_affinity"].to_numpy(dtype=float)).all()
    assert set(frame["policy"].unique()) == {"random", "bts"}
    assert set(frame["click"].unique()) <= {0, 1}
    assert frame["item_id"].str.match(r"^(all|men|women):\d+$").all()
    for col in ("user_feature_0", "item_feature_0", "propensity_score", "timestamp"):
        assert col in frame.columns


def test_open_bandit_through_read_table(open_bandit) -> None:
    frame = camoe.read_table(OPEN_BANDIT, reader="open_bandit", policies=["random"], campaigns=["men"])
    assert 0 < len(frame) < len(open_bandit)
    assert set(frame["format"].unique()) <= {"men_pos1", "men_pos2", "men_pos3"}
    assert set(frame["policy"]) == {"random"}


def test_open_bandit_missing_campaign_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="Open Bandit"):
        read_open_bandit(tmp_path)


# ----------------------------------------------------------------------------- iPinYou
def test_ipinyou_fm_rows_and_fields() -> None:
    frame = read_ipinyou_fm(IPINYOU_TRAIN)
    assert len(frame) == 26_773
    assert list(frame.columns) == ["click", *IPINYOU_FIELDS]
    assert frame.shape[1] == 17
    assert set(frame["click"].unique()) <= {0, 1}
    assert frame["click"].sum() > 0
    assert frame["advertiser"].iloc[0] == "2997"


def test_ipinyou_fm_malformed_line_and_unknown_index(tmp_path) -> None:
    index = tmp_path / "featindex.fm.txt"
    index.write_text("weekday:1\t0\nhour:2\t1\n")
    data = tmp_path / "train.fm.txt"
    data.write_text("0 0:1 1:1\n1 0:1\nx 0:1\n")
    with pytest.raises(ValueError, match=r"train\.fm\.txt:3"):
        read_ipinyou_fm(data)
    data.write_text("0 0:1 7:1\n")
    with pytest.raises(ValueError, match=r":1: feature index 7"):
        read_ipinyou_fm(data)
    data.write_text("0 0:1\n1 1:1\n")
    frame = read_ipinyou_fm(data)
    assert frame["click"].tolist() == [0, 1]
    assert frame["weekday"].tolist()[0] == "1"
    assert pd.isna(frame["weekday"].tolist()[1])


# ----------------------------------------------------------------------------- CSV / Parquet errors
def test_malformed_csv_line_reports_line_number(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click\n"
        "1700000000,u1,a1,audio,ios,music,0.5,10,1\n"
        "1700000001,u2,a2,audio,ios,news,0.4,3,0,extra,fields\n"
        "1700000002,u3,a3,video,ios,sports,0.9,20,0\n"
    )
    with pytest.raises(ValueError) as info:
        camoe.read_table(path)
    msg = str(info.value)
    assert "bad.csv" in msg
    assert "line 3" in msg


def test_empty_csv_file_named(tmp_path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        camoe.read_table(path)


def test_zero_byte_parquet_named(tmp_path) -> None:
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.parquet"):
        camoe.read_table(path)


def test_garbage_parquet_named(tmp_path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not parquet at all \x00\x01\x02" * 20)
    with pytest.raises(ValueError, match="garbage.parquet"):
        camoe.read_table(path)


def test_corrupt_file_named_among_good_parquet_files(tmp_path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_parquet(tmp_path / "part-0.parquet", index=False)
    (tmp_path / "part-1.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(ValueError, match="part-1.parquet"):
        camoe.read_table(tmp_path)


def test_folder_of_parquet_files_and_glob(tmp_path) -> None:
    for i in range(3):
        pd.DataFrame({"a": [i, i], "b": ["x", "y"]}).to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    assert len(camoe.read_table(tmp_path)) == 6
    assert len(camoe.read_table(str(tmp_path / "part-[01].parquet"))) == 4
    assert [p.name for p in expand_paths(tmp_path)] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]


def test_missing_path_and_unknown_reader(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        camoe.read_table(tmp_path / "nothing_here.csv")
    path = tmp_path / "ok.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="unknown reader"):
        camoe.read_table(path, reader="xml")


def test_csv_with_trailing_commas_drops_empty_columns(tmp_path) -> None:
    path = tmp_path / "trailing.csv"
    path.write_text("a,b,\n1,2,\n3,4,\n")
    frame = camoe.read_table(path)
    assert list(frame.columns) == ["a", "b"]
    assert frame["a"].tolist() == [1, 3]


def test_dataframe_source_is_copied() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    out = camoe.read_table(frame)
    out.loc[0, "a"] = 99
    assert frame["a"].tolist() == [1, 2]


