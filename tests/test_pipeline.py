"""CTRPipeline end to end: training on CASES rows (B01, B02, B07, B08, B20, B24, B26), artifact round trips (B30),
input validation, and one epoch on the 20k-row synthetic log."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import camoe
from camoe.artifact import ArtifactError
from camoe.evaluation import UndefinedMetricWarning
from camoe.training import masked_bce

HEADER = "ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click"

B01_VAL = f"""{HEADER}
1700000000,u1,a1,audio,ios,music,0.5,10,1
1700000001,u2,a2,audio,android,news,0.4,3,0
1700000002,u3,a3,video,ios,sports,0.9,20,0
1700000003,u4,a4,video,web,sports,0.8,1,0
1700000004,u5,a5,display,web,,0.1,0,1
1700000005,u6,a6,display,ios,news,0.2,2,0
"""

B02_ROWS = f"""{HEADER}
1700000000,u1,a1,audio,ios,music,0.5,10,0
1700000001,u2,a2,audio,ios,music,0.5,9,0
1700000002,u3,a3,audio,web,news,0.3,30,1
1700000003,u4,a4,audio,web,news,0.3,31,1
"""

B20_ROWS = f"""{HEADER}
1700000000,u1,a1,display,ios,music,0.5,10,1
1700000001,u2,a2,display,ios,news,0.4,3,0
1700000002,u3,a3,audio,web,news,0.3,4,0
1700000003,u4,a4,video,web,sports,0.8,1,1
"""

B09_SCORE = f"""{HEADER}
1700000200,u999,a999,audio,smart_tv,podcasts,0.5,5,0
"""

METRIC_KEYS = {"auc_pr", "auc_roc", "logloss", "ne", "ece", "calibration_ratio", "rows", "positives", "oracle_auc_pr"}


def _same_metrics(a: object, b: object) -> bool:
    """Exact equality of nested metric dicts, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_metrics(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _score_rows(b04_rows: pd.DataFrame, rows) -> pd.DataFrame:
    return pd.concat([b04_rows, rows(B09_SCORE)], ignore_index=True)


# ----------------------------------------------------------------------------- basic fit / predict / evaluate
def test_fit_predict_evaluate_on_b04_rows(make_config, b04_rows) -> None:
    pipe = camoe.CTRPipeline(make_config()).fit(b04_rows)
    assert pipe.layout_ is not None and pipe.layout_.tasks == ("audio", "video", "display")
    pctr = pipe.predict_proba(b04_rows)
    assert pctr.shape == (8,)
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    task_p = pipe.predict_task_proba(b04_rows)
    assert task_p.shape == (8, 3)
    own = task_p[np.arange(8), pipe.layout_.format_task_index[pipe.layout_.format_index(b04_rows["format"].to_numpy())]]
    assert np.array_equal(pctr, own)  # each row scored by its own format's head
    metrics = pipe.evaluate(b04_rows, split="train")
    assert set(metrics["tasks"]) == {"audio", "video", "display"}
    assert metrics["split"] == "train"
    for task in ("audio", "video", "display"):
        m = metrics["tasks"][task]
        assert METRIC_KEYS <= set(m)
        assert math.isfinite(m["auc_roc"]) and math.isfinite(m["logloss"])
    assert metrics["tasks"]["audio"]["rows"] == 3 and metrics["tasks"]["display"]["positives"] == 1


def test_unfitted_pipeline_refuses_to_score(make_config, b04_rows) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        camoe.CTRPipeline(make_config()).predict_proba(b04_rows)


def test_b07_dense_features_in_micros_scale_to_same_inputs(make_config, b04_rows) -> None:
    """Standardisation makes the unit irrelevant: bid in micros and dwell in ms give the same dense inputs."""
    micros = b04_rows.assign(bid_price=b04_rows["bid_price"] * 1e6, dwell_sec=b04_rows["dwell_sec"] * 1000)
    plain = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    big = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(micros)
    a = plain.encoder_.transform(b04_rows).dense
    b = big.encoder_.transform(micros).dense
    assert np.allclose(a, b, atol=1e-5)
    pctr = big.predict_proba(micros)
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    assert np.allclose(pctr, plain.predict_proba(b04_rows), atol=1e-4)


# ----------------------------------------------------------------------------- B02 / B20: training on one-label batches
def test_b02_batch_size_two_on_rows_sorted_by_click_gives_finite_losses(make_config, rows) -> None:
    frame = rows(B02_ROWS)
    cfg = make_config(train={"batch_size": 2, "shuffle": False, "epochs": 2, "eval_every_steps": 1, "patience": 10})
    entries: list[dict] = []
    pipe = camoe.CTRPipeline(cfg).fit(frame, valid=frame, log=entries.append)
    assert pipe.train_result_ is not None and pipe.train_result_.steps == 4
    assert len(entries) == 4  # one entry per step
    for e in entries:
        assert e["total"] is not None and math.isfinite(e["total"])
        assert e["loss/audio"] is not None and math.isfinite(e["loss/audio"])
        assert math.isfinite(e["valid_score"])
    first_batch_labels = frame["click"].to_numpy()[:2]
    assert first_batch_labels.tolist() == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        m = camoe.evaluation.binary_metrics(first_batch_labels, pipe.predict_proba(frame.iloc[:2]))
    assert math.isfinite(m["logloss"])


def test_b20_first_batch_of_only_display_rows_logs_no_rows_for_other_tasks(make_config, rows) -> None:
    cfg = make_config(train={"batch_size": 2, "shuffle": False, "epochs": 1, "eval_every_steps": 1})
    entries: list[dict] = []
    camoe.CTRPipeline(cfg).fit(rows(B20_ROWS), log=entries.append)
    first = entries[0]
    assert math.isfinite(first["total"])
    assert first["loss/audio"] is None and first["loss/video"] is None  # "no rows", not NaN
    assert math.isfinite(first["loss/display"])
    second = entries[1]
    assert second["loss/display"] is None
    assert math.isfinite(second["loss/audio"]) and math.isfinite(second["loss/video"])


def test_b20_sgd_step_on_display_rows_leaves_audio_and_video_towers_unchanged(make_config, rows) -> None:
    frame = rows(B20_ROWS)
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(frame)
    model, layout = pipe.model_, pipe.layout_
    model.train()
    batch = pipe.encode(frame.iloc[:2], "b20")  # the two display rows
    display = layout.tasks.index("display")
    others = [layout.tasks.index("audio"), layout.tasks.index("video")]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    mask = torch.as_tensor(layout.mask)[batch.format_ids]  # (B, T)
    loss = masked_bce(model(batch.cat_ids, batch.multi_ids, batch.dense).logits, batch.labels, mask)
    assert torch.isfinite(loss.total)
    assert loss.task_rows[others].tolist() == [0.0, 0.0]
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.0)
    opt.zero_grad()
    loss.total.backward()
    opt.step()
    for i in range(len(model.towers.weights)):
        for name in (f"towers.weights.{i}", f"towers.biases.{i}"):
            now = dict(model.named_parameters())[name]
            assert torch.equal(now[others], before[name][others]), name
    last = f"towers.weights.{len(model.towers.weights) - 1}"
    assert not torch.equal(dict(model.named_parameters())[last][display], before[last][display])


