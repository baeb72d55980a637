"""``camoe generate --auctions`` and ``camoe replay`` end to end with real (tiny) artifacts: tables, replay.json,
replay.html, calibrated and uncalibrated side by side, one artifact per format, Open Bandit, and one-line errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import camoe
from camoe.cli import main
from camoe.data.synthetic import SyntheticConfig
from camoe.replay import LOGGED, load_replay_model, open_bandit_log, replay

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OPEN_BANDIT = SHARED_DATA / "open-bandit-dataset"
TINY = {"embedding_dim": 4, "num_experts": 2, "num_cross_layers": 1, "expert_hidden": [8], "tower_hidden": [4]}
WORLD = {"rows": 8000, "seed": 0}


def _train(out: Path, frame, **overrides) -> Path:
    cfg = camoe.load_config(camoe.demo_config_path(), {"model": TINY, "train": {"epochs": 1, "batch_size": 512},
                                                       **overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        camoe.train_and_evaluate(cfg, frame=frame, output_dir=out)
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay_cli")
    frame = camoe.generate_log(SyntheticConfig(**WORLD))
    pooled = _train(root / "pooled", frame, grouping={"strategy": "single"}, model={**TINY, "name": "dcn_v2"})
    camoe_dir = _train(root / "camoe", frame, grouping={"strategy": "modality2"})
    per_format = root / "per_format"
    for fmt in ("audio_music", "video_takeover"):
        _train(per_format / fmt, frame[frame["format"] == fmt], grouping={"strategy": "single"},
               model={**TINY, "name": "dcn_v2"})
    assert main(["generate", "--auctions", "1500", "--candidates", "6", "--rows", str(WORLD["rows"]), "--seed", "0",
                 "--output", str(root / "auctions"), "--no-progress"]) == 0
    frame.tail(3000).to_parquet(root / "calib.parquet")
    assert main(["calibrate", str(camoe_dir), "--data", str(root / "calib.parquet"), "--method", "platt"]) == 0
    return {"root": root, "pooled": pooled, "camoe": camoe_dir, "calibrated": root / "camoe_calibrated",
            "per_format": per_format, "auctions": root / "auctions"}


def test_generate_auctions_then_replay_two_models_prints_tables_and_writes_json_and_html(artifacts, capsys) -> None:
    out = artifacts["root"] / "replay"
    capsys.readouterr()
    code = main(["replay", str(artifacts["auctions"]), "--model", f"pooled={artifacts['pooled']}",
                 "--model", f"camoe={artifacts['camoe']}", "--bootstrap", "30", "--output", str(out),
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert "candidates scored per second" in text and "model camoe" in text and "logged policy" in text
    assert "lift of camoe over pooled" in text and "audio CTR" in text and "audio eCPC" in text
    data = json.loads((out / "replay.json").read_text())
    assert data["policies"] == [LOGGED, "pooled", "camoe"] and data["baseline"] == "pooled"
    assert data["requests"] == 1500 and data["candidates"] == 9000 and data["has_truth"] and data["has_propensity"]
    assert set(data["lifts"]) == {"camoe"}
    ctr = data["metrics"]["camoe"]["truth_ctr"]["total"]
    assert ctr["lo"] <= ctr["value"] <= ctr["hi"]
    html = (out / "replay.html").read_text()
    assert "Lift of camoe over pooled" in html and html.count("data:image/png;base64") >= 2


def test_calibration_both_replays_the_model_calibrated_and_uncalibrated_side_by_side(artifacts, capsys) -> None:
    out = artifacts["root"] / "replay_cal"
    code = main(["replay", str(artifacts["auctions"]), "--model", str(artifacts["calibrated"]), "--calibration",
                 "both", "--bootstrap", "10", "--output", str(out), "--no-progress"])
    assert code == 0
    data = json.loads((out / "replay.json").read_text())
    name = artifacts["calibrated"].name
    assert data["policies"] == [LOGGED, f"{name} (uncalibrated)", name]
    assert data["calibration_pairs"] == [[f"{name} (uncalibrated)", name]]
    assert "Calibration in the auction" in (out / "replay.html").read_text()
    # the same ranking within a task (Platt is monotone) but other prices: the spend differs
    raw, cal = data["metrics"][f"{name} (uncalibrated)"], data["metrics"][name]
    assert raw["truth_spend"]["total"]["value"] != pytest.approx(cal["truth_spend"]["total"]["value"], rel=1e-6)


def test_one_artifact_per_format_scores_each_candidate_with_its_formats_model(artifacts) -> None:
    model = load_replay_model(artifacts["per_format"])
    assert set(model.formats) == {"audio_music", "video_takeover"} and len(model.scorers) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = replay(artifacts["auctions"], [model], bootstrap=0)
    d = res.diagnostics[model.name]
    assert d["unknown_formats"] == ["audio_podcast", "display_homepage", "display_leaderboard", "video_podcast",
                                    "video_sponsored_session"]
    assert res.value(model.name, "wins", "audio_podcast") == 0 and res.value(model.name, "wins", "video_takeover") > 0
    assert d["requests_without_known_format"] > 0  # requests with neither format among their 6 candidates
    # each format's rows are scored by its own artifact: the same pCTR as that artifact alone
    import pyarrow.parquet as pq
    rows = pq.read_table(artifacts["auctions"] / "auctions.parquet").to_pandas()
    rows = rows[rows["format"].astype(str) == "video_takeover"].head(50)
    alone = camoe.CTRPipeline.load(artifacts["per_format"] / "video_takeover").scorer("onnx").score(rows).pctr
    np.testing.assert_allclose(model.score(rows, "t"), alone)


def test_a_folder_of_artifacts_not_named_after_their_format_is_refused(artifacts, tmp_path) -> None:
    import shutil
    shutil.copytree(artifacts["pooled"], tmp_path / "pooled")
    with pytest.raises(ValueError, match="named after the format .* 'pooled' is none of its model's formats"):
        load_replay_model(tmp_path)


def test_replay_errors_are_one_line_with_status_2(artifacts, tmp_path, capsys) -> None:
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "nothing"), "--model", str(artifacts["pooled"])]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,format,bid,shown,click,p_true\n1,audio_music,1,1,0,0.5\n1,audio_music,1,1,0,0.5\n")
    assert main(["replay", str(bad), "--model", str(artifacts["pooled"]), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "camoe replay: error:" in err
    assert main(["replay", str(artifacts["auctions"]), "--model", str(artifacts["pooled"]), "--reserve", "-1"]) == 2
    assert "a reserve price is >= 0" in capsys.readouterr().err


def test_open_bandit_candidates_are_the_campaign_items_at_the_logged_position() -> None:
    log = open_bandit_log(OPEN_BANDIT, "random", split="all", campaigns=("men",))
    assert len(log) == 10_000 * 34 and log["request_id"].nunique() == 10_000
    shown = log[log["shown"] == 1]
    assert len(shown) == 10_000 and np.allclose(shown["propensity"], 1 / 34)
    assert shown["click"].sum() == 46  # SOURCE.md: random/men has 46 clicks
    one = log[log["request_id"] == 0]
    assert one["item_id"].tolist() == [f"men:{k}" for k in range(34)] and one["format"].nunique() == 1
    assert one["user_feature_0"].nunique() == 1 and one["position"].nunique() == 1
    # the shown candidate carries the logged row's features: its item_affinity is the reader's for that row
    from camoe.data.datasets import read_open_bandit
    rows = read_open_bandit(OPEN_BANDIT, policies=("random",), campaigns=("men",))
    np.testing.assert_allclose(shown["item_affinity"].to_numpy(), rows["item_affinity"].to_numpy())
    assert (shown["item_id"].to_numpy() == rows["item_id"].to_numpy()).all()
    assert log.groupby("request_id")["item_affinity"].nunique().max() > 1  # candidates differ in affinity


def test_open_bandit_replay_of_a_model_on_both_behavior_logs(tmp_path, capsys) -> None:
    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "open_bandit.yaml"
    cfg = camoe.load_config(cfg_path, {"data": {"path": str(OPEN_BANDIT)}, "model": TINY,
                                       "train": {"epochs": 1, "max_steps": 3}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        camoe.train_and_evaluate(cfg, output_dir=tmp_path / "obd")
    capsys.readouterr()
    code = main(["replay", str(OPEN_BANDIT), "--model", str(tmp_path / "obd"), "--bootstrap", "20",
                 "--output", str(tmp_path / "rep"), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "Open Bandit 'random' log (test rows)" in text and "Open Bandit 'bts' log" in text
    for behavior in ("random", "bts"):
        data = json.loads((tmp_path / "rep" / behavior / "replay.json").read_text())
        assert not data["has_truth"] and data["has_propensity"]
        assert [g["name"] for g in data["groups"] if g["level"] == "campaign"] == ["all", "men", "women"]
        observed = data["metrics"][LOGGED]["dr_ctr"]["total"]["value"]
        assert 0 < observed < 0.02  # the logged CTR of the test rows (about 0.5%)
        assert data["metrics"]["obd"]["dr_ctr"]["total"]["value"] is not None


def test_a_model_as_the_logging_policy_writes_its_pctr_and_propensities(artifacts) -> None:
    import pyarrow.parquet as pq

    out = artifacts["root"] / "auctions_model_policy"
    assert main(["generate", "--auctions", "300", "--candidates", "4", "--rows", str(WORLD["rows"]), "--seed", "0",
                 "--logging-model", str(artifacts["pooled"]), "--exploration", "epsilon", "--epsilon", "0.4",
                 "--output", str(out), "--no-progress"]) == 0
    log = pq.read_table(out / "auctions.parquet").to_pandas()
    pctr = camoe.CTRPipeline.load(artifacts["pooled"]).scorer("onnx").score(log).pctr
    np.testing.assert_allclose(log["policy_pctr"], pctr, rtol=1e-6)
    # epsilon-greedy over eCPM = 1000 · bid · pCTR: the top candidate gets 1 − ε + ε/K, the others ε/K
    top = log.assign(e=log["bid"] * log["policy_pctr"]).groupby("request_id")["e"].transform("max") == \
        log["bid"] * log["policy_pctr"]
    np.testing.assert_allclose(log.loc[top, "propensity"], 0.6 + 0.1)
    np.testing.assert_allclose(log.loc[~top, "propensity"], 0.1)
