"""Warm start (daily retraining): vocabularies extended with known ids kept, the model starting from yesterday's
weights, and a clear error when the layout or architecture changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import camoe
from camoe.cli import main
from camoe.config import ConfigError
from camoe.data.encoders import FeatureEncoder, extend_encoder
from camoe.model import build_model

SMALL = {"model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
         "train": {"epochs": 1, "batch_size": 512, "min_task_clicks": 0}}


def _day(seed: int, shard: int, rows: int = 4000) -> pd.DataFrame:
    """Day `shard` of one population (same users, ads and effects), impressions drawn afresh."""
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=rows * 2, seed=seed), shard=shard, num_shards=2)
    frame["ts"] += shard * 14 * 86400
    return frame


def _config(**extra: object) -> camoe.RunConfig:
    features = [{"name": "ad_id", "type": "categorical"}]  # ids new on day 2 extend the vocabulary
    raw = camoe.config.deep_merge(SMALL, extra)
    cfg = camoe.load_config(camoe.demo_config_path(), raw)
    cfg.schema.features = [*cfg.schema.features, *[camoe.config.FeatureSpec(**f) for f in features]]
    return cfg


def test_extended_vocabulary_keeps_every_known_id_and_appends_new_values() -> None:
    cfg = _config()
    day1, day2 = _day(0, 0), _day(0, 1)
    old = FeatureEncoder(cfg.schema).fit(day1)
    new, added = extend_encoder(old, FeatureEncoder(cfg.schema).fit(day2))
    for name, vocab in old.vocab_.items():
        assert new.vocab_[name][: len(vocab)] == vocab  # known values keep their ids
    assert added["ad_id"] > 0 and len(new.vocab_["ad_id"]) == len(old.vocab_["ad_id"]) + added["ad_id"]
    assert new.mean_ == old.mean_  # numeric statistics kept by default
    updated, _ = extend_encoder(old, FeatureEncoder(cfg.schema).fit(day2), numeric="update")
    assert updated.mean_ != old.mean_


@pytest.mark.parametrize("wide", [False, True])
def test_warm_started_model_holds_yesterdays_embedding_rows_and_weights(wide: bool) -> None:
    cfg = _config(model={"wide": wide})
    day1, day2 = _day(1, 0), _day(1, 1)
    old_enc = FeatureEncoder(cfg.schema).fit(day1)
    new_enc, _ = extend_encoder(old_enc, FeatureEncoder(cfg.schema).fit(day2))
    torch.manual_seed(0)
    old = build_model(cfg.model, old_enc.input_spec_, 3)
    new = build_model(cfg.model, new_enc.input_spec_, 3)
    if wide:  # yesterday's first-order weights are not the zeros they start at
        for p in old.linear.parameters():
            torch.nn.init.normal_(p)
        with pytest.raises(ValueError, match=r"first-order term \(model.wide\): False -> True"):
            new.warm_start_from(build_model(cfg.model.model_copy(update={"wide": False}), old_enc.input_spec_, 3))
    new.warm_start_from(old)
    rows = day1.head(200)
    for name in ("device", "ad_id"):
        j = old_enc.input_spec_.cat_features.index(name)
        ids_old = torch.from_numpy(old_enc.transform(rows).cat_ids[:, j])
        ids_new = torch.from_numpy(new_enc.transform(rows).cat_ids[:, j])
        assert torch.equal(ids_old, ids_new)  # day-1 values encode to the same ids
    old_out = old(*(torch.from_numpy(a) for a in _inputs(old_enc, rows))).logits
    new_out = new(*(torch.from_numpy(a) for a in _inputs(new_enc, rows))).logits
    torch.testing.assert_close(new_out, old_out)  # the same function on yesterday's rows


def _inputs(enc: FeatureEncoder, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = enc.transform(rows)
    return out.cat_ids, out.multi_ids, out.dense


def test_warm_start_through_the_cli_and_its_refusals(tmp_path) -> None:
    import yaml

    raw = yaml.safe_load(camoe.demo_config_path().read_text())
    raw["schema"]["features"].append({"name": "ad_id", "type": "categorical"})
    raw = camoe.config.deep_merge(raw, SMALL)
    for day in (0, 1):
        _day(2, day).to_parquet(tmp_path / f"day{day}.parquet")
    raw["data"]["path"] = str(tmp_path / "day0.parquet")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--no-progress", "--output", str(tmp_path / "d0")]) == 0
    day2 = ["--set", f"data.path={tmp_path / 'day1.parquet'}"]
    assert main(["train", str(tmp_path / "cfg.yaml"), *day2, "--no-progress", "--output", str(tmp_path / "d1"),
                 "--warm-start", str(tmp_path / "d0")]) == 0
    manifest = __import__("json").loads((tmp_path / "d1" / "manifest.json").read_text())
    assert manifest["warm_start"]["vocabulary_added"]["ad_id"] > 0
    with pytest.raises(ConfigError, match=r"model settings \['num_experts'\] differ"):
        camoe.CTRPipeline(camoe.load_config(tmp_path / "cfg.yaml", {"model": {"num_experts": 3}})).fit(
            _day(2, 1), warm_start=camoe.CTRPipeline.load(tmp_path / "d0"))
    with pytest.raises(ConfigError, match=r"grouping settings differ.*'strategy': \('modality', 'single'\)"):
        camoe.CTRPipeline(camoe.load_config(tmp_path / "cfg.yaml", {"grouping": {"strategy": "single"}})).fit(
            _day(2, 1), warm_start=camoe.CTRPipeline.load(tmp_path / "d0"))
