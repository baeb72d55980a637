"""Post-hoc calibration stored in the artifact: sklearn equivalence, round trip, ONNX and service apply it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

import camoe
from camoe.calibration import PosthocCalibration
from camoe.serving import create_app


def test_stored_maps_equal_sklearn_predictions() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.3, 2000)
    y = (rng.uniform(size=2000) < p * 0.5).astype(float)
    task = rng.integers(0, 2, 2000)
    grid = np.concatenate([rng.uniform(0, 0.5, 500), [0.0, 1e-9, 0.999]])  # inside and outside the fitted range
    iso = PosthocCalibration.fit("isotonic", p, y, task, ["a", "b"])
    platt = PosthocCalibration.fit("platt", p, y, task, ["a", "b"])
    for t in (0, 1):
        sel = task == t
        ref = IsotonicRegression(y_min=1e-7, y_max=1 - 1e-7, out_of_bounds="clip").fit(p[sel], y[sel]).predict(grid)
        np.testing.assert_allclose(iso.apply(grid, np.full(len(grid), t), ["a", "b"]), ref, atol=1e-12)
        logit = np.log(np.clip(p[sel], 1e-7, 1 - 1e-7) / (1 - np.clip(p[sel], 1e-7, 1 - 1e-7)))
        lr = LogisticRegression(C=1e6).fit(logit[:, None], y[sel])
        g = np.clip(grid, 1e-7, 1 - 1e-7)
        ref = lr.predict_proba(np.log(g / (1 - g))[:, None])[:, 1]
        np.testing.assert_allclose(platt.apply(grid, np.full(len(grid), t), ["a", "b"]), ref, atol=1e-9)
        # isotonic (pool adjacent violators) matches total clicks on its fitting rows: calibration ratio 1
        assert iso.apply(p[sel], task[sel], ["a", "b"]).sum() == pytest.approx(y[sel].sum(), rel=1e-6)
        assert (iso.apply(grid, np.full(len(grid), t), ["a", "b"]) > 0).all()  # never exactly 0 (infinite logloss)
    with pytest.raises(ValueError, match="isotonic"):
        PosthocCalibration.fit("beta", p, y, task, ["a", "b"])
    with pytest.warns(UserWarning, match=r"\['b'\]"):
        one_class = PosthocCalibration.fit("platt", p, np.where(task == 1, 0.0, y), task, ["a", "b"])
    assert "b" not in one_class.params


def test_artifact_calibration_applies_in_eager_onnx_and_service(make_config, b04_rows, tmp_path) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 2})).fit(b04_rows)
    raw = pipe.predict_proba(b04_rows)
    pipe.calibrate(b04_rows, "isotonic", "b04")
    calibrated = pipe.predict_proba(b04_rows)
    assert not np.allclose(raw, calibrated)
    # isotonic on its own fitting rows: every task's calibration ratio is 1
    tasks = pipe.evaluate(b04_rows)["tasks"]
    assert all(m["calibration_ratio"] == pytest.approx(1.0) for m in tasks.values())
    loaded = camoe.CTRPipeline.load(pipe.save(tmp_path / "iso"))
    np.testing.assert_array_equal(loaded.predict_proba(b04_rows), calibrated)
    # Platt through ONNX and the service: the same scoring head, the same stored map
    calibrated = pipe.calibrate(b04_rows, "platt", "b04").predict_proba(b04_rows)
    loaded = camoe.CTRPipeline.load(pipe.save(tmp_path / "platt"))
    np.testing.assert_array_equal(loaded.predict_proba(b04_rows), calibrated)
    onnx = loaded.scorer("onnx")
    np.testing.assert_allclose(onnx.score(b04_rows).pctr, calibrated, atol=1e-6)
    client = TestClient(create_app(onnx))
    row = b04_rows.iloc[0]
    body = {"candidates": [{"format": row["format"], "user_id": row["user_id"], "ad_id": row["ad_id"],
                            "device": row["device"], "interests": row["interests"].split("|"),
                            "bid_price": float(row["bid_price"]), "dwell_sec": int(row["dwell_sec"])}]}
    served = client.post("/v1/score", json=body).json()["scores"][0]["pctr"]
    assert served == pytest.approx(calibrated[0], abs=1e-6)


def test_cli_calibrate_updates_the_artifact(make_config, b04_rows, tmp_path) -> None:
    folder = camoe.CTRPipeline(make_config(train={"epochs": 2})).fit(b04_rows).save(tmp_path / "model")
    b04_rows.to_csv(tmp_path / "valid.csv", index=False)
    out = subprocess.run([sys.executable, "-m", "camoe", "calibrate", str(folder), "--method", "isotonic", "--data",
                          str(tmp_path / "valid.csv")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "calib ratio" in out.stdout
    assert camoe.CTRPipeline.load(tmp_path / "model_calibrated").calibration_.method == "isotonic"
    assert camoe.CTRPipeline.load(folder).calibration_ is None  # the source artifact is left as it was
