"""Evaluation on arrays: per-format and per-task CTR metrics and tables."""

from camoe.evaluation.metrics import (
    METRIC_NAMES,
    UndefinedMetricWarning,
    binary_metrics,
    evaluate_groups,
    expected_calibration_error,
    own_task_scores,
)
from camoe.evaluation.report import format_table

__all__ = [
    "METRIC_NAMES",
    "UndefinedMetricWarning",
    "binary_metrics",
    "evaluate_groups",
    "expected_calibration_error",
    "format_table",
    "own_task_scores",
]
