"""Inference-time expert masking (`camoe prune`): selection, weight slicing, artifact and ONNX parity, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import camoe
from camoe.config import ConfigError
from camoe.model import build_model
from camoe.prune import prune_pipeline, select_experts

GATES = {"audio": [0.5, 0.3, 0.2, 0.0], "video": [0.1, 0.1, 0.2, 0.6], "display": [0.25, 0.25, 0.4, 0.1]}
TASKS = ["audio", "video", "display"]


def test_select_experts_top_k_and_threshold() -> None:
    assert select_experts(GATES, TASKS, top_k=1).astype(int).tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    # ties keep the lower expert index first
    assert select_experts(GATES, TASKS, top_k=2).astype(int).tolist() == [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]]
    # a threshold no expert reaches still keeps the top one
    assert select_experts(GATES, TASKS, threshold=0.3).astype(int).tolist() == [[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    assert select_experts(GATES, TASKS, top_k=4).all()
    for kwargs in ({"top_k": 0}, {"top_k": 5}, {"threshold": 1.5}, {}, {"top_k": 1, "threshold": 0.1}):
        with pytest.raises(ValueError):
            select_experts(GATES, TASKS, **kwargs)
    with pytest.raises(ValueError, match="video"):
        select_experts({"audio": GATES["audio"]}, ["audio", "video"], top_k=1)


@pytest.fixture
def fitted(make_config, b04_rows) -> camoe.CTRPipeline:
    cfg = make_config(model={"num_experts": 4}, train={"epochs": 3})
    return camoe.CTRPipeline(cfg).fit(b04_rows, b04_rows)


def _probs_with_mask(pipe: camoe.CTRPipeline, keep: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """Reference: the unpruned weights with each task's gate masked to its kept experts (nothing removed)."""
    cfg = pipe.config.model.model_copy(update={"gate_mask": keep.tolist()})
    model = build_model(cfg, pipe.encoder_.input_spec_, len(pipe.layout_.tasks))
    model.load_state_dict(pipe.model_.state_dict())
    model.eval()
    batch = pipe.encode(rows, labels=False)
    with torch.no_grad():
        logits = model(batch.cat_ids, batch.multi_ids, batch.dense).logits.double()
    task = torch.as_tensor(pipe.layout_.format_task_index)[batch.format_ids]
    return torch.sigmoid(logits.gather(1, task[:, None]).squeeze(1)).numpy()


def test_pruned_model_equals_masked_gates_and_drops_unused_experts(fitted, b04_rows) -> None:
    keep = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=bool)  # expert 1 and 2: used by no task
    pruned = prune_pipeline(fitted, keep)
    assert pruned.config.model.num_experts == 2
    assert pruned.config.model.gate_mask == [[True, False], [False, True], [True, False]]
    assert pruned.model_.experts.mlp.weights[0].shape[0] == 2
    np.testing.assert_allclose(pruned.predict_proba(b04_rows), _probs_with_mask(fitted, keep, b04_rows), atol=1e-6)
    # the pruned scores differ from the unpruned ones (the masking did something)
    assert np.abs(pruned.predict_proba(b04_rows) - fitted.predict_proba(b04_rows)).max() > 1e-6
    # keeping every expert reproduces the unpruned model
    full = prune_pipeline(fitted, np.ones((3, 4), dtype=bool))
    np.testing.assert_allclose(full.predict_proba(b04_rows), fitted.predict_proba(b04_rows), atol=1e-6)


def test_pruned_artifact_round_trip_and_onnx_parity(fitted, b04_rows, tmp_path) -> None:
    pruned = prune_pipeline(fitted, select_experts(fitted.diagnostics_["mean_gate_weight"], TASKS, top_k=1))
    folder = pruned.save(tmp_path / "pruned")
    loaded = camoe.CTRPipeline.load(folder)
    expected = pruned.predict_proba(b04_rows)
    assert np.array_equal(loaded.predict_proba(b04_rows), expected)
    scorer = loaded.scorer("onnx")
    for rows in (b04_rows, b04_rows.iloc[[0]], b04_rows.iloc[[3]], b04_rows[b04_rows.format == "video"]):
        # batches with all tasks, one row, one format: only the present tasks' experts run, scores unchanged
        np.testing.assert_allclose(scorer.score(rows).pctr, expected[rows.index.to_numpy()], atol=1e-6)


def test_models_that_own_their_experts_are_refused(make_config, b04_rows) -> None:
    pipe = camoe.CTRPipeline(make_config(model={"name": "cgc"}, train={"epochs": 1})).fit(b04_rows)
    with pytest.raises(ValueError, match="cannot be pruned"):
        prune_pipeline(pipe, np.ones((3, pipe.model_.experts.num_experts), dtype=bool))


def test_gate_mask_of_the_wrong_shape_is_a_config_error(config_dict, b04_rows) -> None:
    with pytest.raises(ConfigError, match="gate_mask"):
        camoe.load_config(config_dict(model={"num_experts": 3, "gate_mask": [[True, False]]}))
    with pytest.raises(ConfigError, match="gate_mask"):
        camoe.load_config(config_dict(model={"num_experts": 2, "gate_mask": [[False, False]]}))
    cfg = camoe.load_config(config_dict(model={"num_experts": 2, "gate_mask": [[True, False]] * 2}))
    with pytest.raises(ValueError, match=r"expected \(T, E\) = \(3, 2\)"):
        camoe.CTRPipeline(cfg).fit(b04_rows)


def test_cli_prune_writes_artifact_and_reports_auc_pr_change(fitted, b04_rows, tmp_path) -> None:
    folder = fitted.save(tmp_path / "model")
    b04_rows.to_csv(tmp_path / "rows.csv", index=False)
    out = subprocess.run([sys.executable, "-m", "camoe", "prune", str(folder), "--top-k", "1", "--data",
                          str(tmp_path / "rows.csv"), "--output", str(tmp_path / "pruned")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "AUC-PR" in out.stdout and "p99" in out.stdout
    loaded = camoe.CTRPipeline.load(tmp_path / "pruned")
    assert loaded.config.model.gate_mask is not None
    bad = subprocess.run([sys.executable, "-m", "camoe", "prune", str(folder), "--top-k", "9"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "top_k must be in [1, 4]" in bad.stderr


def test_prune_sweep_reports_every_k_against_the_full_model(fitted, b04_rows) -> None:
    from camoe.prune import prune_sweep

    table = prune_sweep(fitted, b04_rows, candidates=8, repeats=3)
    assert list(table.index) == ["full", "1", "2", "3", "4"]
    assert (table.loc["full", [c for c in table.columns if c.startswith("delta_auc_pr/")]] == 0).all()
    assert table.loc["1", "experts_kept"] < 4 and table.loc["full", "experts_kept"] == 4
    assert {"onnx_mixed_p99_ms", "torch_single_p50_ms"} <= set(table.columns)
    assert (table.filter(like="_ms") > 0).all().all()