def test_b01_training_with_single_class_validation_task_does_not_abort(make_config, b04_rows, rows) -> None:
    valid = rows(B01_VAL)  # video slice has no positives
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 2})).fit(b04_rows, valid=valid)
    hist = pipe.train_result_.history
    assert len(hist) == 2
    assert all(math.isfinite(e["valid_score"]) for e in hist)  # mean AUC-PR over audio, display
    assert math.isnan(hist[-1]["valid"]["auc_pr"]["video"])
    with pytest.warns(UndefinedMetricWarning, match="video"):
        metrics = pipe.evaluate(valid, split="valid")
    assert math.isnan(metrics["tasks"]["video"]["auc_roc"])
    assert math.isfinite(metrics["tasks"]["audio"]["auc_roc"])
    assert metrics["macro"]["skipped"]["auc_roc"] == ["video"]


def test_b08_l2_embedding_logged_as_its_own_part(make_config, b04_rows) -> None:
    entries: list[dict] = []
    camoe.CTRPipeline(make_config(train={"l2_embedding": 1e-3, "epochs": 1, "batch_size": 4,
                                         "eval_every_steps": 1})).fit(b04_rows, log=entries.append)
    assert len(entries) == 2
    values = [e["l2_embedding"] for e in entries]
    assert all(v is not None and v > 0 and math.isfinite(v) for v in values)
    assert values[0] != values[1]


