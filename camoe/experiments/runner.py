"""Run an experiment grid: prepare the data once, train every run not yet cached, then analyse and report.

Layout of the output folder::

    <output_dir>/
      data/valid.npz, data/test.npz     labels, formats, true click probability of the evaluation rows
      runs/<key>/run.json               finished run: configuration, seed, config, timings, tasks, gate diagnostics
      runs/<key>/predictions.npz        own-task pCTR of every valid and test row (paired bootstrap, calibration)
      runs/<key>/model/ (or models/<format>/)   the artifact(s), with the declared negative sampling rate
      report/index.html, report.md, results.csv, *.png

``run.json`` is written last (atomically), so a run without it is redone and a run with it is skipped: an
interrupted grid continues where it stopped.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from camoe.config import RunConfig, resolve_path
from camoe.data.sources import FrameSource
from camoe.run import fit_per_format, separate_groups, single_task_config
from camoe.files import write_json
from camoe.experiments.spec import (
    ConfigurationSpec,
    ExperimentConfig,
    RunSpec,
    expand_configurations,
    expand_runs,
    load_experiment,
    with_experiment_data,
)

__all__ = ["EvalData", "ExperimentOutcome", "execute_run", "prepare_data", "run_experiment"]

Log = Callable[[str], None]


@dataclass
class EvalData:
    """Evaluation rows shared by every run of an experiment.

    Attributes:
        labels: split -> (N,) int8 clicks (``valid``, ``test``).
        formats: split -> (N,) format names.
        true_prob: split -> (N,) true click probability, or None.
        attributes: format -> attributes (the config's formats table).
    """

    labels: dict[str, np.ndarray]
    formats: dict[str, np.ndarray]
    true_prob: dict[str, np.ndarray | None]
    attributes: dict[str, dict[str, str]]


@dataclass
class ExperimentOutcome:
    """What ``run_experiment`` did: the run folders, which were trained now, and the report files."""

    output_dir: Path
    runs: list[RunSpec]
    trained: list[str] = field(default_factory=list)  # run keys trained in this call
    cached: list[str] = field(default_factory=list)  # run keys found finished
    missing: list[str] = field(default_factory=list)  # run keys not finished (report_only)
    run_seconds: dict[str, float] = field(default_factory=dict)
    report_files: list[Path] = field(default_factory=list)
    data_seconds: float = 0.0
    analysis_seconds: float = 0.0


def _file_fingerprint(path: Path) -> list[list[Any]]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.exists()]


def prepare_data(
    exp: ExperimentConfig, base: RunConfig, quick: bool
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Generate or read the log, split it once, and downsample training negatives when declared.

    Returns:
        (splits ``train`` / ``valid`` / ``test``, data identity used in the run keys).

    Raises:
        ValueError: no data source (neither ``data.synthetic`` nor the run config's ``data.path``), or reader
            errors naming the file.
    """
    from camoe.data.synthetic import PRESETS, SyntheticConfig, generate_log
    from camoe.run import load_splits, read_for_config

    base = with_experiment_data(exp, base)
    data_id: dict[str, Any] = {"split": base.data.split.model_dump(), "schema": base.schema.model_dump()}
    if exp.data.synthetic is not None:
        rows = exp.quick.rows if quick else exp.data.synthetic.rows
        synthetic = exp.data.synthetic
        frame = generate_log(SyntheticConfig(rows=rows, seed=synthetic.seed, formats=PRESETS[synthetic.preset]))
        data_id["synthetic"] = {"rows": rows, "seed": synthetic.seed, "preset": synthetic.preset}
    else:
        if base.data.path is None:
            raise ValueError(f"experiment '{exp.name}': no data: set data.synthetic in the experiment or data.path "
                             f"in the run config {exp.run_config}")
        path = resolve_path(base, base.data.path)
        frame = read_for_config(base, base.data.path)
        data_id["files"] = _file_fingerprint(path)
        data_id["reader"] = base.data.reader
        if quick and len(frame) > exp.quick.rows:
            frame = frame.sample(n=exp.quick.rows, random_state=0).reset_index(drop=True)
            data_id["quick_rows"] = exp.quick.rows
    if exp.data.split is not None and base.data.test_path is not None:
        warnings.warn(f"experiment '{exp.name}': data.split.test_fraction is not used: the run config's "
                      f"data.test_path ({base.data.test_path}) holds the test rows", stacklevel=2)
    splits = load_splits(base, frame)
    if not len(splits["test"]):
        raise ValueError(f"experiment '{exp.name}': the test split is empty ({len(frame):,} rows, test_fraction "
                         f"{base.data.split.test_fraction}); raise data.split.test_fraction or the rows")
    rate = exp.data.negative_sampling_rate
    if rate is not None:
        train = splits["train"]
        keep = (train[base.schema.label].to_numpy() == 1) | (
            np.random.default_rng(exp.data.sampling_seed).random(len(train)) < rate)
        splits["train"] = train[keep].reset_index(drop=True)
        data_id["negative_sampling"] = {"rate": rate, "seed": exp.data.sampling_seed}
    return splits, data_id


def _eval_data(splits: dict[str, pd.DataFrame], base: RunConfig) -> EvalData:
    schema = base.schema
    attributes = {f: dict(a) for f, a in (base.formats or {}).items()}
    if not attributes:
        attributes = {f: {} for f in sorted(splits["train"][schema.format].astype(str).unique())}
    out = EvalData({}, {}, {}, attributes)
    for split in ("valid", "test"):
        frame = splits[split]
        out.labels[split] = frame[schema.label].to_numpy().astype(np.int8)
        out.formats[split] = frame[schema.format].astype(str).str.strip().to_numpy()
        tp = schema.true_prob
        out.true_prob[split] = frame[tp].to_numpy(dtype=np.float64) if tp and tp in frame.columns else None
    return out


def _fit(cfg: RunConfig, train: pd.DataFrame, valid: pd.DataFrame) -> Any:
    from camoe.pipeline import CTRPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gate warnings are kept in diagnostics_ and reported; no console noise
        return CTRPipeline(cfg).fit(train, valid if len(valid) else None)


def execute_run(run: RunSpec, splits: dict[str, pd.DataFrame], run_dir: Path) -> dict[str, Any]:
    """Train one run and write ``predictions.npz``, the artifact(s) and (last) ``run.json``.

    ``joint``: one pipeline over all formats. ``per_format`` / ``per_task``: one single-task pipeline per format /
    per task of the configuration's grouping, each fitted on its formats' training and validation rows only and
    scoring those formats' rows.

    Returns:
        the ``run.json`` payload.
    """
    cfg, conf = run.config, run.configuration
    schema = cfg.schema
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    preds = {s: np.full(len(splits[s]), np.nan) for s in ("valid", "test")}
    info: dict[str, Any] = {}
    if conf.training == "joint":
        pipe = _fit(cfg, splits["train"], splits["valid"])
        for s in preds:
            if len(splits[s]):
                preds[s] = pipe.predict_proba(splits[s], source=s)
        pipe.save(run_dir / "model")
        format_to_task = dict(pipe.layout_.format_to_task)
        info = {"gates": pipe.diagnostics_, "best_step": pipe.train_result_.best_step,
                "steps": pipe.train_result_.steps, "rows_per_s": pipe.train_result_.rows_per_s}
    else:
        fmt = {s: splits[s][schema.format].astype(str).str.strip().to_numpy() for s in ("train", "valid", "test")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gate warnings are kept in diagnostics_ and reported; no console noise
            per = "task" if conf.training == "per_task" else "format"
            groups = separate_groups(cfg, sorted(set(fmt["train"])), per)
            models = fit_per_format(single_task_config(cfg), FrameSource(splits["train"], "train"),
                                    FrameSource(splits["valid"], "valid") if len(splits["valid"]) else None,
                                    groups=groups)
        format_to_task, per_format = {}, {}
        for name, pipe in models.items():
            for s in preds:
                sel = np.isin(fmt[s], groups[name])
                if sel.any():
                    preds[s][sel] = pipe.predict_proba(splits[s][sel], source=f"{s} rows of {name}")
            pipe.save(run_dir / "models" / name)
            format_to_task.update({f: name for f in groups[name]})
            per_format[name] = {"best_step": pipe.train_result_.best_step, "steps": pipe.train_result_.steps,
                                "gates": pipe.diagnostics_}
        missing = sorted(set(fmt["test"]) - set(format_to_task))
        if missing:
            raise ValueError(f"run {conf.name} seed {run.seed}: formats {missing} have test rows but no training "
                             f"rows, so no single-task model")
        info = {"per_format": per_format}
    seconds = time.perf_counter() - t0
    np.savez(run_dir / "predictions.npz", valid=preds["valid"], test=preds["test"])
    payload = {
        "key": run.key, "configuration": conf.name, "model": conf.model, "grouping": conf.grouping,
        "ablation": conf.ablation, "training": conf.training, "seed": run.seed, "seconds": seconds,
        "format_to_task": format_to_task, "config": cfg.to_dict(), "train": info,
    }
    write_json(run_dir / "run.json", payload, default=str)
    return payload


def run_experiment(
    path: str | Path,
    quick: bool = False,
    output_dir: str | Path | None = None,
    log: Log | None = None,
    mlflow_uri: str | None = None,
    report: bool = True,
    report_only: bool = False,
) -> ExperimentOutcome:
    """Run (or continue) the experiment in ``path`` and write its report.

    Args:
        path: experiment YAML (see ``camoe.experiments.spec``).
        quick: ``quick.rows`` rows, the first ``quick.seeds`` seeds, ``quick.overrides`` and fewer bootstrap
            resamples; written under ``<output_dir>-quick`` unless ``output_dir`` is given.
        output_dir: overrides the experiment's ``output_dir``.
        log: receives one line per step (the CLI prints them).
        mlflow_uri: log to this MLflow tracking URI (also enabled by ``mlflow.enabled`` in the file).
        report: write the report (tables, PNGs, HTML); False only trains.
        report_only: train nothing; report on the runs finished so far (a partial grid: the report lists the
            missing runs, and configurations without any finished run are left out).

    Returns:
        ``ExperimentOutcome``.

    Raises:
        ConfigError: invalid experiment or run configs (naming the file and key).
        ValueError: data problems (naming the file, column or value).
    """
    from camoe.config import load_config
    from camoe.experiments.spec import run_config_path

    say = log or (lambda _msg: None)
    exp, folder = load_experiment(path)
    base = load_config(run_config_path(exp, folder))
    out = Path(output_dir or exp.output_dir or f"runs/experiments/{exp.name}")
    if quick and output_dir is None:
        out = out.with_name(out.name + "-quick")
    t0 = time.perf_counter()
    splits, data_id = prepare_data(exp, base, quick)
    outcome = ExperimentOutcome(out, [], data_seconds=time.perf_counter() - t0)
    say(f"data: {len(splits['train']):,} train / {len(splits['valid']):,} valid / {len(splits['test']):,} test rows "
        f"({outcome.data_seconds:.1f} s)")
    extra: dict[str, Any] = deep_quick(exp) if quick else {}
    if exp.data.negative_sampling_rate is not None:
        extra = _merge(extra, {"train": {"negative_sampling_rate": exp.data.negative_sampling_rate}})
    configurations = expand_configurations(exp, folder, extra)
    seeds = exp.seeds[: exp.quick.seeds] if quick else exp.seeds
    runs = expand_runs(configurations, seeds, data_id)
    outcome.runs = runs
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    evaluation = _eval_data(splits, base)
    for s in ("valid", "test"):
        np.savez(data_dir / f"{s}.npz", labels=evaluation.labels[s], formats=evaluation.formats[s].astype(str),
                 true_prob=evaluation.true_prob[s] if evaluation.true_prob[s] is not None else np.zeros(0))
    say(f"{len(configurations)} configurations × {len(seeds)} seeds = {len(runs)} runs -> {out}")
    for i, run in enumerate(runs, 1):
        run_dir = out / "runs" / run.key
        if report_only:
            (outcome.cached if (run_dir / "run.json").is_file() else outcome.missing).append(run.key)
            continue
        if (run_dir / "run.json").is_file():
            outcome.cached.append(run.key)
            say(f"[{i}/{len(runs)}] {run.configuration.name} seed {run.seed}: cached ({run.key})")
            continue
        payload = execute_run(run, splits, run_dir)
        outcome.trained.append(run.key)
        outcome.run_seconds[run.key] = payload["seconds"]
        say(f"[{i}/{len(runs)}] {run.configuration.name} seed {run.seed}: trained in {payload['seconds']:.1f} s "
            f"({run.key})")
    if report:
        from camoe.experiments.report import write_report

        t1 = time.perf_counter()
        finished = [r for r in runs if r.key not in outcome.missing]
        if outcome.missing:
            say(f"report on {len(finished)} finished runs; {len(outcome.missing)} runs not finished yet")
        missing = [r for r in runs if r.key in outcome.missing]
        outcome.report_files = write_report(exp, configurations_of(finished), finished, evaluation, out,
                                            quick=quick, log=say, missing=missing)
        outcome.analysis_seconds = time.perf_counter() - t1
        say(f"report written to {out / 'report'} ({outcome.analysis_seconds:.1f} s)")
        if mlflow_uri is not None or exp.mlflow.enabled:
            from camoe.experiments.tracking import log_experiment

            uri = mlflow_uri or exp.mlflow.tracking_uri or (out / "mlruns").resolve().as_uri()
            log_experiment(uri, exp.mlflow.experiment_name or exp.name, runs, out)
            say(f"logged {len(runs)} runs to MLflow at {uri}")
    return outcome


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    from camoe.config import deep_merge

    return deep_merge(a, b)


def deep_quick(exp: ExperimentConfig) -> dict[str, Any]:
    """The ``--quick`` config patch applied to every run."""
    return dict(exp.quick.overrides)


def configurations_of(runs: list[RunSpec]) -> list[ConfigurationSpec]:
    """Configurations of a run list, in order, without duplicates."""
    seen: dict[str, ConfigurationSpec] = {}
    for run in runs:
        seen.setdefault(run.configuration.name, run.configuration)
    return list(seen.values())
