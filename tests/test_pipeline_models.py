"""Every registered model through the whole pipeline: fit, masked training, save / load parity, determinism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import camoe
from camoe.pipeline import gate_diagnostics
from camoe.model import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_save_load_scores_identically(
    name: str, make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame, tmp_path: Path
) -> None:
    cfg = make_config(model={"name": name, "dropout": 0.1}, train={"epochs": 2, "batch_size": 4, "seed": 3})
    pipe = camoe.CTRPipeline(cfg).fit(b04_rows)
    pctr = pipe.predict_proba(b04_rows)
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    again = camoe.CTRPipeline(cfg).fit(b04_rows)  # same seed -> bit-identical
    np.testing.assert_array_equal(pctr, again.predict_proba(b04_rows))
    loaded = camoe.CTRPipeline.load(pipe.save(tmp_path / name))
    np.testing.assert_array_equal(pctr, loaded.predict_proba(b04_rows))


def test_b05_gate_diagnostics_report_and_warn(
    make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame, tmp_path: Path
) -> None:
    import torch

    cfg = make_config(model={"num_experts": 3}, train={"epochs": 1, "batch_size": 8})
    pipe = camoe.CTRPipeline(cfg).fit(b04_rows)
    report = pipe.diagnostics_
    assert set(report["mean_gate_weight"]) == {"audio", "video", "display"}
    for weights in report["mean_gate_weight"].values():
        assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5
    assert report["identical_experts"] == []  # independent random init per expert
    # force identical experts and uniform gates: the diagnostic must say so
    with torch.no_grad():
        for p in pipe.model_.experts.parameters():
            p[:] = p[0:1].clone()
        pipe.model_.gates.proj.weight.zero_()
        pipe.model_.gates.proj.bias.zero_()
    batch = pipe.encode(b04_rows, "train")
    with pytest.warns(UserWarning, match="identical weights"):
        forced = gate_diagnostics(pipe.model_, pipe.layout_, [batch])
    assert (0, 1) in forced["identical_experts"]
    assert any("exactly uniform" in w for w in forced["warnings"])