def test_b08_non_finite_loss_part_stops_training_naming_part_and_step(make_config, b04_rows) -> None:
    cfg = make_config(train={"l2_embedding": 1e39, "epochs": 1})  # the L2 term overflows float32 at step 1
    with pytest.raises(FloatingPointError, match=r"step 1 .*'l2_embedding'"):
        camoe.CTRPipeline(cfg).fit(b04_rows)


def test_b08_large_l2_and_learning_rate_never_run_silently_with_nan(make_config, b04_rows) -> None:
    entries: list[dict] = []
    cfg = make_config(train={"l2_embedding": 1e6, "learning_rate": 1.0, "epochs": 2, "eval_every_steps": 1})
    try:
        pipe = camoe.CTRPipeline(cfg).fit(b04_rows, log=entries.append)
    except FloatingPointError as err:  # a clear stop naming a loss part, or the diverged validation pCTR
        assert "part '" in str(err) or "training diverged" in str(err)
    else:
        assert all(math.isfinite(v) for e in entries for k, v in e.items() if k == "l2_embedding" or k == "total")
        try:  # a diverged model's pCTR is in (0, 1) or refused, never NaN or exactly 0 / 1
            pctr = pipe.predict_proba(b04_rows)
        except ValueError as err:
            assert "saturated pCTR" in str(err)
        else:
            assert ((pctr > 0) & (pctr < 1)).all()


# ----------------------------------------------------------------------------- B26 determinism
def test_b26_same_seed_with_dropout_gives_bit_identical_results(make_config, b04_rows, rows) -> None:
    cfg = make_config(model={"dropout": 0.3}, train={"seed": 7, "epochs": 2, "batch_size": 3, "shuffle": True})
    score = _score_rows(b04_rows, rows)
    runs = []
    for _ in range(2):
        pipe = camoe.CTRPipeline(cfg).fit(b04_rows, valid=b04_rows)
        runs.append((pipe.predict_proba(score), pipe.evaluate(b04_rows), pipe.train_result_.history))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert _same_metrics(runs[0][1], runs[1][1])
    assert _same_metrics(runs[0][2], runs[1][2])
    other = camoe.CTRPipeline(make_config(model={"dropout": 0.3}, train={"seed": 8, "epochs": 2, "batch_size": 3}))
    assert not np.array_equal(other.fit(b04_rows).predict_proba(score), runs[0][0])


# ----------------------------------------------------------------------------- B24 downsampling correction
def test_b24_negative_sampling_rate_applied_exactly_once(tmp_path, make_config, b04_rows) -> None:
    plain = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    sampled = camoe.CTRPipeline(make_config(train={"epochs": 1, "negative_sampling_rate": 0.1})).fit(b04_rows)
    p = plain.predict_proba(b04_rows)
    q = sampled.predict_proba(b04_rows)
    assert np.allclose(q, camoe.correct_downsampling(p, 0.1), rtol=1e-12, atol=0)
    assert np.allclose(sampled.predict_task_proba(b04_rows), camoe.correct_downsampling(
        plain.predict_task_proba(b04_rows), 0.1), rtol=1e-12, atol=0)
    sampled.save(tmp_path / "m")
    assert np.array_equal(camoe.CTRPipeline.load(tmp_path / "m").predict_proba(b04_rows), q)
    manifest_config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert manifest_config["train"]["negative_sampling_rate"] == 0.1


# ----------------------------------------------------------------------------- artifact round trip
def test_artifact_round_trip_scores_identically(tmp_path, make_config, b04_rows, rows) -> None:
    pipe = camoe.CTRPipeline(make_config()).fit(b04_rows)
    folder = pipe.save(tmp_path / "model")
    for name in ("model.safetensors", "config.json", "encoder.json", "tasks.json", "manifest.json"):
        assert (folder / name).is_file(), name
    loaded = camoe.CTRPipeline.load(folder)
    score = _score_rows(b04_rows, rows)
    assert np.array_equal(loaded.predict_proba(score), pipe.predict_proba(score))
    assert np.array_equal(loaded.predict_task_proba(score), pipe.predict_task_proba(score))
    assert loaded.layout_.tasks == pipe.layout_.tasks
    assert _same_metrics(loaded.evaluate(b04_rows), pipe.evaluate(b04_rows))


def test_artifact_with_metrics_round_trip(tmp_path, make_config, b04_rows) -> None:
    """An artifact saved with metrics.json (what ``camoe train`` writes) must load and score identically."""
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    metrics = pipe.evaluate(b04_rows)
    pipe.save(tmp_path / "model", metrics=metrics)
    assert (tmp_path / "model" / "metrics.json").is_file()
    loaded = camoe.CTRPipeline.load(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(b04_rows), pipe.predict_proba(b04_rows))
    parts = camoe.artifact.load_artifact(tmp_path / "model")
    assert parts.metrics is not None
    assert parts.metrics["tasks"]["audio"]["rows"] == 3


