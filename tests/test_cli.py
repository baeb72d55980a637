"""The ``camoe`` command line, run in-process through ``camoe.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import camoe
from camoe.cli import main

TINY = {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]}


def _write_config(tmp_path: Path, log_path: Path, **extra_train: object) -> Path:
    raw = yaml.safe_load(camoe.demo_config_path().read_text())
    raw["data"]["path"] = str(log_path)
    raw["model"].update(TINY)
    raw["train"].update({"batch_size": 512, "epochs": 3, **extra_train})
    raw["output_dir"] = str(tmp_path / "unused_default_output")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """generate -> train once for the module; returns the paths involved."""
    tmp = tmp_path_factory.mktemp("cli")
    log = tmp / "log.parquet"
    assert main(["generate", "--rows", "5000", "--seed", "3", "--output", str(log)]) == 0
    frame = pd.read_parquet(log)
    holdout = tmp / "holdout.csv"
    frame.tail(1000).to_csv(holdout, index=False)
    config = _write_config(tmp, log)
    model = tmp / "model"
    status = main(["train", str(config), "--set", "train.epochs=1", "--no-progress", "--output", str(model)])
    return {"tmp": tmp, "log": log, "holdout": holdout, "config": config, "model": model, "status": status}


def test_generate_writes_requested_rows(trained) -> None:
    frame = pd.read_parquet(trained["log"])
    assert len(frame) == 5000
    assert {"ts", "user_id", "format", "interests", "click", "p_true"} <= set(frame.columns)
    assert frame["ts"].is_monotonic_increasing


def test_generate_csv(tmp_path, capsys) -> None:
    out = tmp_path / "log.csv"
    assert main(["generate", "--rows", "300", "--output", str(out)]) == 0
    assert len(pd.read_csv(out)) == 300
    assert "300" in capsys.readouterr().out


def test_train_writes_artifact_with_metrics_and_overrides(trained) -> None:
    assert trained["status"] == 0
    model = trained["model"]
    for name in ("model.safetensors", "config.json", "encoder.json", "tasks.json", "metrics.json", "manifest.json"):
        assert (model / name).is_file(), name
    config = json.loads((model / "config.json").read_text())
    assert config["train"]["epochs"] == 1  # --set override applied over the YAML's 3
    assert config["model"]["embedding_dim"] == 4
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"audio", "video", "display"}
    assert metrics["train"]["rows"] == 3500  # temporal split 70 / 10 / 20 of 5000
    assert isinstance(metrics["warnings"], list) and set(metrics["pctr_quantiles"]) == {"audio", "video", "display"}
    assert not any("'audio'" in w for w in metrics["warnings"])  # audio ranks its rows (this tiny model's display
    # head may come out constant after one epoch on 350 display rows: the flag then says so)
    assert not (trained["tmp"] / "unused_default_output").exists()


def test_evaluate_on_csv(trained, capsys) -> None:
    out = trained["tmp"] / "eval_out"
    status = main(["evaluate", str(trained["model"]), "--data", str(trained["holdout"]), "--output", str(out)])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(m["rows"] for m in metrics["tasks"].values()) == 1000
    assert set(metrics["tasks"]) == {"audio", "video", "display"}
    assert "AUC-PR" in capsys.readouterr().out


def test_predict_writes_one_finite_pctr_per_row(trained, capsys) -> None:
    out = trained["tmp"] / "p.csv"
    assert main(["predict", str(trained["model"]), str(trained["holdout"]), "--output", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == 1000
    assert pred["row"].tolist() == list(range(1000))
    pctr = pred["pctr"].to_numpy()
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    holdout = pd.read_csv(trained["holdout"])
    assert pred["format"].tolist() == holdout["format"].tolist()
    modality = {f: f.split("_")[0] for f in holdout["format"].unique()}
    assert pred["task"].tolist() == holdout["format"].map(modality).tolist()
    loaded = camoe.CTRPipeline.load(trained["model"])
    assert np.allclose(pctr, loaded.predict_proba(holdout), rtol=1e-6, atol=1e-12)
    assert "pCTRs" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["generate", "train", "evaluate", "predict", "demo"])
def test_subcommand_help_exits_zero(command, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_top_level_help_and_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert camoe.__version__ in capsys.readouterr().out


def test_bad_config_key_exits_2_naming_key(tmp_path, capsys) -> None:
    config = _write_config(tmp_path, tmp_path / "log.parquet")
    raw = yaml.safe_load(config.read_text())
    raw["train"]["learning_rte"] = 0.1
    config.write_text(yaml.safe_dump(raw))
    status = main(["train", str(config), "--no-progress", "--output", str(tmp_path / "m")])
    assert status == 2
    err = capsys.readouterr().err
    assert "learning_rte" in err
    assert "learning_rate" in err  # the accepted keys are listed
    assert not (tmp_path / "m").exists()


def test_bad_set_override_exits_2(tmp_path, capsys) -> None:
    config = _write_config(tmp_path, tmp_path / "log.parquet")
    status = main(["train", str(config), "--set", "model.num_expertz=3", "--no-progress"])
    assert status == 2
    assert "num_expertz" in capsys.readouterr().err


def test_missing_data_file_exits_2(tmp_path, capsys) -> None:
    config = _write_config(tmp_path, tmp_path / "no_such_log.parquet")
    assert main(["train", str(config), "--no-progress", "--output", str(tmp_path / "m")]) == 2
    assert "no_such_log.parquet" in capsys.readouterr().err


def test_evaluate_missing_artifact_exits_2(tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(tmp_path / "x.csv")]) == 2
    assert "nope" in capsys.readouterr().err


def test_tune_runs_trials_writes_a_ready_config_and_resumes_an_interrupted_study(trained, tmp_path, capsys) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("train.learning_rate: {type: float, low: 0.001, high: 0.01, log: true}\n"
                     "model.expert_hidden: {type: categorical, choices: [[8], [16]]}\n")
    out = tmp_path / "tune"
    args = ["tune", str(trained["config"]), "--space", str(space), "--output", str(out), "--set", "train.epochs=1"]
    assert main([*args, "--trials", "2"]) == 0
    first = capsys.readouterr().out
    assert "trial 0:" in first and "trial 1:" in first and "defaults: mean validation AUC-PR" in first
    assert main([*args, "--trials", "3"]) == 0  # the same study, one more trial
    second = capsys.readouterr().out
    assert "resuming study" in second and "2 trials finished, 1 to run" in second and "trial 2:" in second
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert 0.001 <= best["train"]["learning_rate"] <= 0.01 and best["model"]["expert_hidden"] in ([8], [16])
    assert camoe.load_config(out / "best.yaml").train.epochs == 1  # a ready config
    assert main(["tune", str(trained["config"]), "--space", str(tmp_path / "none.yaml"), "--output",
                 str(tmp_path / "t2")]) == 2


def test_train_and_evaluate_write_a_report_and_log_to_mlflow(trained, tmp_path) -> None:
    import html.parser

    report = (trained["model"] / "report.html").read_text()
    for heading in ("Metrics on the test split", "Reliability per task", "pCTR distribution per format", "Gates",
                    "Training"):
        assert heading in report, heading
    assert report.count("data:image/png;base64,") >= 4
    html.parser.HTMLParser().feed(report)  # well-formed enough to parse
    uri = (tmp_path / "mlruns").resolve().as_uri()
    out = tmp_path / "tracked"
    assert main(["train", str(trained["config"]), "--no-progress", "--set", "train.epochs=1", "--output", str(out),
                 "--mlflow", uri, "--mlflow-experiment", "t"]) == 0
    assert main(["evaluate", str(out), "--data", str(trained["holdout"]), "--output", str(tmp_path / "ev"),
                 "--mlflow", uri, "--mlflow-experiment", "t"]) == 0
    assert (tmp_path / "ev" / "report.html").is_file()
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    assert len(runs) == 2
    train_run = runs[runs["tags.mlflow.runName"] == "tracked"].iloc[0]
    assert train_run["params.train.epochs"] == "1" and train_run["params.model.name"] == "camoe"
    assert "metrics.test.auc_pr.formats.audio_music" in runs.columns and "metrics.valid_auc_pr" in runs.columns
    history = mlflow.tracking.MlflowClient().get_metric_history(train_run["run_id"], "train_loss")
    assert len(history) >= 1
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(train_run["run_id"])}
    assert {"metrics.json", "report.html", "model"} <= artifacts


def test_the_pooled_single_task_and_per_task_baselines_train_with_camoe_train(trained, tmp_path, capsys) -> None:
    base = ["train", str(trained["config"]), "--no-progress", "--set", "train.epochs=1"]
    assert main([*base, "--baseline", "pooled", "--output", str(tmp_path / "pooled")]) == 0
    pooled = camoe.CTRPipeline.load(tmp_path / "pooled")
    assert pooled.layout_.tasks == ("all",) and pooled.config.model.name == "dcn_v2"
    assert main([*base, "--baseline", "single_task", "--output", str(tmp_path / "single")]) == 0
    out = capsys.readouterr().out
    assert "single-task dcn_v2 models (one per format)" in out
    formats = sorted(p.name for p in (tmp_path / "single" / "formats").iterdir())
    assert len(formats) == 7
    metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(formats) and set(metrics["modality"]) == {"audio", "video", "display"}
    assert sum(m["rows"] for m in metrics["formats"].values()) == 1000  # every test row scored by its format's model
    one = camoe.CTRPipeline.load(tmp_path / "single" / "formats" / "video_takeover")
    assert one.layout_.tasks == ("all",)
    assert (tmp_path / "single" / "report.html").is_file()
    assert main([*base, "--baseline", "per_task", "--output", str(tmp_path / "per_task")]) == 0
    assert "single-task dcn_v2 models (one per task)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "per_task" / "metrics.json").read_text())
    assert metrics["model_formats"]["display"] == ["display_homepage", "display_leaderboard"]  # modality grouping
    assert sum(m["rows"] for m in metrics["formats"].values()) == 1000  # every test row scored by its task's model
    assert sorted(p.name for p in (tmp_path / "per_task" / "tasks").iterdir()) == ["audio", "display", "video"]


def test_ctrl_c_prints_one_line_with_how_to_continue_and_exits_130(monkeypatch, capsys, tmp_path) -> None:
    import camoe.tuning

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(camoe.tuning, "tune", interrupted)
    assert main(["tune", str(camoe.demo_config_path()), "--trials", "1", "--output", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == ("camoe tune: interrupted. Finished trials are kept in the study; run the same command "
                           "again to continue it.")


def test_serve_refuses_timeouts_that_are_not_a_positive_number_of_seconds(capsys) -> None:
    for option, value in (("--header-timeout", "-1"), ("--body-timeout", "0"), ("--body-timeout", "nan")):
        with pytest.raises(SystemExit) as stop:
            main(["serve", "runs/none", option, value])
        assert stop.value.code == 2 and "positive number of seconds" in capsys.readouterr().err
