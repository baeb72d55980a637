"""Streaming Parquet input: the split on a Parquet source, the chunked encoder fit, the bounded shuffle buffer, and
the CLI round trip (generate --shards, train / evaluate / predict with data.streaming.enabled)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import camoe
from camoe.batch import Batch
from camoe.cli import main
from camoe.config import SplitConfig
from camoe.data.batches import BatchStream
from camoe.data.encoders import EncoderFit, FeatureEncoder
from camoe.data.sources import ParquetSource
from camoe.data.split import plan_split
from camoe.run import data_splits


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("log")
    cfg = camoe.SyntheticConfig(rows=9_000, seed=2)
    for shard in range(3):
        camoe.generate_log(cfg, shard=shard, num_shards=3).to_parquet(folder / f"part-{shard}.parquet", index=False)
    return folder


def _cfg(folder: Path, **streaming: object) -> camoe.RunConfig:
    return camoe.load_config(camoe.demo_config_path(), {
        "data": {"path": str(folder), "streaming": {"enabled": True, "read_batch_rows": 1000, **streaming}},
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 1, "batch_size": 256},
    })


def test_sharded_log_shares_users_and_is_reproducible(shards: Path) -> None:
    parts = [pd.read_parquet(f) for f in sorted(shards.glob("*.parquet"))]
    assert [len(p) for p in parts] == [3000, 3000, 3000]
    again = camoe.generate_log(camoe.SyntheticConfig(rows=9_000, seed=2), shard=1, num_shards=3)
    pd.testing.assert_frame_equal(parts[1], again)
    assert set(parts[0]["user_id"]) & set(parts[2]["user_id"])  # one user population across shards


def test_split_of_a_parquet_source_has_the_fractions_and_keeps_time_order(shards: Path) -> None:
    source = ParquetSource(shards, read_batch_rows=1000)
    plan = plan_split(source, SplitConfig(valid_fraction=0.1, test_fraction=0.2), "ts")
    counts = {s: sum(len(c) for c in source.chunks(["ts"], plan.where(s))) for s in ("train", "valid", "test")}
    assert counts == plan.rows and sum(counts.values()) == 9000
    assert abs(counts["test"] - 1800) <= 5 and abs(counts["valid"] - 900) <= 5
    train_ts = pd.concat(source.chunks(["ts"], plan.where("train")))["ts"]
    valid_ts = pd.concat(source.chunks(["ts"], plan.where("valid")))["ts"]
    assert train_ts.max() < valid_ts.min()


def test_chunked_encoder_fit_equals_in_memory_fit_exactly(shards: Path) -> None:
    cfg = _cfg(shards)
    frame = pd.concat([pd.read_parquet(f) for f in sorted(shards.glob("*.parquet"))], ignore_index=True)
    fit = EncoderFit(cfg.schema)
    for start in range(0, len(frame), 700):  # uneven record batches
        fit.add(frame.iloc[start : start + 700], "t")
    assert fit.encoder().state_dict() == FeatureEncoder(cfg.schema).fit(frame).state_dict()


def test_vocab_feature_over_distinct_limit_names_feature_and_hash(shards: Path) -> None:
    cfg = camoe.load_config({"schema": {"features": [{"name": "user_id", "type": "categorical"}]}})
    frame = pd.read_parquet(next(shards.glob("*.parquet")))
    with pytest.raises(ValueError, match="'user_id'.*encoding: hash"):
        EncoderFit(cfg.schema, max_distinct_values=50).add(frame, "t")


def _identity_stream(folder: Path, buffer: int) -> BatchStream:
    def encode(frame: pd.DataFrame) -> Batch:
        n = len(frame)
        ts = torch.from_numpy(frame["ts"].to_numpy(np.int64, copy=True))
        return Batch(ts.view(-1, 1), torch.zeros(n, 0, 1, dtype=torch.long), torch.zeros(n, 0),
                     torch.zeros(n, dtype=torch.long), torch.zeros(n))

    return BatchStream(ParquetSource(folder, read_batch_rows=500), encode, 128, ["ts"], shuffle_buffer_rows=buffer)


def test_shuffle_buffer_yields_every_row_once_and_mixes_files(shards: Path) -> None:
    stream = _identity_stream(shards, buffer=2000)
    in_order = torch.cat([b.cat_ids for b in stream.batches(None)]).view(-1)
    epoch = [b.cat_ids.view(-1) for b in stream.batches(torch.Generator().manual_seed(1))]
    shuffled = torch.cat(epoch)
    assert all(len(b) == 128 for b in epoch[:-1])
    assert sorted(shuffled.tolist()) == sorted(in_order.tolist())
    assert not torch.equal(shuffled, in_order)
    again = torch.cat([b.cat_ids.view(-1) for b in stream.batches(torch.Generator().manual_seed(1))])
    assert torch.equal(shuffled, again)  # same generator state, same epoch (resume relies on it)
    skipped = torch.cat([b.cat_ids.view(-1) for b in stream.batches(torch.Generator().manual_seed(1), skip=3)])
    assert torch.equal(skipped, shuffled[3 * 128 :])


def test_streaming_refuses_csv_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    camoe.generate_log(camoe.SyntheticConfig(rows=100, seed=0)).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"log\.csv: not a Parquet file"):
        data_splits(_cfg(path))


def test_cli_generate_shards_then_streamed_train_evaluate_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "log"
    assert main(["generate", "--rows", "12000", "--shards", "2", "--output", str(log)]) == 0
    assert "in 2 Parquet files" in capsys.readouterr().out
    sets = ["--set", f"data.path={log}", "--set", "data.streaming.enabled=true", "--set", "train.epochs=1",
            "--set", "data.streaming.read_batch_rows=4096", "--set", "model.expert_hidden=[16]"]
    assert main(["train", str(camoe.demo_config_path()), *sets, "--no-progress", "--output", str(tmp_path / "m")]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["train"]["streaming"] and metrics["train"]["rows"] == 8400
    assert sum(m["rows"] for m in metrics["tasks"].values()) == 2400
    assert metrics["macro"]["auc_pr"] > 0.0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), "--split", "valid"]) == 0
    assert "audio" in capsys.readouterr().out
    out = tmp_path / "pctr.parquet"
    assert main(["predict", str(tmp_path / "m"), str(log), "--output", str(out), "--keep", "ts"]) == 0
    pctr = pd.read_parquet(out)
    assert len(pctr) == 12_000 and pctr["pctr"].between(0, 1).all() and pctr["row"].is_unique
    in_memory = camoe.CTRPipeline.load(tmp_path / "m").predict_proba(pd.read_parquet(log / "part-00000.parquet"))
    np.testing.assert_allclose(pctr["pctr"].to_numpy()[: len(in_memory)], in_memory, rtol=1e-6)


def test_predict_keep_column_whose_pandas_type_changes_between_record_batches(tmp_path: Path) -> None:
    """--keep takes the column from Arrow: an int column with nulls only in later record batches (int64 in pandas
    for the first batches, float64 after) used to end Parquet output with a schema error and a truncated file."""
    log = tmp_path / "log"
    assert main(["generate", "--rows", "6000", "--shards", "1", "--output", str(log)]) == 0
    sets = ["--set", f"data.path={log}", "--set", "data.streaming.enabled=true", "--set", "train.epochs=1",
            "--set", "model.expert_hidden=[8]", "--set", "data.streaming.read_batch_rows=1000"]
    assert main(["train", str(camoe.demo_config_path()), *sets, "--no-progress", "--output", str(tmp_path / "m")]) == 0
    frame = pd.read_parquet(log)
    frame["campaign"] = pd.array(np.where(np.arange(len(frame)) < 4000, np.arange(len(frame)), None), dtype="Int64")
    scored = tmp_path / "scored"
    scored.mkdir()
    frame.to_parquet(scored / "part.parquet", index=False)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(tmp_path / "m"), str(scored), "--output", str(out), "--keep", "campaign"]) == 0
    pctr = pd.read_parquet(out)
    assert len(pctr) == 6000 and pctr["campaign"].isna().sum() == 2000
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pq.read_schema(out).field("campaign").type == pa.int64()


def test_bad_labels_in_the_test_split_stop_the_run_before_training(tmp_path: Path, capsys) -> None:
    """Labels and formats of every split are read before training: a bad click in the test split (read last when
    streaming) stops the run at once, naming the split and the column, instead of after hours of training."""
    log = tmp_path / "log"
    assert main(["generate", "--rows", "6000", "--shards", "1", "--output", str(log)]) == 0
    frame = pd.read_parquet(log / "part-00000.parquet")
    frame.loc[frame["ts"].idxmax(), "click"] = np.nan  # the newest row: in the test split
    frame.to_parquet(log / "part-00000.parquet", index=False)
    sets = ["--set", f"data.path={log}", "--set", "data.streaming.enabled=true", "--set", "train.epochs=1",
            "--set", "model.expert_hidden=[8]"]
    assert main(["train", str(camoe.demo_config_path()), *sets, "--no-progress", "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "test split" in err and "'click'" in err
    assert not (tmp_path / "m" / "checkpoints").exists()  # stopped before the first step


def test_bad_feature_values_in_the_test_split_keep_the_trained_model(tmp_path: Path, capsys) -> None:
    """Feature values are encoded only when a split is scored: a value the range guard refuses (clip: error) in the
    test split must not throw the trained model away."""
    log = tmp_path / "log"
    assert main(["generate", "--rows", "6000", "--shards", "1", "--output", str(log)]) == 0
    frame = pd.read_parquet(log / "part-00000.parquet")
    frame.loc[frame["ts"].idxmax(), "ad_duration_s"] = 1e6  # far outside the training range (0..30)
    frame.to_parquet(log / "part-00000.parquet", index=False)
    import yaml

    config = yaml.safe_load(camoe.demo_config_path().read_text())
    for feature in config["schema"]["features"]:
        if feature["name"] == "ad_duration_s":
            feature["clip"] = "error"  # its valid rows hold only trained values (0, 10, 15, 20, 30)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    sets = ["--set", f"data.path={log}", "--set", "data.streaming.enabled=true", "--set", "train.epochs=1",
            "--set", "model.expert_hidden=[8]"]
    assert main(["train", str(tmp_path / "cfg.yaml"), *sets, "--no-progress", "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "test split" in err and "'ad_duration_s'" in err and "outside its training range" in err
    assert "trained model was saved to" in err
    assert camoe.CTRPipeline.load(tmp_path / "m").predict_proba(frame.head(3)).shape == (3,)


def test_constant_timestamp_warns_that_valid_and_test_are_empty(tmp_path: Path) -> None:
    """All rows share one timestamp: they stay together in train; the empty valid / test splits are announced."""
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=500, seed=0))
    frame["ts"] = 1_700_000_000
    frame.to_parquet(tmp_path / "one.parquet", index=False)
    with pytest.warns(UserWarning, match=r"leaves the valid split empty \(asked for 50 of 500 rows\)"):
        splits = data_splits(_cfg(tmp_path))
    assert splits.plan.rows == {"train": 500, "valid": 0, "test": 0}
    assert splits.valid is None and splits.test is None
