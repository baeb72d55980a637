"""ONNX export of the scoring head and an ONNX Runtime backend for ``Scorer``.

Input layout of the exported model (all batch-first, batch size dynamic):

    cat_ids    (B, F) int64    categorical ids, columns in ``InputSpec.cat_features`` order (0 missing, 1 OOV)
    multi_ids  (B, M, L) int64 multi-valued ids, padded with 0, in ``InputSpec.multi_features`` order
    dense      (B, N) float32  transformed numeric features, ``InputSpec.dense_features`` order
    format_ids (B,) int64      index of each row's ad format in ``tasks.json`` "formats"
    -> pctr    (B,) float64    sigmoid of the row's own task logit, negative-downsampling correction applied once

The model is ``ScoringModule`` traced by ``torch.onnx.export``; the encoding before it and the post-hoc calibration
after it are ``Scorer``'s, the same as for eager scoring.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from camoe.batch import Batch
from camoe.files import atomic_path
from camoe.schema import InputSpec
from camoe.scoring.module import ScoringModule

__all__ = ["INPUT_NAMES", "OnnxBackend", "export_onnx"]

INPUT_NAMES = ("cat_ids", "multi_ids", "dense", "format_ids")


def export_onnx(module: ScoringModule, spec: InputSpec, path: str | Path, opset: int = 17) -> Path:
    """Write ``module`` as an ONNX model with a dynamic batch axis (atomically: a reader never sees half a file).

    Returns:
        ``path``.
    """
    example = (
        torch.full((2, spec.num_cat), 2, dtype=torch.long),
        torch.zeros((2, spec.num_multi, spec.max_len), dtype=torch.long),
        torch.zeros((2, spec.num_dense), dtype=torch.float32),
        torch.zeros(2, dtype=torch.long),
    )
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter: no onnxscript needed
        torch.onnx.export(
            module.eval(), example, str(tmp), dynamo=False, opset_version=opset, input_names=list(INPUT_NAMES),
            output_names=["pctr"], dynamic_axes={**{n: {0: "batch"} for n in INPUT_NAMES}, "pctr": {0: "batch"}},
        )
    return path


class OnnxBackend:
    """Runs an exported scoring model with ONNX Runtime (CPU).

    Args:
        path: the ``model.onnx`` file.
        threads: intra-op threads per call (default 1: a scoring service scales with worker processes).

    Raises:
        ValueError: the file is not a loadable ONNX model (names the file).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({type(err).__name__}: {err})") from None
        self.path = Path(path)

    def __call__(self, batch: Batch) -> np.ndarray:
        """(B,) float64 own-task pCTR."""
        feeds = {"cat_ids": batch.cat_ids.numpy(), "multi_ids": batch.multi_ids.numpy(),
                 "dense": batch.dense.numpy(), "format_ids": batch.format_ids.numpy()}
        return np.asarray(self.session.run(["pctr"], feeds)[0], dtype=np.float64)
