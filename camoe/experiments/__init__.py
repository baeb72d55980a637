"""Experiments: grids of configurations × seeds, cached by config hash, with statistics, Pareto analysis,
calibration, gate diagnostics and an HTML / Markdown report (``camoe experiment CONFIG``)."""

from camoe.experiments.pareto import dominates, pareto_front
from camoe.experiments.runner import EvalData, ExperimentOutcome, execute_run, prepare_data, run_experiment
from camoe.experiments.spec import (
    ConfigurationSpec,
    ExperimentConfig,
    RunSpec,
    expand_configurations,
    expand_runs,
    load_experiment,
    run_key,
)
from camoe.experiments.stats import (
    bootstrap_ci,
    bootstrap_statistic,
    mean_std,
    paired_bootstrap_lift,
    percentile_interval,
)

__all__ = [
    "ConfigurationSpec",
    "EvalData",
    "ExperimentConfig",
    "ExperimentOutcome",
    "RunSpec",
    "bootstrap_ci",
    "bootstrap_statistic",
    "dominates",
    "execute_run",
    "expand_configurations",
    "expand_runs",
    "load_experiment",
    "mean_std",
    "paired_bootstrap_lift",
    "pareto_front",
    "percentile_interval",
    "prepare_data",
    "run_experiment",
    "run_key",
]
