"""Export a fitted pipeline for serving: a positional-input scoring module and its ONNX form.

Input layout of the exported model (all batch-first, batch size dynamic):

    cat_ids    (B, F) int64    categorical ids, columns in ``InputSpec.cat_features`` order (0 missing, 1 OOV)
    multi_ids  (B, M, L) int64 multi-valued ids, padded with 0, in ``InputSpec.multi_features`` order
    dense      (B, N) float32  transformed numeric features, ``InputSpec.dense_features`` order
    format_ids (B,) int64      index of each row's ad format in ``tasks.json`` "formats"
    -> pctr    (B,) float32    sigmoid of the row's own task logit, negative-downsampling correction applied once
                               (an artifact's post-hoc calibration, ``tasks.json`` "calibration", is applied after
                               the ONNX model by ``OnnxScorer``, from the same stored parameters)

The encoding step is ``FeatureEncoder.transform``, the same code as training and batch scoring; ``OnnxScorer`` runs
it and then ONNX Runtime. ``inputs.json`` beside ``model.onnx`` records this layout.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from camoe.files import write_json
from camoe.pipeline import CTRPipeline

__all__ = ["OnnxScorer", "ScoringModule", "export_onnx"]


class ScoringModule(nn.Module):
    """Model + own-task selection + sigmoid + downsampling correction, with positional tensor inputs.

    For a pruned model (``model.gate_mask``, see ``camoe.prune``) only the experts used by the tasks of the formats
    in the batch are computed.

    Shape:
        cat_ids (B, F), multi_ids (B, M, L), dense (B, N), format_ids (B,) -> pctr (B,).
    """

    def __init__(self, model: nn.Module, format_task_index: np.ndarray, negative_sampling_rate: float | None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("task_of_format", torch.as_tensor(format_task_index, dtype=torch.long))
        self.rate = negative_sampling_rate
        gates = getattr(model, "gates", None)
        # a pruned model (gate_mask): compute only the experts of the tasks present in the batch
        self.select_experts = getattr(gates, "allowed", None) is not None
        self.num_tasks = int(getattr(model, "num_tasks", 1))

    def forward(
        self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor, format_ids: torch.Tensor
    ) -> torch.Tensor:
        task = self.task_of_format[format_ids].unsqueeze(1)  # (B, 1)
        if self.select_experts:
            present = (task == torch.arange(self.num_tasks)).any(0)  # (T,) tasks present in the batch
            logits = self.model(cat_ids, multi_ids, dense, tasks=present).logits  # (B, T), own tasks defined
        else:
            logits = self.model(cat_ids, multi_ids, dense).logits  # (B, T)
        p = torch.sigmoid(logits.gather(1, task).squeeze(1))  # (B,)
        if self.rate is not None:
            p = p / (p + (1.0 - p) / self.rate)  # q = p / (p + (1 - p) / w)
        return p


def export_onnx(pipe: CTRPipeline, folder: str | Path, opset: int = 17) -> Path:
    """Write ``model.onnx``, ``inputs.json`` (input layout), ``encoder.json`` (the encoder state that produces the
    inputs from raw rows) and ``tasks.json`` (formats, tasks, post-hoc calibration) into ``folder``.

    Returns:
        Path of ``model.onnx``.

    Raises:
        RuntimeError: the pipeline is not fitted.
    """
    if pipe.model_ is None or pipe.layout_ is None or pipe.encoder_ is None or pipe.encoder_.input_spec_ is None:
        raise RuntimeError("export needs a fitted pipeline (CTRPipeline.load(artifact))")
    spec = pipe.encoder_.input_spec_
    module = ScoringModule(pipe.model_, pipe.layout_.format_task_index, pipe.config.train.negative_sampling_rate).eval()
    example = (
        torch.full((2, spec.num_cat), 2, dtype=torch.long),
        torch.zeros((2, spec.num_multi, spec.max_len), dtype=torch.long),
        torch.zeros((2, spec.num_dense), dtype=torch.float32),
        torch.zeros(2, dtype=torch.long),
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    names = ["cat_ids", "multi_ids", "dense", "format_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter: no onnxscript needed
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=opset, input_names=names, output_names=["pctr"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "pctr": {0: "batch"}},
        )
    layout = {"inputs": {"cat_ids": list(spec.cat_features), "multi_ids": list(spec.multi_features),
                         "max_len": spec.max_len, "dense": list(spec.dense_features),
                         "format_ids": list(pipe.layout_.formats)},
              "output": "pctr", "negative_sampling_rate": pipe.config.train.negative_sampling_rate}
    (folder / "inputs.json").write_text(json.dumps(layout, indent=2) + "\n")
    # the state that turns raw rows into these inputs, and the post-hoc map applied to the output
    write_json(folder / "encoder.json", pipe.encoder_.state_dict())
    tasks = {**pipe.layout_.to_dict(), "calibration": pipe.calibration_.to_dict() if pipe.calibration_ else None}
    write_json(folder / "tasks.json", tasks)
    return path


class OnnxScorer:
    """Batch scoring with ONNX Runtime through the pipeline's own encoder.

    Args:
        pipe: the fitted pipeline the ONNX file was exported from (for its encoder and task layout).
        onnx_path: the exported ``model.onnx``.
    """

    def __init__(self, pipe: CTRPipeline, onnx_path: str | Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.pipe = pipe
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def predict_proba(self, frame: pd.DataFrame, source: str = "data") -> np.ndarray:
        """(N,) pCTR from each row's own task head."""
        batch = self.pipe.encode(frame, source, labels=False)
        feeds = {"cat_ids": batch.cat_ids.numpy(), "multi_ids": batch.multi_ids.numpy(),
                 "dense": batch.dense.numpy(), "format_ids": batch.format_ids.numpy()}
        pctr = self.session.run(["pctr"], feeds)[0]
        self.pipe.check_finite_scores(pctr, batch, source)
        calibration, layout = self.pipe.calibration_, self.pipe.layout_
        if calibration is not None and layout is not None:  # the artifact's post-hoc map, as in eager scoring
            task = np.asarray(layout.format_task_index)[feeds["format_ids"]]
            pctr = calibration.apply(pctr, task, layout.tasks)
        return pctr
