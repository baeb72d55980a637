"""MLflow tracking of single runs (``camoe train|evaluate --mlflow URI``) and the shared MLflow setup.

Needs MLflow (``pip install 'camoe[mlflow]'``; ``mlflow-skinny`` is enough). MLflow 3 refuses the plain file store
unless ``MLFLOW_ALLOW_FILE_STORE`` is set; for ``file:`` URIs it is set here, since a local file store is what a
single machine's tracking is for.

A training run logs: the config as flattened params, one metric series per training log entry (total and per-task
loss, mean validation AUC-PR, by optimizer step), the per-format / per-task / per-modality test metrics
(``test.<metric>.<section>.<name>``), ``metrics.json``, ``report.html`` and the artifact folder. An evaluation run
logs its metrics, ``metrics.json`` and ``report.html``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["flatten", "log_evaluation", "log_training", "mlflow_client"]

_SECTIONS = ("formats", "tasks", "modality", "macro")
_METRICS = ("auc_pr", "auc_roc", "gauc", "logloss", "ne", "ece", "calibration_ratio", "oracle_auc_pr", "rows",
            "positives")


@contextmanager
def mlflow_client(tracking_uri: str, experiment: str) -> Iterator[Any]:
    """The ``mlflow`` module pointed at ``tracking_uri`` and ``experiment``.

    Raises:
        ImportError: MLflow is not installed (with the install command).
    """
    try:
        import mlflow
    except ImportError:
        raise ImportError("MLflow tracking needs mlflow: pip install 'camoe[mlflow]' (or mlflow-skinny)") from None
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    yield mlflow


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {"a.b.c": value}.

    Example:
        >>> flatten({"train": {"epochs": 3}, "output_dir": "x"})
        {'train.epochs': 3, 'output_dir': 'x'}
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _metric_values(metrics: dict[str, Any], split: str) -> dict[str, float]:
    out = {}
    for section in _SECTIONS:
        rows = metrics.get(section, {})
        if section == "macro":
            rows = {"mean": {k: v for k, v in rows.items() if k != "skipped"}}
        for name, values in rows.items():
            for metric in _METRICS:
                value = values.get(metric) if isinstance(values, dict) else None
                if isinstance(value, (int, float)) and math.isfinite(value):
                    out[f"{split}.{metric}.{section}.{name}"] = float(value)
    return out


def log_training(tracking_uri: str, experiment: str, run_name: str, config: dict[str, Any],
                 history: list[dict[str, Any]], metrics: dict[str, Any], artifact: Path) -> str:
    """Log one ``camoe train`` run; returns the MLflow run id."""
    with mlflow_client(tracking_uri, experiment) as mlflow, mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(config).items()})
        for entry in history:
            step = int(entry["step"])
            values = {("train_loss" if k == "total" else f"train_loss.{k.split('/', 1)[1]}"): v
                      for k, v in entry.items() if (k == "total" or k.startswith("loss/")) and v is not None}
            if entry.get("valid_score") is not None and math.isfinite(entry["valid_score"]):
                values["valid_auc_pr"] = entry["valid_score"]
            mlflow.log_metrics(values, step=step)
        for split in ("valid", "test"):
            if split in metrics:
                mlflow.log_metrics(_metric_values(metrics[split], split))
        for name in ("metrics.json", "report.html"):
            if (artifact / name).is_file():
                mlflow.log_artifact(str(artifact / name))
        mlflow.log_artifacts(str(artifact), artifact_path="model")
        return str(run.info.run_id)


def log_evaluation(tracking_uri: str, experiment: str, run_name: str, artifact: str, metrics: dict[str, Any],
                   folder: Path) -> str:
    """Log one ``camoe evaluate`` run (its metrics, ``metrics.json`` and ``report.html``); returns the run id."""
    with mlflow_client(tracking_uri, experiment) as mlflow, mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({"artifact": artifact, "split": str(metrics.get("split"))})
        mlflow.log_metrics(_metric_values(metrics, str(metrics.get("split", "eval"))))
        for name in ("metrics.json", "report.html"):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name))
        return str(run.info.run_id)
