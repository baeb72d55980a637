"""Every registered model through the whole pipeline: fit, masked training, save / load parity, determinism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import camoe
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