def test_altered_weights_byte_refused_on_load(tmp_path, make_config, b04_rows) -> None:
    folder = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows).save(tmp_path / "model")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last tensor byte
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors"):
        camoe.CTRPipeline.load(folder)


def test_altered_config_and_missing_files_refused(tmp_path, make_config, b04_rows) -> None:
    folder = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows).save(tmp_path / "model")
    cfg_path = folder / "config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"epochs": 1', '"epochs": 3'))
    with pytest.raises(ArtifactError, match="config.json"):
        camoe.CTRPipeline.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest"):
        camoe.CTRPipeline.load(folder)
    with pytest.raises(ArtifactError):
        camoe.CTRPipeline.load(tmp_path / "nowhere")


def test_b28_hashed_model_loaded_in_new_process_scores_identically(tmp_path, config_dict, b04_rows) -> None:
    cfg = config_dict()
    cfg["schema"]["features"][0] = {"name": "user_id", "type": "categorical", "encoding": "hash", "hash_buckets": 4}
    pipe = camoe.CTRPipeline(camoe.load_config(cfg)).fit(b04_rows)
    folder = pipe.save(tmp_path / "model")
    b04_rows.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import sys, numpy as np, camoe\n"
        "pipe = camoe.CTRPipeline.load(sys.argv[1])\n"
        "np.save(sys.argv[3], pipe.predict_proba(camoe.read_table(sys.argv[2])))\n"
    )
    out = tmp_path / "scores.npy"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "rows.csv"), str(out)],
                   env=env, check=True, capture_output=True, timeout=120)
    assert np.array_equal(np.load(out), pipe.predict_proba(camoe.read_table(tmp_path / "rows.csv")))


# ----------------------------------------------------------------------------- input validation
def test_unknown_format_in_training_data_lists_known_formats(make_config, b04_rows) -> None:
    bad = b04_rows.assign(format=["audio", "audio", "podcast", "video", "video", "video", "display", "display"])
    with pytest.raises(ValueError) as info:
        camoe.CTRPipeline(make_config()).fit(bad)
    msg = str(info.value)
    assert "podcast" in msg
    assert all(f in msg for f in ("audio", "video", "display"))


def test_unknown_format_at_scoring_lists_known_formats(make_config, b04_rows) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    score = b04_rows.iloc[:3].assign(format=["audio", "native", "native"])
    with pytest.raises(ValueError, match="native") as info:
        pipe.predict_proba(score, source="score.csv")
    msg = str(info.value)
    assert "2 rows" in msg
    assert "['audio', 'video', 'display']" in msg


def test_formats_taken_from_data_without_formats_table(config_dict, b04_rows) -> None:
    cfg = config_dict(grouping={"strategy": "per_format"})
    cfg["formats"] = None
    pipe = camoe.CTRPipeline(camoe.load_config(cfg)).fit(b04_rows)
    assert set(pipe.layout_.tasks) == {"audio", "video", "display"}


def test_labels_outside_zero_one_raise_with_counts(make_config, b04_rows) -> None:
    bad = b04_rows.assign(click=[1, 0, 2, 1, 0, 2, 1, -1])
    with pytest.raises(ValueError) as info:
        camoe.CTRPipeline(make_config()).fit(bad)
    msg = str(info.value)
    assert "click" in msg
    assert "3 rows" in msg
    assert "'2': 2" in msg and "'-1': 1" in msg


def test_missing_label_or_format_column_named(make_config, b04_rows) -> None:
    with pytest.raises(ValueError, match="click"):
        camoe.CTRPipeline(make_config()).fit(b04_rows.drop(columns=["click"]))
    with pytest.raises(ValueError, match="format"):
        camoe.CTRPipeline(make_config()).fit(b04_rows.drop(columns=["format"]))
    with pytest.raises(ValueError, match="empty in 1 rows"):
        camoe.CTRPipeline(make_config()).fit(b04_rows.assign(format=[*b04_rows["format"][:7], ""]))


def test_predict_does_not_need_labels(make_config, b04_rows) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    pctr = pipe.predict_proba(b04_rows.drop(columns=["click"]))
    assert np.array_equal(pctr, pipe.predict_proba(b04_rows))


