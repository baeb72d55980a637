"""Optional MLflow logging of an experiment to a tracking store (a local file store by default); the MLflow setup
is ``camoe.tracking.mlflow_client``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from camoe.experiments.spec import RunSpec
from camoe.tracking import mlflow_client

__all__ = ["log_experiment"]


def log_experiment(tracking_uri: str, experiment_name: str, runs: list[RunSpec], output_dir: Path) -> list[str]:
    """Log every finished run (params, test metrics, run.json) and the report folder as artifacts.

    Args:
        tracking_uri: MLflow tracking URI, e.g. ``file:///abs/path/mlruns``.
        experiment_name: MLflow experiment.
        runs: the experiment's runs; each is read from ``<output_dir>/runs/<key>``.
        output_dir: the experiment folder (with ``report/results.csv``).

    Returns:
        MLflow run ids, one per logged run then one for the report.

    Raises:
        ImportError: mlflow is not installed (with the install command).
    """
    import pandas as pd

    with mlflow_client(tracking_uri, experiment_name) as mlflow:
        return _log(mlflow, runs, output_dir, pd)


def _log(mlflow: Any, runs: list[RunSpec], output_dir: Path, pd: Any) -> list[str]:
    results_path = output_dir / "report" / "results.csv"
    results = pd.read_csv(results_path) if results_path.is_file() else None
    ids = []
    for run in runs:
        run_dir = output_dir / "runs" / run.key
        payload = json.loads((run_dir / "run.json").read_text())
        with mlflow.start_run(run_name=f"{payload['configuration']}/seed{payload['seed']}") as active:
            mlflow.set_tags({"camoe.run_key": run.key, "camoe.configuration": payload["configuration"]})
            mlflow.log_params({
                "configuration": payload["configuration"], "model": payload["model"],
                "grouping": payload["grouping"], "ablation": payload["ablation"], "training": payload["training"],
                "seed": payload["seed"], "expert_type": payload["config"]["model"]["expert_type"],
                "num_experts": payload["config"]["model"]["num_experts"],
                "masking": payload["config"]["train"]["masking"],
                "loss_normalisation": payload["config"]["train"]["loss_normalisation"],
                "balanced_sampling": payload["config"]["train"]["balanced_sampling"],
            })
            metrics = {"train_seconds": float(payload["seconds"])}
            if results is not None:
                sel = results[(results["run_key"] == run.key) & (results["calibration"] == "none")]
                for row in sel.itertuples():
                    if pd.notna(row.value):
                        metrics[f"{row.metric}.{row.slice_type}.{row.slice}"] = float(row.value)
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(run_dir / "run.json"))
            ids.append(active.info.run_id)
    with mlflow.start_run(run_name="report") as active:
        mlflow.log_artifacts(str(output_dir / "report"), artifact_path="report")
        ids.append(active.info.run_id)
    return ids
