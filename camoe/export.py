"""``camoe export``: an artifact's scoring model as ONNX, with the state that turns raw rows into its inputs.

The folder holds ``model.onnx`` (``camoe.scoring.onnx``: the one scoring head, exported), ``inputs.json`` (the
input layout), ``encoder.json`` (the encoder state that produces those inputs from raw rows) and ``tasks.json``
(formats, tasks and the post-hoc calibration applied to the output).
"""

from __future__ import annotations

from pathlib import Path

from camoe.files import write_json
from camoe.pipeline import CTRPipeline
from camoe.scoring.module import ScoringModule
from camoe.scoring.onnx import export_onnx

__all__ = ["export_folder"]


def export_folder(pipe: CTRPipeline, folder: str | Path, opset: int = 17) -> Path:
    """Write ``model.onnx``, ``inputs.json``, ``encoder.json`` and ``tasks.json`` into ``folder``.

    Returns:
        Path of ``model.onnx``.

    Raises:
        RuntimeError: the pipeline is not fitted.
    """
    if pipe.model_ is None or pipe.layout_ is None or pipe.encoder_ is None or pipe.encoder_.input_spec_ is None:
        raise RuntimeError("export needs a fitted pipeline (CTRPipeline.load(artifact))")
    spec, layout = pipe.encoder_.input_spec_, pipe.layout_
    rate = pipe.config.train.negative_sampling_rate
    folder = Path(folder)
    path = export_onnx(ScoringModule(pipe.model_, layout.format_task_index, rate), spec, folder / "model.onnx", opset)
    write_json(folder / "inputs.json", {
        "inputs": {"cat_ids": list(spec.cat_features), "multi_ids": list(spec.multi_features), "max_len": spec.max_len,
                   "dense": list(spec.dense_features), "format_ids": list(layout.formats)},
        "output": "pctr", "negative_sampling_rate": rate})
    write_json(folder / "encoder.json", pipe.encoder_.state_dict())
    write_json(folder / "tasks.json", {**layout.to_dict(),
                                       "calibration": pipe.calibration_.to_dict() if pipe.calibration_ else None})
    return path
