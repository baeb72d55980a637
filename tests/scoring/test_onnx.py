"""ONNX export parity (case B22): eager vs ONNX Runtime within 1e-5, with OOV, missing and empty values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import camoe
from camoe.export import export_folder

SCORING = """ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click
1700000200,u999,a999,audio,smart_tv,podcasts,0.5,5,0
1700000201,u1,a1,video,,,,,0
1700000202,u2,a2,display,ios,music|news,0.9,2,1
1700000203,u3,a3,audio,ios,,0.1,100,0
1700000204,u4,a4,video,ios,music,3.0,1,1
"""


@pytest.mark.parametrize(("rate", "wide"), [(None, False), (0.1, False), (None, True)])
def test_b22_onnx_matches_eager(
    rate: float | None, wide: bool, make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame,
    rows: Callable[[str], pd.DataFrame], tmp_path: Path,
) -> None:
    pipe = camoe.CTRPipeline(make_config(model={"wide": wide},
                                         train={"epochs": 2, "batch_size": 4, "negative_sampling_rate": rate}))
    pipe.fit(b04_rows)
    loaded = camoe.CTRPipeline.load(pipe.save(tmp_path / "model"))
    scorer = loaded.scorer("onnx")
    frame = rows(SCORING)
    for batch in (frame.iloc[:1], frame):  # batch sizes 1 and 5 through one exported graph
        eager = loaded.predict_proba(batch)
        scores = scorer.score(batch)
        assert scores.pctr.shape == eager.shape and np.isfinite(scores.pctr).all()
        np.testing.assert_allclose(scores.pctr, eager, rtol=0, atol=1e-6)
    assert scores.quality.out_of_vocabulary["device"] == 1  # same encoder, same OOV handling


def test_export_folder_holds_the_encoder_state_and_task_layout(make_config, b04_rows, tmp_path) -> None:
    import json

    from camoe.data.encoders import FeatureEncoder

    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1})).fit(b04_rows)
    export_folder(pipe, tmp_path / "onnx")
    assert {p.name for p in (tmp_path / "onnx").iterdir()} >= {"model.onnx", "inputs.json", "encoder.json", "tasks.json"}
    encoder = FeatureEncoder.from_state(pipe.config.schema, json.loads((tmp_path / "onnx" / "encoder.json").read_text()))
    np.testing.assert_array_equal(encoder.transform(b04_rows).cat_ids, pipe.encoder_.transform(b04_rows).cat_ids)
    assert json.loads((tmp_path / "onnx" / "tasks.json").read_text())["formats"] == list(pipe.layout_.formats)


@pytest.mark.parametrize("expert_type", ["dcn", "mlp"])
def test_exporting_to_onnx_traces_without_tracer_warnings(
    expert_type: str, make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame, tmp_path: Path,
) -> None:
    # a Python branch on a traced shape is frozen into the graph; the tracer warns when one is taken
    import warnings

    import torch

    # (training pads the experts' input to an aligned width; evaluation, which export traces, must test no shapes)
    pipe = camoe.CTRPipeline(make_config(model={"expert_type": expert_type}, train={"epochs": 1})).fit(b04_rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_folder(pipe, tmp_path / "onnx")
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
