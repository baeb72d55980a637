"""``camoe tune``: hyper-parameter search with Optuna on the run config's validation split.

* Sampler: TPE (Bergstra et al. 2011), seeded. Pruner: median pruning on the mean validation AUC-PR reported after
  every evaluation (a trial is stopped when it is below the median of earlier trials at the same step).
* Storage: SQLite (``<output>/study.db``), so an interrupted study resumes where it stopped: ``--trials N`` counts
  the finished (complete or pruned) trials of the study, and only the missing ones run.
* The first trial is the config as it is (the defaults), so the result says how far the search moved from it.
* The search space is YAML (``DEFAULT_SPACE`` when none is given): ``key.path: {type: float|int|categorical, low,
  high, log, choices}``; categorical choices may be lists (e.g. expert widths).
* The data is read and split once; every trial fits on the same rows. The best trial's model is kept, evaluated on
  the test split next to the defaults' model, and its config is written as a ready ``best.yaml``.

The validation split must hold enough clicks per task to choose between settings: ``CTRPipeline.fit`` warns
otherwise (``camoe.evaluation.metrics.too_few_clicks``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from camoe.config import ConfigError, RunConfig, deep_merge, load_config

__all__ = ["DEFAULT_SPACE", "TuneOutcome", "load_space", "tune"]

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "train.learning_rate": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [1024, 2048, 4096]},
    "train.weight_decay": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
    "model.embedding_dim": {"type": "categorical", "choices": [4, 8, 16]},
    "model.num_experts": {"type": "int", "low": 2, "high": 6},
    "model.num_cross_layers": {"type": "int", "low": 1, "high": 3},
    "model.expert_hidden": {"type": "categorical", "choices": [[64, 32], [128, 64], [256, 128]]},
    "model.tower_hidden": {"type": "categorical", "choices": [[32], [64]]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
}


def load_space(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The search space: ``DEFAULT_SPACE`` or a YAML file of ``key.path: {type, low, high, log, choices}``.

    Raises:
        ConfigError: unreadable file, unknown type, or a range / choice list missing (naming the key).
    """
    if path is None:
        return DEFAULT_SPACE
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"search space {path}: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"search space {path}: expected a mapping of config keys to ranges")
    for key, spec in raw.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in ("float", "int", "categorical"):
            raise ConfigError(f"search space {path}: '{key}' needs type float, int or categorical, got {kind!r}")
        if kind == "categorical" and not spec.get("choices"):
            raise ConfigError(f"search space {path}: '{key}' (categorical) needs a non-empty choices list")
        if kind != "categorical" and ("low" not in spec or "high" not in spec):
            raise ConfigError(f"search space {path}: '{key}' ({kind}) needs low and high")
    return raw


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Config overrides for one trial (nested dict)."""
    patch: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            value = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "int":
            value = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:  # Optuna stores primitive choices; lists (widths) are chosen by their JSON text
            labels = [json.dumps(c) for c in spec["choices"]]
            value = json.loads(trial.suggest_categorical(key, labels))
        patch = deep_merge(patch, _nested(key, value))
    return patch


def _default_params(cfg: RunConfig, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The config's own values as trial parameters (for the first trial), where they lie in the space."""
    flat = cfg.to_dict()
    params = {}
    for key, spec in space.items():
        value: Any = flat
        for part in key.split("."):
            value = value[part]
        if spec["type"] == "categorical":
            label = json.dumps(value)
            if label in [json.dumps(c) for c in spec["choices"]]:
                params[key] = label
        elif float(spec["low"]) <= float(value) <= float(spec["high"]) and not (spec.get("log") and value <= 0):
            params[key] = value
    return params


@dataclass
class TuneOutcome:
    """What ``tune`` found: the best trial's parameters and scores, the defaults' scores, and the files written."""

    best_params: dict[str, Any]
    best_valid: float
    best_test: float | None
    default_valid: float | None
    default_test: float | None
    trials_run: int
    trials_total: int
    best_config: Path
    study: Path