# ----------------------------------------------------------------------------- synthetic log
def test_synthetic_log_one_epoch_metrics_structure(synthetic_log) -> None:
    assert len(synthetic_log) == 20_000
    overrides = {
        "train": {"epochs": 1, "batch_size": 1024},
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
    }
    cfg = camoe.load_config(camoe.demo_config_path(), overrides)
    splits = camoe.split_frame(synthetic_log, cfg.data.split, cfg.schema.timestamp)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [14_000, 2_000, 4_000]
    pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # rare formats may have no clicks in 4,000 rows
        metrics = pipe.evaluate(splits["test"], split="test")
    assert {"formats", "tasks", "modality"} <= set(metrics)
    assert set(metrics["tasks"]) == {"audio", "video", "display"}
    assert set(metrics["modality"]) == {"audio", "video", "display"}
    assert len(metrics["formats"]) == 7
    for section in ("formats", "tasks", "modality"):
        for name, m in metrics[section].items():
            assert METRIC_KEYS <= set(m), (section, name)
    assert sum(m["rows"] for m in metrics["tasks"].values()) == 4_000
    for m in metrics["tasks"].values():
        assert math.isfinite(m["logloss"]) and math.isfinite(m["ece"])
        if m["positives"] > 0:
            assert 0 < m["oracle_auc_pr"] <= 1
    pctr = pipe.predict_proba(splits["test"])
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()


def test_bf16_autocast_trains_with_fp32_weights_and_loss_close_to_fp32(synthetic_log) -> None:
    """train.precision: bf16 runs the forward pass under torch.autocast; weights, loss and scores stay float32."""
    cfg = {"train": {"epochs": 1, "batch_size": 1024},
           "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]}}
    splits = camoe.split_frame(synthetic_log, camoe.load_config(camoe.demo_config_path()).data.split, "ts")
    results = {}
    for precision in ("fp32", "bf16"):
        run = camoe.load_config(camoe.demo_config_path(), {**cfg, "train": {**cfg["train"], "precision": precision}})
        pipe = camoe.CTRPipeline(run).fit(splits["train"], splits["valid"])
        assert all(p.dtype == torch.float32 for p in pipe.model_.parameters())
        pctr = pipe.predict_proba(splits["test"])
        assert pctr.dtype == np.float64 and np.isfinite(pctr).all()
        results[precision] = (pipe.train_result_.history[-1]["total"], pctr)
    assert results["bf16"][0] == pytest.approx(results["fp32"][0], rel=0.05)  # bf16 keeps ~3 significant digits
    assert not np.array_equal(results["bf16"][1], results["fp32"][1])  # autocast did change the arithmetic
    with pytest.raises(camoe.ConfigError, match="precision"):
        camoe.load_config(camoe.demo_config_path(), {"train": {"precision": "fp16"}})


# ----------------------------------------------------------------------------- data checks before and after training
def test_a_task_without_clicks_is_warned_by_name_and_refused_under_strict_checks(make_config, b04_rows) -> None:
    rows = b04_rows.assign(click=np.where(b04_rows["format"] == "display", 0, b04_rows["click"]))
    with pytest.warns(UserWarning, match=r"task 'display' has 0 clicks in its 2 training rows"):
        camoe.CTRPipeline(make_config(train={"epochs": 1, "min_task_clicks": 1})).fit(rows)
    with pytest.raises(ValueError, match=r"strict_data_checks.*task 'display' has 0 clicks"):
        camoe.CTRPipeline(make_config(train={"epochs": 1, "min_task_clicks": 1, "strict_data_checks": True})).fit(rows)


def test_a_model_that_collapses_to_a_constant_output_is_flagged(synthetic_log, tmp_path) -> None:
    cfg = camoe.load_config(camoe.demo_config_path(), {
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 2, "batch_size": 512, "weight_decay": 90.0, "learning_rate": 0.01}})
    with pytest.warns(UserWarning, match=r"near-constant pCTR"):
        _, metrics = camoe.train_and_evaluate(cfg, frame=synthetic_log, output_dir=tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["warnings"] and all("near-constant" in w for w in saved["warnings"])
    assert set(saved["pctr_quantiles"]) == {"audio", "video", "display"}
    collapsed = saved["pctr_quantiles"]["audio"]
    assert collapsed["p99"] - collapsed["p1"] < 0.01 * collapsed["p50"]
