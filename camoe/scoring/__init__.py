"""Scoring: the one path from raw rows to pCTR (``Scorer``), its ONNX form, and the batch jobs built on it."""

from camoe.scoring.jobs import evaluate_source, write_predictions
from camoe.scoring.module import ScoringModule, correct_downsampling
from camoe.scoring.onnx import OnnxBackend, export_onnx
from camoe.scoring.scorer import ScoreRangeError, Scorer, Scores, TorchBackend

__all__ = [
    "OnnxBackend",
    "ScoreRangeError",
    "Scorer",
    "Scores",
    "ScoringModule",
    "TorchBackend",
    "correct_downsampling",
    "evaluate_source",
    "export_onnx",
    "write_predictions",
]