def tune(
    config: str | Path, trials: int, output: str | Path, space: str | Path | None = None,
    overrides: dict[str, Any] | None = None, seed: int = 0, log: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> TuneOutcome:
    """Run (or resume) an Optuna study over ``space`` on ``config``'s data; write ``best.yaml``.

    Args:
        config: the run config YAML.
        trials: finished trials wanted in the study (complete or pruned, counting earlier runs of the same study).
        output: folder of ``study.db``, ``best.yaml``, ``trials.csv`` and the best trial's artifact (``best/``).
        space: search-space YAML, or None for ``DEFAULT_SPACE``.
        overrides: config overrides applied to every trial (``--set``).
        seed: TPE sampler seed.
        log: receives one line per trial.
        timeout_s: stop starting new trials after this many seconds.

    Returns:
        ``TuneOutcome``.

    Raises:
        ConfigError: invalid config or search space.
        ValueError: data problems (naming the file).
    """
    import optuna

    from camoe.pipeline import CTRPipeline
    from camoe.run import data_splits

    say = log or (lambda _msg: None)
    if trials < 1:
        raise ValueError(f"--trials {trials}: give at least one trial")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    base = load_config(config, overrides)
    search = load_space(space)
    splits = data_splits(base)
    CTRPipeline(base).check_rows(splits.valid, splits.names["valid"]) if splits.valid is not None else None
    if splits.valid is None:
        raise ValueError(f"{config}: tuning needs a validation split (data.split.valid_fraction > 0 or "
                         f"data.valid_path)")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # camoe prints every trial itself, failed ones with why
    study = optuna.create_study(
        study_name="camoe", storage=f"sqlite:///{(out / 'study.db').resolve()}", load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    if not study.trials:
        study.enqueue_trial(_default_params(base, search), user_attrs={"defaults": True})
    remaining = max(0, trials - len(finished))
    if finished:
        say(f"resuming study {out / 'study.db'}: {len(finished)} trials finished, {remaining} to run")

    warned: list[int] = []

    def objective(trial: Any) -> float:
        patch = _suggest(trial, search)
        cfg = load_config(config, deep_merge(overrides or {}, patch))
        evaluations = 0

        def report(entry: dict[str, Any]) -> None:
            nonlocal evaluations
            score = entry.get("valid_score")
            if score is None or math.isnan(score):
                return
            trial.report(score, step=evaluations)
            evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"mean validation AUC-PR {score:.4f} below the median at evaluation "
                                         f"{evaluations}")

        with warnings.catch_warnings():
            if warned:  # the data's warnings (e.g. too few validation clicks) are said by the first trial run only
                warnings.simplefilter("ignore")
            warned.append(trial.number)
            pipe = CTRPipeline(cfg).fit(splits.train, splits.valid, log=report, sources=splits.names)
        assert pipe.train_result_ is not None
        score = pipe.train_result_.best_score
        best_so_far = study.best_value if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else None
        if best_so_far is None or score > best_so_far:
            pipe.save(out / "best")  # the best model so far: evaluated on test at the end
        if trial.user_attrs.get("defaults"):
            pipe.save(out / "defaults")
        return score

    def announce(_study: Any, trial: Any) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        reason = (getattr(trial, "system_attrs", None) or {}).get("fail_reason")
        if reason:
            value += f" ({reason})"
        say(f"trial {trial.number}: mean validation AUC-PR {value}  {trial.params}")

    run_before = len(study.trials)
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout_s, callbacks=[announce], catch=(FloatingPointError,))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError("no trial finished: every trial was pruned or failed")
    best = study.best_trial
    best_patch: dict[str, Any] = {}
    for key, value in best.params.items():
        spec = search.get(key, {"type": "float"})
        best_patch = deep_merge(best_patch, _nested(key, json.loads(value) if spec["type"] == "categorical" else value))
    best_cfg = load_config(config, deep_merge(overrides or {}, best_patch)).to_dict()
    best_path = out / "best.yaml"
    best_path.write_text(f"# camoe tune: trial {best.number} of {len(study.trials)}, mean validation AUC-PR "
                         f"{best.value:.4f}\n" + yaml.safe_dump(best_cfg, sort_keys=False))
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    default_trial = next((t for t in study.trials if t.user_attrs.get("defaults")), None)
    tests: dict[str, float | None] = {"best": None, "defaults": None}
    if splits.test is not None:
        for name in tests:
            folder = out / name
            if (folder / "manifest.json").is_file():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tests[name] = CTRPipeline.load(folder).evaluate(splits.test, "test")["macro"]["auc_pr"]
    return TuneOutcome(
        best_params={k: (json.loads(v) if search.get(k, {}).get("type") == "categorical" else v)
                     for k, v in best.params.items()},
        best_valid=float(best.value), best_test=tests["best"],
        default_valid=default_trial.value if default_trial is not None else None, default_test=tests["defaults"],
        trials_run=len(study.trials) - run_before, trials_total=len(study.trials), best_config=best_path,
        study=out / "study.db")
