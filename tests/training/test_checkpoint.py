"""Checkpoints you can trust: damaged files are refused naming the file, ``--resume`` refuses a checkpoint of another
run with the list of what changed, says where it restarts before training, and says so when there is nothing to
resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import camoe
from camoe.cli import main
from camoe.training.checkpoint import Checkpoint, CheckpointError, fingerprint_diff


def _write_config(tmp: Path, log: Path) -> Path:
    config = tmp / "cfg.json"  # JSON is YAML
    config.write_text(json.dumps({
        "base": str(camoe.demo_config_path()), "data": {"path": str(log)},
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 2, "batch_size": 256, "checkpoint_every_steps": 5, "num_threads": 1},
    }))
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ck")
    log = tmp / "log.parquet"
    camoe.generate_log(camoe.SyntheticConfig(rows=3000, seed=1)).to_parquet(log)
    config = _write_config(tmp, log)
    assert main(["train", str(config), "--no-progress", "--output", str(tmp / "out"), "--set", "train.max_steps=7"]) == 0
    return {"tmp": tmp, "log": log, "config": config, "checkpoint": tmp / "out" / "checkpoints" / "last.pt"}


def _resume(run: dict[str, Path], checkpoint_bytes: bytes | None, *extra: str, tag: str) -> int:
    out = run["tmp"] / tag
    (out / "checkpoints").mkdir(parents=True)
    if checkpoint_bytes is not None:
        (out / "checkpoints" / "last.pt").write_bytes(checkpoint_bytes)
    return main(["train", str(run["config"]), "--no-progress", "--output", str(out), "--resume", *extra])


def test_checkpoint_with_flipped_bytes_is_refused_naming_the_file(run, capsys) -> None:
    data = bytearray(run["checkpoint"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    assert _resume(run, bytes(data), "--allow-change", "train.max_steps", tag="flipped") == 2
    err = capsys.readouterr().err
    assert "flipped/checkpoints/last.pt" in err and "checksum does not match" in err


def test_truncated_and_empty_checkpoints_are_refused_naming_the_file(run, capsys) -> None:
    data = run["checkpoint"].read_bytes()
    assert _resume(run, data[: len(data) // 3], tag="truncated") == 2
    err = capsys.readouterr().err
    assert "truncated/checkpoints/last.pt" in err and "truncated" in err and "payload bytes" in err
    assert _resume(run, data[:20], tag="stub") == 2
    assert "stub/checkpoints/last.pt" in capsys.readouterr().err
    assert _resume(run, b"", tag="empty") == 2
    err = capsys.readouterr().err
    assert "empty/checkpoints/last.pt" in err and "empty (0 bytes)" in err
    extended = run["tmp"] / "extended.pt"
    extended.write_bytes(data + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="extended.pt: the checkpoint has 4 bytes after its"):
        Checkpoint.load(extended)
    with pytest.raises(CheckpointError, match="not a camoe training checkpoint"):
        other = run["tmp"] / "foreign.pt"
        other.write_bytes(b"PK\x03\x04" + bytes(100))  # a zip (e.g. a plain torch.save) is not accepted
        Checkpoint.load(other)


@pytest.mark.parametrize(("override", "changed"), [
    ("train.learning_rate=0.01", "config.train.learning_rate: 0.003 -> 0.01"),
    ("train.batch_size=128", "config.train.batch_size: 256 -> 128"),
    ("train.seed=5", "config.train.seed: 0 -> 5"),
])
def test_resume_with_a_changed_config_is_refused_with_the_diff(run, capsys, override: str, changed: str) -> None:
    code = _resume(run, run["checkpoint"].read_bytes(), "--set", override, "--allow-change", "train.max_steps",
                   tag=f"changed-{override.split('=')[0]}")
    assert code == 2
    err = capsys.readouterr().err
    assert "--resume refused" in err and changed in err


def test_resume_with_a_changed_data_file_is_refused_with_the_diff(run, capsys) -> None:
    other = run["tmp"] / "other.parquet"
    camoe.generate_log(camoe.SyntheticConfig(rows=3000, seed=2)).to_parquet(other)
    code = _resume(run, run["checkpoint"].read_bytes(), "--set", f"data.path={other}", "--allow-change",
                   "train.max_steps", tag="changed-data")
    assert code == 2
    err = capsys.readouterr().err
    assert "--resume refused" in err and "data.formats.audio_music" in err and "data.numeric.bid_price" in err
    one_cell = run["tmp"] / "one_cell.parquet"  # the same log with one training row's device changed
    log = pd.read_parquet(run["log"])
    first = int(log["ts"].to_numpy().argmin())
    log.loc[first, "device"] = "android" if log.loc[first, "device"] != "android" else "ios"
    log.to_parquet(one_cell)
    code = _resume(run, run["checkpoint"].read_bytes(), "--set", f"data.path={one_cell}", "--allow-change",
                   "train.max_steps", tag="one-cell")
    assert code == 2
    err = capsys.readouterr().err
    assert "--resume refused" in err and "data.content" in err


def test_resume_says_where_it_restarts_before_training_and_accepts_allowed_changes(run, capsys) -> None:
    step = Checkpoint.load(run["checkpoint"]).state.step
    code = _resume(run, run["checkpoint"].read_bytes(), "--allow-change", "train.max_steps", tag="resumed")
    assert code == 0
    out = capsys.readouterr().out
    announced = out.index(f"resuming from {run['tmp'] / 'resumed' / 'checkpoints' / 'last.pt'}: step {step} (epoch")
    assert announced < out.index("  step ")  # said before the first training log line
    assert f"resumed from the checkpoint at step {step} of" in out


def test_resume_without_a_checkpoint_says_it_starts_fresh(run, capsys) -> None:
    assert _resume(run, None, tag="nothing") == 0
    out = capsys.readouterr().out
    assert "--resume: no checkpoint at" in out and "training starts from step 0" in out


def test_allow_change_accepts_only_keys_that_keep_the_state_meaningful() -> None:
    saved = {"config": {"train": {"epochs": 2, "learning_rate": 0.1}}}
    now = {"config": {"train": {"epochs": 4, "learning_rate": 0.1}}}
    assert fingerprint_diff(saved, now) == ["config.train.epochs: 2 -> 4"]
    assert fingerprint_diff(saved, now, ["train.epochs"]) == []
    with pytest.raises(ValueError, match="only .*train.epochs"):
        fingerprint_diff(saved, now, ["train.learning_rate"])


def test_a_checkpoint_from_before_a_config_key_existed_resumes_when_the_key_holds_its_default(run, capsys) -> None:
    old = Checkpoint.load(run["checkpoint"])
    del old.fingerprint["config"]["model"]["wide"]  # written by a camoe without model.wide (default false)
    older = run["tmp"] / "older.pt"
    old.save(older)
    assert _resume(run, older.read_bytes(), "--allow-change", "train.max_steps", tag="older") == 0
    assert "resuming from" in capsys.readouterr().out
    # the same key set to a value other than its default is a change, named with the saved side absent -> default
    code = _resume(run, older.read_bytes(), "--allow-change", "train.max_steps", "--set", "model.wide=true",
                   tag="older-wide")
    assert code == 2 and "config.model.wide: False -> True" in capsys.readouterr().err
