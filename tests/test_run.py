"""One row source, one split, one scorer: the in-memory and the streamed path give the same run, and every scoring
path gives the same pCTR.

* In memory vs streamed on one Parquet log (80% of its rows share 5 timestamps): the same rows in each split, the
  same encoder state, the same metrics (identical where both are exact; histogram metrics within the tolerance
  documented in ``camoe.evaluation.binned``), and both artifacts can be pruned, calibrated, exported and served.
* The same rows through ``camoe predict`` (eager and ONNX), ``camoe evaluate`` and the HTTP service get the same
  pCTR (<= 1e-6).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import camoe
from camoe.cli import main
from camoe.run import data_splits
from camoe.scoring import evaluate_source
from camoe.serving import create_app

SMALL = {"model": {"embedding_dim": 4, "num_experts": 3, "expert_hidden": [16], "tower_hidden": [8]},
         "train": {"epochs": 2, "batch_size": 256, "learning_rate": 0.01}}
EXACT_KEYS = ("rows", "positives", "ctr", "mean_pctr", "calibration_ratio", "logloss", "ne")


def _tied_log(folder: Path, rows: int = 6000) -> Path:
    """A Parquet log in 3 files (row groups of 500) where 80% of the rows share 5 timestamps, in file order."""
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=rows, seed=3))
    rng = np.random.default_rng(0)
    tied = rng.random(rows) < 0.8
    stamps = np.sort(rng.choice(frame["ts"].to_numpy(), 5, replace=False))
    frame.loc[tied, "ts"] = rng.choice(stamps, int(tied.sum()))
    frame["row_id"] = np.arange(rows)
    frame = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)  # files are not sorted by time
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(rows), 3)):
        frame.iloc[part].to_parquet(folder / f"part-{i}.parquet", index=False, row_group_size=500)
    return folder


def _config(path: Path, streaming: bool) -> camoe.RunConfig:
    return camoe.load_config(camoe.demo_config_path(), {
        **SMALL, "data": {"path": str(path), "streaming": {
            "enabled": streaming, "read_batch_rows": 700, "shuffle_buffer_rows": 100_000}},
    })


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("parity")
    log = _tied_log(tmp / "log")
    out: dict[str, object] = {"log": log, "tmp": tmp}
    for kind, streaming in (("memory", False), ("stream", True)):
        cfg = _config(log, streaming)
        with pytest.warns(UserWarning):  # the ties leave a split short; the warning says so
            pipe, metrics = camoe.train_and_evaluate(cfg, output_dir=tmp / kind)
        out[kind] = {"cfg": cfg, "pipe": pipe, "metrics": metrics, "artifact": tmp / kind}
    return out


def _row_ids(cfg: camoe.RunConfig) -> dict[str, list[int]]:
    splits = data_splits(cfg)
    return {s: [] if splits.get(s) is None else
            pd.concat(list(splits.get(s).chunks(["row_id"])))["row_id"].tolist() for s in ("train", "valid", "test")}


def test_in_memory_and_streamed_splits_hold_the_same_rows_when_most_rows_share_timestamps(runs) -> None:
    memory, stream = _row_ids(runs["memory"]["cfg"]), _row_ids(runs["stream"]["cfg"])
    assert memory == stream  # same rows, same order (file order) in every split
    assert sum(len(v) for v in memory.values()) == 6000 and memory["train"] and memory["test"]
    frame = pd.concat([pd.read_parquet(f) for f in sorted(Path(runs["log"]).glob("*.parquet"))])
    ts = frame.set_index("row_id")["ts"]
    for earlier, later in (("train", "valid"), ("train", "test"), ("valid", "test")):
        if memory[earlier] and memory[later]:  # no timestamp spans two splits
            assert ts[memory[earlier]].max() < ts[memory[later]].min()
    plan = runs["memory"]["metrics"]["split"]
    assert plan == runs["stream"]["metrics"]["split"] and plan["rows"]["train"] == len(memory["train"])


def test_in_memory_and_streamed_fits_hold_identical_encoder_state_and_weights(runs) -> None:
    a, b = runs["memory"]["pipe"], runs["stream"]["pipe"]
    assert a.encoder_.state_dict() == b.encoder_.state_dict()
    assert a.layout_.to_dict() == b.layout_.to_dict()
    # with a shuffle buffer larger than the training split both draw the same batches, so they train the same model
    for name, value in a.model_.state_dict().items():
        np.testing.assert_allclose(value.numpy(), b.model_.state_dict()[name].numpy(), rtol=0, atol=1e-6,
                                   err_msg=name)


def test_in_memory_and_streamed_metrics_agree_within_the_histogram_tolerance(runs) -> None:
    a, b = runs["memory"]["metrics"]["test"], runs["stream"]["metrics"]["test"]
    assert a["metric_precision"] == b["metric_precision"] == "exact (per row)"
    for section in ("formats", "tasks", "modality"):
        assert a[section].keys() == b[section].keys()
        for name, exact in a[section].items():
            for key, value in exact.items():
                assert b[section][name][key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (name, key)
    # the same split scored through score histograms (the path of splits above the exact-row budget)
    pipe = runs["stream"]["pipe"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # formats without clicks in this small split warn; NaN compares as NaN
        binned = evaluate_source(pipe.scorer(), data_splits(runs["stream"]["cfg"]).test, "test",
                                 attributes=pipe.format_attributes_, exact_max_rows=0)
    assert binned["metric_precision"].startswith("score histograms")
    for name, exact in a["tasks"].items():
        for key in EXACT_KEYS:  # sums stay exact, up to float32 pCTRs of two scoring passes (batches blocked
            # differently: ~1e-7 per row, a few 1e-9 on a mean)
            assert binned["tasks"][name][key] == pytest.approx(exact[key], rel=1e-8, nan_ok=True), (name, key)
        for key in ("auc_pr", "auc_roc"):  # scores rounded to 2^-12 relative tie up: a few 1e-3 on small splits
            if not math.isnan(exact[key]):
                assert abs(binned["tasks"][name][key] - exact[key]) < 5e-3, (name, key)


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_both_artifacts_can_be_pruned_calibrated_exported_and_served(runs, kind: str) -> None:
    artifact = Path(runs[kind]["artifact"])
    tmp = Path(runs["tmp"]) / f"ops-{kind}"
    sample = pd.read_parquet(next(Path(runs["log"]).glob("*.parquet"))).head(400)
    sample_path = tmp / "sample.parquet"
    tmp.mkdir()
    sample.to_parquet(sample_path, index=False)
    assert main(["prune", str(artifact), "--top-k", "1", "--output", str(tmp / "pruned")]) == 0
    assert main(["calibrate", str(artifact), "--data", str(sample_path), "--output", str(tmp / "calibrated")]) == 0
    assert main(["export", str(artifact), "--output", str(tmp / "onnx")]) == 0
    assert (tmp / "onnx" / "model.onnx").is_file()
    for folder in (artifact, tmp / "pruned", tmp / "calibrated"):
        pipe = camoe.CTRPipeline.load(folder)
        client = TestClient(create_app(pipe.scorer("onnx")))
        body = {"candidates": [{"format": "audio_music", "device": "ios"}, {"format": "video_takeover"}]}
        answer = client.post("/v1/score", json=body)
        assert answer.status_code == 200, answer.text
        served = [s["pctr"] for s in answer.json()["scores"]]
        assert all(0 < p < 1 for p in served)


def test_predict_eager_and_onnx_evaluate_and_service_give_the_same_pctr(runs) -> None:
    artifact = Path(runs["memory"]["artifact"])
    tmp = Path(runs["tmp"]) / "same-pctr"
    tmp.mkdir()
    rows = pd.read_parquet(next(Path(runs["log"]).glob("*.parquet"))).head(300)
    data = tmp / "rows.parquet"
    rows.to_parquet(data, index=False)
    for backend in ("torch", "onnx"):
        assert main(["predict", str(artifact), str(data), "--output", str(tmp / f"{backend}.csv"),
                     "--backend", backend]) == 0
    eager = pd.read_csv(tmp / "torch.csv")
    onnx = pd.read_csv(tmp / "onnx.csv")
    np.testing.assert_allclose(onnx["pctr"], eager["pctr"], rtol=0, atol=1e-6)
    pipe = camoe.CTRPipeline.load(artifact)
    np.testing.assert_allclose(pipe.predict_proba(rows), eager["pctr"], rtol=0, atol=1e-9)
    # the service (both backends), one candidate per row with every feature of the row
    names = list(dict.fromkeys(c for f in pipe.config.schema.features for c in f.source_columns))
    candidates = []
    for _, r in rows.iterrows():
        cand = {"format": r["format"]}
        for n in names:
            v = r[n]
            cand[n] = [x for x in v.split("|") if x] if n == "interests" else (v.item() if hasattr(v, "item") else v)
        candidates.append(cand)
    for backend in ("torch", "onnx"):
        client = TestClient(create_app(pipe.scorer(backend), max_candidates=1000))
        served = client.post("/v1/score", json={"candidates": candidates}).json()["scores"]
        np.testing.assert_allclose([s["pctr"] for s in served], eager["pctr"], rtol=0, atol=1e-6)
    # evaluate scores the same rows: its per-format mean pCTR is the mean of predict's pCTRs
    assert main(["evaluate", str(artifact), "--data", str(data), "--output", str(tmp / "eval")]) == 0
    metrics = json.loads((tmp / "eval" / "metrics.json").read_text())
    for fmt, m in metrics["formats"].items():
        mine = eager.loc[eager["format"] == fmt, "pctr"]
        assert m["rows"] == len(mine)
        assert m["mean_pctr"] == pytest.approx(mine.mean(), rel=0, abs=1e-6)


def test_date_string_timestamps_split_the_same_in_memory_and_streamed(tmp_path: Path) -> None:
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=3000, seed=4))
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame["row_id"] = np.arange(len(frame))
    frame.to_parquet(tmp_path / "log.parquet", index=False, row_group_size=400)
    memory, stream = _row_ids(_config(tmp_path / "log.parquet", False)), _row_ids(_config(tmp_path / "log.parquet", True))
    assert memory == stream and all(memory.values())
    plan = data_splits(_config(tmp_path / "log.parquet", True)).plan.to_dict()
    assert plan["cut_points"]["c1"].startswith("2026-01-") and plan["rows"]["train"] == len(memory["train"])
