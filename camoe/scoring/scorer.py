"""``Scorer``: the one path from raw rows to pCTR, used by predict, evaluate, calibrate, the service, pruning and
auction replay.

    rows -> RowEncoder (features, format index)      counts out-of-vocabulary / missing values per feature
         -> backend: ScoringModule in PyTorch, or the same module exported to ONNX Runtime
            (model -> own task's logit -> sigmoid -> negative-downsampling correction)
         -> post-hoc calibration (per task, ``camoe.calibration``)
         -> checks: every pCTR finite (else the error names the numeric feature that overflowed)

Example:
    >>> import camoe, pandas as pd
    >>> frame = camoe.generate_log(camoe.SyntheticConfig(rows=3000, seed=0))
    >>> pipe = camoe.CTRPipeline(camoe.load_config(camoe.demo_config_path(), {"train": {"epochs": 1}})).fit(frame)
    >>> scores = pipe.scorer().score(frame.head(5))
    >>> scores.pctr.shape, scores.task_ids.shape, scores.quality.rows
    ((5,), (5,), 5)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from camoe.batch import Batch
from camoe.calibration import PosthocCalibration
from camoe.config import SchemaConfig
from camoe.data.batches import EncodedRows, RowEncoder
from camoe.data.columns import Rows
from camoe.data.encoders import FeatureEncoder, InputQuality
from camoe.grouping import TaskLayout
from camoe.scoring.module import ScoringModule

__all__ = ["ScoreRangeError", "Scorer", "Scores", "TorchBackend"]

FORWARD_ROWS = 65_536  # rows per forward pass: bounds the activations of large inputs


class ScoreRangeError(ValueError):
    """Rows whose model pCTR is NaN, infinite or saturated (exactly 0 or 1); the message names the extreme feature."""


@dataclass
class Scores:
    """pCTR of N rows with what the scorer saw.

    Attributes:
        pctr: (N,) float64 pCTR from each row's own task head, calibrated when the artifact holds a calibration.
        format_ids: (N,) int64 index of each row's ad format in ``layout.formats``.
        task_ids: (N,) int64 index of each row's task in ``layout.tasks``.
        quality: out-of-vocabulary, missing and clipped counts per feature.
        labels: (N,) float32 clicks when scored with ``labels=True``, else None.
        missing_rows: feature -> (N,) bool, the rows whose value was missing (imputed); features without a missing
            value are absent.
    """

    pctr: np.ndarray
    format_ids: np.ndarray
    task_ids: np.ndarray
    quality: InputQuality
    labels: np.ndarray | None = None
    missing_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def missing_features(self, row: int) -> list[str]:
        """The features whose value was missing in ``row``."""
        return [name for name, rows in self.missing_rows.items() if rows[row]]


class TorchBackend:
    """Runs ``ScoringModule`` eagerly (CPU), in forward passes of at most ``FORWARD_ROWS`` rows."""

    def __init__(self, module: ScoringModule) -> None:
        self.module = module.eval()

    @torch.no_grad()
    def __call__(self, batch: Batch) -> np.ndarray:
        """(B,) float64 own-task pCTR (or (B, T) for an ``all_tasks`` module)."""
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        batch = batch if device.type == "cpu" else batch.to(device)
        out = self.module(batch.cat_ids, batch.multi_ids, batch.dense, batch.format_ids)
        return out.cpu().numpy()


class Scorer:
    """Raw rows -> pCTR through one backend.

    Args:
        rows: the row encoder (fitted encoder, task layout, schema).
        backend: batch -> (B,) own-task pCTR (``TorchBackend`` or ``camoe.scoring.onnx.OnnxBackend``).
        calibration: the post-hoc per-task map, or None.
        task_backend: optional batch -> (B, T) pCTR of every head (eager only; ``task_proba``).
    """

    def __init__(
        self, rows: RowEncoder, backend: Callable[[Batch], np.ndarray], calibration: PosthocCalibration | None = None,
        task_backend: Callable[[Batch], np.ndarray] | None = None,
    ) -> None:
        self.rows, self.backend, self.calibration, self.task_backend = rows, backend, calibration, task_backend

    # ------------------------------------------------------------------ construction
    @classmethod
    def torch(
        cls, model: nn.Module, encoder: FeatureEncoder, layout: TaskLayout, schema: SchemaConfig,
        negative_sampling_rate: float | None = None, calibration: PosthocCalibration | None = None,
    ) -> Scorer:
        """Eager scoring with ``model`` (used as it is: training validates through this too)."""
        index = layout.format_task_index
        return cls(RowEncoder(encoder, layout, schema),
                   TorchBackend(ScoringModule(model, index, negative_sampling_rate)), calibration,
                   TorchBackend(ScoringModule(model, index, negative_sampling_rate, all_tasks=True)))

    @classmethod
    def onnx(
        cls, path: Any, encoder: FeatureEncoder, layout: TaskLayout, schema: SchemaConfig,
        calibration: PosthocCalibration | None = None, threads: int | None = None,
    ) -> Scorer:
        """Scoring with ONNX Runtime from an exported ``model.onnx`` (``camoe.scoring.onnx.export_onnx``)."""
        from camoe.scoring.onnx import OnnxBackend

        return cls(RowEncoder(encoder, layout, schema), OnnxBackend(path, threads), calibration)

    @property
    def layout(self) -> TaskLayout:
        return self.rows.layout

    @property
    def encoder(self) -> FeatureEncoder:
        return self.rows.encoder

    @property
    def schema(self) -> SchemaConfig:
        return self.rows.schema

    # ------------------------------------------------------------------ scoring
    def encode(self, rows: Rows, source: str = "data", labels: bool = False) -> EncodedRows:
        """Validate and encode rows (see ``RowEncoder``)."""
        return self.rows(rows, source, labels)

    def score_batch(self, batch: Batch, source: str = "data") -> np.ndarray:
        """(B,) calibrated own-task pCTR of encoded rows.

        Raises:
            ValueError: a pCTR is not finite or is saturated (exactly 0 or 1) (the message names the rows' numeric
                feature with the largest standardised value).
        """
        parts = [self.backend(batch.select(slice(s, s + FORWARD_ROWS))) for s in range(0, len(batch), FORWARD_ROWS)]
        pctr = np.concatenate(parts) if parts else np.zeros(0)
        self._check_finite(pctr, batch, source)
        if self.calibration is not None:
            task = self.layout.format_task_index[batch.format_ids.numpy()]
            pctr = self.calibration.apply(pctr, task, self.layout.tasks)
        return pctr

    def score(self, rows: Rows, source: str = "data", labels: bool = False) -> Scores:
        """Score raw rows (a DataFrame or a {column: values} mapping).

        Raises:
            ValueError: bad rows (missing columns, unknown formats, bad values; naming ``source``), or non-finite
                scores.
        """
        encoded = self.encode(rows, source, labels)
        batch = encoded.batch
        fmt = batch.format_ids.numpy()
        return Scores(self.score_batch(batch, source), fmt, self.layout.format_task_index[fmt], encoded.quality,
                      None if batch.labels is None else batch.labels.numpy(), encoded.missing_rows)

    def task_proba(self, rows: Rows, source: str = "data") -> np.ndarray:
        """(N, T) calibrated pCTR of every task head (columns in ``layout.tasks`` order); eager scorers only.

        Raises:
            RuntimeError: the scorer has no every-head backend (ONNX scores each row's own head only).
        """
        if self.task_backend is None:
            raise RuntimeError("this scorer scores each row's own head only (ONNX); use the torch backend")
        batch = self.encode(rows, source).batch
        parts = [self.task_backend(batch.select(slice(s, s + FORWARD_ROWS))) for s in range(0, len(batch), FORWARD_ROWS)]
        probs = np.concatenate(parts) if parts else np.zeros((0, len(self.layout.tasks)))
        self._check_finite(probs, batch, source)
        return probs if self.calibration is None else self.calibration.apply_matrix(probs, self.layout.tasks)

    def _check_finite(self, pctr: np.ndarray, batch: Batch, source: str) -> None:
        """Refuse non-finite and saturated (exactly 0 or 1: a logit beyond about ±17 in float32) model pCTRs."""
        bad = ~np.isfinite(pctr) | (pctr <= 0.0) | (pctr >= 1.0)  # NaN compares False, without a warning
        if bad.ndim == 2:
            bad = bad.any(axis=1)
        if not bad.any():
            return
        dense = batch.dense.numpy()[bad]  # (n_bad, N_dense) standardised values
        names = self.encoder.input_spec_.dense_features if self.encoder.input_spec_ is not None else ()
        worst = ""
        if dense.size:
            col = int(np.abs(dense).max(axis=0).argmax())
            worst = (f"; numeric feature '{names[col]}' reaches {float(np.abs(dense[:, col]).max()):.3g} training "
                     f"standard deviations from its mean in those rows")
        raise ScoreRangeError(f"{source}: {int(bad.sum())} rows give a non-finite or saturated pCTR (NaN, inf, exactly "
                         f"0 or 1: the inputs overflow the model){worst}; fix or clip those values (schema.clip)")
