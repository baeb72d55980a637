"""camoe.experiments: statistics, Pareto front, calibration, sampler, grid expansion, cache, report, MLflow, and
cases B05 (gate diagnostics), B24 (downsampling correction applied exactly once) and B26 (same seed, same result)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import camoe
from camoe.cli import main
from camoe.calibration import PosthocCalibration
from camoe.config import ConfigError, ModelConfig
from camoe.evaluation.metrics import binary_metrics, expected_calibration_error
from camoe.experiments import (
    bootstrap_ci,
    expand_configurations,
    load_experiment,
    paired_bootstrap_lift,
    pareto_front,
    run_experiment,
)
from camoe.model import MODELS, build_model
from camoe.schema import InputSpec
from camoe.data.sampling import balanced_order, row_groups

# ----------------------------------------------------------------------------- statistics


def test_pareto_front_on_hand_made_points() -> None:
    points = np.array([
        [0.10, 0.00, 0.05],   # a: best on objective 0
        [0.00, 0.10, 0.05],   # b: best on objective 1
        [0.05, 0.05, 0.05],   # c: balanced, nobody dominates it
        [0.04, 0.04, 0.04],   # d: dominated by c
        [0.05, 0.05, 0.05],   # e: equal to c -> not dominated either
        [-0.1, -0.1, 0.20],   # f: best on objective 2 only
    ])
    assert pareto_front(points).tolist() == [True, True, True, False, True, True]
    # a NaN objective cannot rank configurations: that column is left out, so d is still dominated by c
    with_nan = np.column_stack([points, [np.nan, 1, 1, 1, 1, 1]])
    assert pareto_front(with_nan).tolist() == [True, True, True, False, True, True]
    assert pareto_front(np.array([[1.0, 1.0], [2.0, 2.0]])).tolist() == [False, True]
    with pytest.raises(ValueError, match="must be"):
        pareto_front(np.zeros(3))


def test_bootstrap_ci_known_case() -> None:
    # the mean of n Bernoulli(0.3) draws: the percentile interval must be close to the normal one, ±1.96·sqrt(pq/n)
    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.3).astype(float)
    est, lo, hi = bootstrap_ci(y, y, samples=400, seed=0, statistic=lambda _l, s: float(np.mean(s)))
    half = 1.96 * np.sqrt(est * (1 - est) / len(y))
    assert est == pytest.approx(y.mean())
    assert lo == pytest.approx(est - half, abs=0.004) and hi == pytest.approx(est + half, abs=0.004)
    # a perfect ranking has AUC-PR 1 in every resample
    scores = y + 0.01 * rng.random(len(y))
    assert bootstrap_ci(y, scores, samples=50) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_lift() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(4000) * 0.2
    y = (rng.random(4000) < p).astype(float)
    noise = rng.random(4000)
    assert paired_bootstrap_lift(y, p, p, samples=50) == (0.0, 0.0, 0.0)
    # a monotone transform does not change AUC-PR: zero lift, zero-width paired interval
    assert paired_bootstrap_lift(y, np.sqrt(p), p, samples=50)[1:] == (0.0, 0.0)
    lift, lo, hi = paired_bootstrap_lift(y, np.vstack([p, p]), noise, samples=100)
    assert lift > 0.3 and 0 < lo < lift < hi
    lift, lo, hi = paired_bootstrap_lift(y, noise, p, samples=100)
    assert lift < 0 and hi < 0


def test_b24_downsampling_correction_and_calibration_ratio(rows) -> None:
    assert float(camoe.correct_downsampling(np.array([0.5]), 0.1)[0]) == pytest.approx(0.0909, abs=1e-4)
    frame = rows("format,click,pred\naudio,1,0.10\naudio,0,0.10\naudio,0,0.10\naudio,0,0.10\naudio,0,0.10")
    m = binary_metrics(frame["click"].to_numpy(), frame["pred"].to_numpy())
    assert m["calibration_ratio"] == pytest.approx(0.5)


def test_post_hoc_calibration_fitted_on_valid_reduces_ece() -> None:
    rng = np.random.default_rng(0)
    q = rng.random(40_000) * 0.1
    y = (rng.random(40_000) < q).astype(int)
    task = (rng.random(40_000) < 0.5).astype(int)
    pctr = np.where(task == 0, np.minimum(3 * q, 1.0), 0.5 * q)  # task 0 over-predicts 3x, task 1 under-predicts 2x
    valid, test = slice(0, 20_000), slice(20_000, None)
    before = expected_calibration_error(y[test], pctr[test])
    for method in ("isotonic", "platt"):
        cal = PosthocCalibration.fit(method, pctr[valid], y[valid], task[valid], ["t0", "t1"])
        after = cal.apply(pctr[test], task[test], ["t0", "t1"])
        assert sorted(cal.params) == ["t0", "t1"]
        assert expected_calibration_error(y[test], after) < 0.4 * before
        for t in (0, 1):
            sel = task[test] == t
            assert after[sel].sum() / y[test][sel].sum() == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="isotonic"):
        PosthocCalibration.fit("beta", pctr, y, task, ["t0", "t1"])


# ----------------------------------------------------------------------------- sampler and baselines


def test_balanced_order_shares_and_determinism() -> None:
    groups = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)
    shares = torch.tensor([0.5, 0.25, 0.25])
    idx = balanced_order(groups, shares, 100, torch.Generator().manual_seed(0))
    assert torch.bincount(groups[idx], minlength=3).tolist() == [50, 25, 25]
    assert len(set(idx[groups[idx] == 0].tolist())) == 50  # enough rows: drawn without replacement
    assert set(idx[groups[idx] == 2].tolist()) <= {98, 99}  # too few rows: oversampled
    again = balanced_order(groups, shares, 100, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    fmts = {"a": {"modality": "audio"}, "v": {"modality": "video"}}
    with pytest.raises(ValueError, match=r"unknown groups \['display'\]"):
        row_groups(np.array([0, 1]), ["a", "v"], fmts, "modality", {"audio": 1, "display": 1})
    with pytest.raises(ValueError, match="have no attribute 'slot'"):
        row_groups(np.array([0, 1]), ["a", "v"], fmts, "slot")


def test_balanced_sampling_trains_with_target_shares(make_config, b04_rows) -> None:
    cfg = make_config(train={"epochs": 1, "batch_size": 8, "balanced_sampling": True,
                             "balance_shares": {"audio": 0.5, "video": 0.25, "display": 0.25}})
    pipe = camoe.CTRPipeline(cfg).fit(b04_rows)
    assert np.isfinite(pipe.predict_proba(b04_rows)).all()
    bad = make_config(train={"balanced_sampling": True, "balance_by": "slot"})
    with pytest.raises(ConfigError, match="no attribute 'slot'"):
        camoe.CTRPipeline(bad).fit(b04_rows)


def test_single_network_baselines_and_mmoe_equivalence() -> None:
    spec = InputSpec(("device",), (5,), ("genre",), (6,), 3, ("bid",))
    cfg = ModelConfig(embedding_dim=4, num_experts=3, expert_hidden=[8], tower_hidden=[4])
    for name, cross in (("dnn", False), ("dcn_v2", True)):
        model = build_model(cfg.model_copy(update={"name": name}), spec, 1)
        assert model.experts.num_experts == 1 and (model.experts.cross is not None) == cross
    # MMoE is CAMoE with MLP experts: built from the same seed they hold the same weights
    torch.manual_seed(0)
    mmoe = MODELS["mmoe"](spec, 2, cfg)
    torch.manual_seed(0)
    camoe_mlp = MODELS["camoe"](spec, 2, cfg.model_copy(update={"expert_type": "mlp"}))
    assert all(torch.equal(a, b) for a, b in zip(mmoe.state_dict().values(), camoe_mlp.state_dict().values()))


# ----------------------------------------------------------------------------- experiment files

TINY = {
    "name": "tiny",
    "run_config": "demo",
    "data": {"synthetic": {"rows": 8000, "seed": 0}},
    "overrides": {"train": {"epochs": 1, "batch_size": 1024}, "model": {"expert_hidden": [16], "tower_hidden": [8]}},
    "seeds": [0, 1],
    "ablations": {"no_masking": {"train": {"masking": False}}},
    "grid": [
        {"models": ["camoe"], "groupings": ["modality2"], "ablations": ["none", "no_masking"]},
        {"models": ["dcn_v2"], "training": "per_format"},
    ],
    "baseline": "single_task:dcn_v2",
    "bootstrap": {"samples": 20},
    "quick": {"rows": 8000, "seeds": 1, "bootstrap_samples": 10},
    "claims": {"masked": "camoe:modality2", "unmasked": "camoe:modality2+no_masking", "dcn": "camoe:modality2",
               "mlp": "camoe:modality2+no_masking"},
}


def _write(tmp_path: Path, spec: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_presets_expand_and_name_their_configurations() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "experiments"
    exp, folder = load_experiment(root / "paper.yaml")
    names = [c.name for c in expand_configurations(exp, folder)]
    for expected in ("camoe:single", "camoe:modality2", "camoe:modality", "camoe:content", "camoe:per_format",
                     "single_task:dnn", "single_task:dcn_v2", "dcn_v2:single", "shared_bottom:modality2",
                     "mmoe:modality2", "cgc:modality2", "camoe:modality2+no_masking", "camoe:modality2+global_norm",
                     "camoe:modality2+balanced", "camoe:modality2+experts_2", "camoe:modality2+experts_8"):
        assert expected in names
    assert len(exp.seeds) >= 3
    ob, ob_folder = load_experiment(root / "open_bandit.yaml")
    ob_confs = expand_configurations(ob, ob_folder)
    assert "camoe:slot" in [c.name for c in ob_confs] and ob_confs[0].config.data.reader == "open_bandit"


def test_experiment_bad_input_names_file_and_key(tmp_path: Path) -> None:
    bad = _write(tmp_path, {**TINY, "seedz": [0]})
    with pytest.raises(ConfigError, match=r"(?s)exp\.yaml.*seedz: unknown key; accepted keys here: ablations"):
        load_experiment(bad)
    bad = _write(tmp_path, {**TINY, "grid": [{"models": ["camoe"], "ablations": ["nope"]}]})
    with pytest.raises(ConfigError, match=r"unknown ablations \['nope'\]"):
        load_experiment(bad)
    exp, folder = load_experiment(_write(tmp_path, {**TINY, "baseline": "single_task:dnn"}))
    with pytest.raises(ConfigError, match="baseline 'single_task:dnn' is not a configuration"):
        expand_configurations(exp, folder)
    exp, folder = load_experiment(_write(tmp_path, {**TINY, "grid": [{"models": ["xgboost"]}]}))
    with pytest.raises(ConfigError, match="model xgboost"):
        expand_configurations(exp, folder)
    assert main(["experiment", str(tmp_path / "missing.yaml")]) == 2


def test_experiment_cache_report_and_b26_determinism(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--quick", "--output", str(out)]) == 0
    assert "3 runs trained, 0 cached" in capsys.readouterr().out
    report = out / "report"
    results = pd.read_csv(report / "results.csv")
    assert set(results["configuration"]) == {"camoe:modality2", "camoe:modality2+no_masking", "single_task:dcn_v2"}
    assert set(results["calibration"]) == {"none", "isotonic", "platt"}
    assert {"format", "modality", "all"} <= set(results["slice_type"])
    assert not results.duplicated(["run_key", "slice_type", "slice", "calibration", "metric"]).any()
    page = (report / "index.html").read_text()
    assert "data:image/png;base64," in page and "src='reliability" not in page  # images embedded
    md = (report / "report.md").read_text()
    assert "AUC-PR lift over single_task:dcn_v2" in md and "Pareto" in md and "ECE" in md
    assert list(report.glob("pareto_modality.png")) and list(report.glob("gates_camoe_modality2.png"))
    lifts = pd.read_csv(report / "lifts.csv")
    base = lifts[lifts["configuration"] == "single_task:dcn_v2"].dropna(subset=["lift"])
    assert (base["lift"] == 0).all()
    # B05: independently initialised experts -> no identical-expert warning from any MoE run
    for run_json in (out / "runs").glob("*/run.json"):
        gates = json.loads(run_json.read_text())["train"].get("gates") or {}
        assert gates.get("identical_experts", []) == []
    # re-run: every run cached, nothing trained
    again = run_experiment(path, quick=True, output_dir=out, report=False)
    assert again.trained == [] and len(again.cached) == 3
    # an interrupted grid continues: remove one finished run; only it is trained again, bit-identically (B26)
    victim = next(p for p in (out / "runs").glob("*/run.json")
                  if json.loads(p.read_text())["configuration"] == "camoe:modality2")
    before = np.load(victim.parent / "predictions.npz")["test"]
    victim.unlink()
    outcome = run_experiment(path, quick=True, output_dir=out, report=False)
    assert outcome.trained == [victim.parent.name] and len(outcome.cached) == 2
    np.testing.assert_array_equal(before, np.load(victim.parent / "predictions.npz")["test"])


def test_mlflow_logging_and_b05_gate_warnings_reach_the_report(tmp_path: Path) -> None:
    import mlflow  # in the test extra; optional for users (the [mlflow] extra)

    spec = {**TINY, "seeds": [0], "grid": [{"models": ["camoe"], "groupings": ["modality2"]}],
            "baseline": "camoe:modality2", "claims": {}}
    path = _write(tmp_path, spec)
    out = tmp_path / "out"
    uri = (tmp_path / "mlruns").as_uri()
    outcome = run_experiment(path, quick=True, output_dir=out, mlflow_uri=uri)
    client = mlflow.tracking.MlflowClient(uri)
    logged = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])}
    assert set(logged) == {"camoe:modality2/seed0", "report"}
    metrics = logged["camoe:modality2/seed0"].data.metrics
    assert 0 < metrics["auc_pr.format.audio_music"] <= 1 and "ece.modality.video" in metrics
    # B05: the report carries the pipeline's gate diagnostics
    run_json = out / "runs" / outcome.runs[0].key / "run.json"
    payload = json.loads(run_json.read_text())
    assert payload["train"]["gates"]["identical_experts"] == []
    assert not any("collapsed" in w for w in payload["train"]["gates"]["warnings"])
    tasks = list(payload["train"]["gates"]["mean_gate_weight"])
    payload["train"]["gates"]["mean_gate_weight"] = {t: [0.97, 0.01, 0.01, 0.01] for t in tasks}
    payload["train"]["gates"]["warnings"] = ["experts 0 and 1 have identical weights"]
    run_json.write_text(json.dumps(payload))
    assert main(["experiment", str(path), "--quick", "--output", str(out), "--report-only"]) == 0
    md = (out / "report" / "report.md").read_text()
    assert "experts 0 and 1 have identical weights" in md
    assert f"task '{tasks[0]}': gate collapsed on expert 0" in md


def test_b24_declared_sampling_rate_is_stored_and_applied_once(tmp_path: Path) -> None:
    spec = {**TINY, "seeds": [0], "grid": [{"models": ["camoe"], "groupings": ["modality2"]}],
            "baseline": "camoe:modality2", "claims": {},
            "data": {"synthetic": {"rows": 8000, "seed": 0}, "negative_sampling_rate": 0.2}}
    path = _write(tmp_path, spec)
    out = tmp_path / "out"
    outcome = run_experiment(path, quick=True, output_dir=out, report=False)
    run_dir = out / "runs" / outcome.runs[0].key
    pipe = camoe.CTRPipeline.load(run_dir / "model")
    assert pipe.config.train.negative_sampling_rate == 0.2  # stored in the artifact
    test = camoe.split_frame(camoe.generate_log(camoe.SyntheticConfig(rows=8000, seed=0)), pipe.config.data.split,
                             "ts")["test"]
    saved = np.load(run_dir / "predictions.npz")["test"]
    np.testing.assert_allclose(pipe.predict_proba(test), saved, rtol=0, atol=1e-12)
    batch = pipe.encode(test, "test", labels=False)
    with torch.no_grad():
        logits = pipe.model_(batch.cat_ids, batch.multi_ids, batch.dense).logits.numpy()
    own = np.take_along_axis(logits,
                             pipe.layout_.format_task_index[batch.format_ids.numpy()][:, None], axis=1)[:, 0]
    raw = 1.0 / (1.0 + np.exp(-own.astype(np.float64)))
    np.testing.assert_allclose(saved, camoe.correct_downsampling(raw, 0.2), rtol=0, atol=1e-9)  # once, not twice
    assert not np.allclose(saved, camoe.correct_downsampling(camoe.correct_downsampling(raw, 0.2), 0.2))
    # the corrected pCTR is calibrated on unsampled test rows (a model left uncorrected would over-predict ~5x)
    ratio = saved.sum() / test["click"].sum()
    assert 0.5 < ratio < 2.0 and raw.sum() / test["click"].sum() > 2.0


def test_an_explicit_task_map_in_the_run_config_does_not_break_a_grid_of_groupings(tmp_path: Path) -> None:
    raw = yaml.safe_load(camoe.demo_config_path().read_text())
    raw["grouping"] = {"strategy": "explicit", "task_map": {f: ("video" if f.startswith("video") else "other")
                                                            for f in raw["formats"]}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    spec = {"name": "maps", "run_config": "run.yaml", "data": {"synthetic": {"rows": 5000}}, "seeds": [0],
            "grid": [{"models": ["camoe"], "groupings": ["explicit", "single", "modality"]},
                     {"models": ["dcn_v2"], "training": "per_format"}],
            "baseline": "single_task:dcn_v2"}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    exp, folder = load_experiment(tmp_path / "exp.yaml")
    confs = {c.name: c for c in expand_configurations(exp, folder)}
    assert set(confs) == {"camoe:explicit", "camoe:single", "camoe:modality", "single_task:dcn_v2"}
    assert confs["camoe:explicit"].config.grouping.task_map["video_takeover"] == "video"
    assert confs["camoe:single"].config.grouping.task_map is None


def test_an_experiments_split_replaces_the_run_configs_and_changes_the_run_keys(tmp_path: Path) -> None:
    from camoe.experiments.runner import prepare_data

    base = camoe.load_config(camoe.demo_config_path())
    sizes, ids = {}, {}
    for name, split in (("own", None), ("large_test", {"method": "temporal", "valid_fraction": 0.05,
                                                       "test_fraction": 0.6})):
        spec = {**TINY, "data": {"synthetic": {"rows": 8000, "seed": 0}, **({"split": split} if split else {})}}
        exp, _ = load_experiment(_write(tmp_path, spec, f"{name}.yaml"))
        splits, ids[name] = prepare_data(exp, base, quick=False)
        sizes[name] = {k: len(v) for k, v in splits.items()}
    assert sizes["own"] == {"train": 5600, "valid": 800, "test": 1600}  # the demo config's 70 / 10 / 20
    assert sizes["large_test"] == {"train": 2800, "valid": 400, "test": 4800}  # 35 / 5 / 60
    assert ids["own"]["split"] != ids["large_test"]["split"]  # runs on another split never reuse cached runs
    with pytest.raises(ConfigError, match="test_fraction"):
        load_experiment(_write(tmp_path, {**TINY, "data": {"synthetic": {"rows": 8000},
                                                           "split": {"test_fraction": 1.5}}}))


def test_an_experiments_split_is_recorded_in_every_run_and_data_in_a_per_run_patch_is_refused(tmp_path: Path) -> None:
    split = {"method": "temporal", "valid_fraction": 0.05, "test_fraction": 0.6}
    exp, folder = load_experiment(_write(tmp_path, {**TINY, "data": {"synthetic": {"rows": 8000}, "split": split}}))
    for conf in expand_configurations(exp, folder):
        assert conf.config.data.split.model_dump() == {**split, "seed": 0}, conf.name  # what the artifact says
    splits = [conf.config.data.split for conf in expand_configurations(exp, folder)] + [exp.data.split]
    assert len({id(s) for s in splits}) == len(splits)  # no run config shares its split object with another
    for where, spec in (("overrides.data", {**TINY, "overrides": {"data": {"split": split}}}),
                        ("ablations.big_test.data",
                         {**TINY, "ablations": {"no_masking": {}, "big_test": {"data": {"split": split}}}}),
                        ("quick.overrides.data", {**TINY, "quick": {"overrides": {"data": {"split": split}}}})):
        with pytest.raises(ConfigError, match=rf"{where}: the data is prepared once for every run"):
            load_experiment(_write(tmp_path, spec, "patch.yaml"))
    with pytest.raises(ConfigError, match="test_fraction must be > 0"):
        load_experiment(_write(tmp_path, {**TINY, "data": {"synthetic": {"rows": 8000},
                                                           "split": {"test_fraction": 0.0}}}, "no_test.yaml"))


def test_an_experiment_whose_test_split_is_empty_is_refused_before_it_trains(tmp_path: Path) -> None:
    from camoe.experiments.runner import prepare_data

    spec = {**TINY, "data": {"synthetic": {"rows": 8000}, "split": {"test_fraction": 1e-9}}}
    exp, _ = load_experiment(_write(tmp_path, spec))
    with pytest.raises(ValueError, match=r"experiment 'tiny': the test split is empty \(8,000 rows, test_fraction"):
        prepare_data(exp, camoe.load_config(camoe.demo_config_path()), quick=False)


def test_an_experiments_test_fraction_beside_a_test_file_is_named_as_unused(tmp_path: Path) -> None:
    from camoe.experiments.runner import prepare_data

    log = camoe.generate_log(camoe.SyntheticConfig(rows=6000, seed=0))
    log.iloc[:5000].to_parquet(tmp_path / "log.parquet")
    log.iloc[5000:].to_parquet(tmp_path / "test.parquet")
    raw = yaml.safe_load(camoe.demo_config_path().read_text())
    raw["data"] = {"path": str(tmp_path / "log.parquet"), "test_path": str(tmp_path / "test.parquet")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    spec = {**TINY, "run_config": "run.yaml", "data": {"split": {"valid_fraction": 0.1, "test_fraction": 0.6}}}
    exp, folder = load_experiment(_write(tmp_path, spec))
    base = camoe.load_config(tmp_path / "run.yaml")
    with pytest.warns(UserWarning, match=r"data.split.test_fraction is not used: the run config's data.test_path"):
        splits, _ = prepare_data(exp, base, quick=False)
    assert len(splits["test"]) == 1000  # the test file's rows
