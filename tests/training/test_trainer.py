"""Crash-safe training: a run resumed from its checkpoint ends bit-identical to one never interrupted (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import camoe
from camoe.batch import Batch
from camoe.config import deep_merge
from camoe.model import ModelOutput
from camoe.training import Trainer

SMALL = {
    "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4], "dropout": 0.1},
    "train": {"epochs": 2, "batch_size": 256, "checkpoint_every_steps": 3, "patience": 5},
}


def _config(**extra: object) -> camoe.RunConfig:
    return camoe.load_config(camoe.demo_config_path(), deep_merge(SMALL, extra))


@pytest.mark.parametrize("extra", [{}, {"model": {"sparse_embeddings": True, "norm": "batch"},
                                       "train": {"warmup_steps": 30}}, {"train": {"ema_decay": 0.9}}],
                         ids=["dense", "sparse_norm_warmup", "weight_average"])
def test_resume_after_stop_is_bit_identical(synthetic_log: pd.DataFrame, tmp_path: Path, extra: dict) -> None:
    cfg = _config(**extra)
    splits = camoe.split_frame(synthetic_log, cfg.data.split, cfg.schema.timestamp)
    full = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"], checkpoint_path=tmp_path / "a.pt")
    expected = full.predict_proba(splits["test"])

    ck = tmp_path / "b.pt"
    stopped = camoe.CTRPipeline(_config(**deep_merge(extra, {"train": {"max_steps": 40}}))).fit(
        splits["train"], splits["valid"], checkpoint_path=ck)  # "killed" at step 40; checkpoint from step 39
    assert stopped.train_result_.steps == 40 and ck.is_file()
    resumed = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"], checkpoint_path=ck, resume=True,
                                         allow_changes=["train.max_steps"])  # the "kill" was a max_steps stop
    assert resumed.train_result_.steps == full.train_result_.steps
    np.testing.assert_array_equal(expected, resumed.predict_proba(splits["test"]))
    assert [h["step"] for h in resumed.train_result_.history] == [h["step"] for h in full.train_result_.history]


def test_resuming_a_run_that_already_stopped_at_max_steps_trains_no_further_step(
        synthetic_log: pd.DataFrame, tmp_path: Path) -> None:
    cfg = _config(train={"max_steps": 40, "checkpoint_every_steps": 20})  # the last checkpoint is at the stop
    splits = camoe.split_frame(synthetic_log, cfg.data.split, cfg.schema.timestamp)
    ck = tmp_path / "c.pt"
    stopped = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"], checkpoint_path=ck)
    resumed = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"], checkpoint_path=ck, resume=True)
    assert stopped.train_result_.steps == resumed.train_result_.steps == 40
    assert resumed.train_result_.best_step == stopped.train_result_.best_step
    np.testing.assert_array_equal(stopped.predict_proba(splits["test"]), resumed.predict_proba(splits["test"]))


def test_the_bias_refit_sums_over_row_chunks_equal_the_one_pass_float64_sums() -> None:
    from camoe.training.trainer import _sigmoid_sums

    z = torch.randn(10_001) * 2 - 5  # (N,) float32 logits
    p = torch.sigmoid(z.double() + 0.3)
    for chunk in (1, 7, 4096, 1 << 20):  # many chunks, a ragged last chunk, one chunk
        p_sum, curvature = _sigmoid_sums(z, 0.3, chunk)
        assert p_sum == pytest.approx(float(p.sum()), rel=1e-12), chunk
        assert curvature == pytest.approx(float((p * (1 - p)).sum()), rel=1e-12), chunk


def test_kill_9_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    log = tmp_path / "log.parquet"
    camoe.generate_log(camoe.SyntheticConfig(rows=30_000, seed=1)).to_parquet(log)
    config = tmp_path / "cfg.json"  # JSON is YAML
    config.write_text(json.dumps(deep_merge(SMALL, {
        "base": str(camoe.demo_config_path()), "data": {"path": str(log)},
        "train": {"batch_size": 64, "checkpoint_every_steps": 20, "num_threads": 1},
    })))
    cmd = [sys.executable, "-m", "camoe", "train", str(config), "--no-progress", "--output"]
    subprocess.run([*cmd, str(tmp_path / "full")], check=True, capture_output=True, timeout=300)

    ck = tmp_path / "killed" / "checkpoints" / "last.pt"
    proc = subprocess.Popen([*cmd, str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert ck.is_file() and not (tmp_path / "killed" / "manifest.json").exists()  # killed before finishing
    saved_step = camoe.training.Checkpoint.load(ck).state.step
    assert saved_step > 0 and saved_step % 20 == 0
    out = subprocess.run([*cmd, str(tmp_path / "killed"), "--resume"], check=True, capture_output=True, text=True,
                         timeout=300).stdout
    # restarted from the last checkpoint: the repeated work is what ran after it, under one interval (20 steps)
    assert f"resumed from the checkpoint at step {saved_step} of" in out
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    again = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert again["tasks"] == full["tasks"]  # tolerance 0: the resumed run's metrics are identical


def test_max_steps_keeps_the_trained_weights_not_the_initial_ones(synthetic_log: pd.DataFrame) -> None:
    cfg = _config(train={"max_steps": 7})
    splits = camoe.split_frame(synthetic_log, cfg.data.split, cfg.schema.timestamp)
    pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"])
    assert pipe.train_result_.steps == 7
    assert pipe.train_result_.history[-1]["step"] == 7 and pipe.train_result_.best_step == 7


def test_sparse_embeddings_train_the_tables_with_lazy_adam(synthetic_log: pd.DataFrame) -> None:
    cfg = _config(model={"sparse_embeddings": True}, train={"max_steps": 5})
    splits = camoe.split_frame(synthetic_log, cfg.data.split, cfg.schema.timestamp)
    before = camoe.CTRPipeline(_config(train={"max_steps": 1, "learning_rate": 1e-12})).fit(splits["train"])
    pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"])
    table = pipe.model_.embedding.cat_table
    assert table.sparse
    moved = (table.weight - before.model_.embedding.cat_table.weight).abs().sum(1) > 0  # (rows,)
    assert 0 < int(moved.sum()) < len(moved)  # looked-up rows moved; never-seen rows (e.g. the unknown id) did not


def test_learning_rate_warms_up_linearly_then_follows_the_schedule() -> None:
    from camoe.training import Trainer

    cfg = _config(train={"warmup_steps": 4, "learning_rate": 0.01, "lr_schedule": "constant"})
    model = torch.nn.Linear(2, 1)
    trainer = Trainer(model, np.ones((1, 1)), ["t"], cfg.train)

    class Data:
        num_rows, format_rows, format_clicks = 1000, np.array([1000]), np.array([10])

    trainer.build(Data())
    rates = []
    for _ in range(6):
        rates.append(trainer.optimizers[0].param_groups[0]["lr"])
        trainer.optimizers[0].step()
        trainer.schedulers[0].step()
    assert rates == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_the_weight_average_warms_up_without_reading_its_step_count_on_the_host(monkeypatch) -> None:
    from camoe.training import Trainer

    cfg = _config(train={"ema_decay": 0.9}).train
    model = torch.nn.Linear(2, 1)
    trainer = Trainer(model, np.ones((1, 1)), ["t"], cfg)

    class Data:
        num_rows, format_rows, format_clicks = 1000, np.array([1000]), np.array([10])

    trainer.build(Data())
    averaged = trainer.averaged.module
    expected = model.weight.detach().clone()  # the first update copies the weights
    trainer.averaged.update_parameters(model)

    def host_read(*_args: object) -> None:  # on a GPU each read would wait for the device
        raise AssertionError("the weight average read a tensor on the host")

    monkeypatch.setattr(torch.Tensor, "__float__", host_read)
    monkeypatch.setattr(torch.Tensor, "item", host_read)
    for n in range(1, 40):
        with torch.no_grad():
            model.weight.add_(0.1)
        trainer.averaged.update_parameters(model)
        decay = min(0.9, (1 + n) / (10 + n))  # TensorFlow's warm-up: decay_n = min(decay, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * model.weight.detach()
    monkeypatch.undo()
    torch.testing.assert_close(averaged.weight.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_tables_get_their_own_learning_rate(sparse: bool) -> None:
    from camoe.training import Trainer

    cfg = _config(train={"learning_rate": 0.001, "embedding_learning_rate": 0.05}).train
    model = torch.nn.Sequential(torch.nn.Embedding(10, 2, sparse=sparse), torch.nn.Linear(2, 1))
    trainer = Trainer(model, np.ones((1, 1)), ["t"], cfg)

    class Data:
        num_rows, format_rows, format_clicks = 1000, np.array([1000]), np.array([10])

    trainer.build(Data())
    rates = {id(p): g["lr"] for o in trainer.optimizers for g in o.param_groups for p in g["params"]}
    assert rates[id(model[0].weight)] == pytest.approx(0.05)
    assert rates[id(model[1].weight)] == pytest.approx(0.001)
    assert len(trainer.optimizers) == (2 if sparse else 1)  # sparse tables: a lazy Adam of their own


def test_a_weight_average_is_what_is_validated_kept_and_exported(synthetic_log: pd.DataFrame) -> None:
    splits = camoe.split_frame(synthetic_log, _config().data.split, "ts")
    raw = camoe.CTRPipeline(_config(train={"ema_decay": None})).fit(splits["train"], splits["valid"])
    averaged = camoe.CTRPipeline(_config(train={"ema_decay": 0.95})).fit(splits["train"], splits["valid"])
    # the same optimizer path (same seed, same raw steps), but other weights kept: the average of the raw ones
    assert not np.array_equal(raw.predict_proba(splits["valid"]), averaged.predict_proba(splits["valid"]))
    result = averaged.train_result_
    best = next(h for h in result.history if h["step"] == result.best_step)
    tasks = averaged.evaluate(splits["valid"], split="valid")["tasks"]
    finite = [m["auc_pr"] for m in tasks.values() if not np.isnan(m["auc_pr"])]
    assert best["valid_score"] == pytest.approx(float(np.mean(finite)), abs=5e-3)  # binned vs exact AUC-PR
    for task, value in best["valid"]["auc_pr"].items():
        if not np.isnan(value):
            assert value == pytest.approx(tasks[task]["auc_pr"], abs=5e-3), task


@pytest.mark.parametrize("extra", [{}, {"grouping": {"transfer": {"video_takeover": ["audio"]}}},
                                   {"train": {"masking": False}}], ids=["own_rows", "hard_transfer", "no_masking"])
def test_the_bias_refit_matches_each_tasks_mean_pctr_to_its_training_ctr_without_changing_rankings(
        synthetic_log: pd.DataFrame, extra: dict) -> None:
    splits = camoe.split_frame(synthetic_log, _config().data.split, "ts")
    train = splits["train"]
    # each task's own rows (the ones its head scores), also when transfer or no masking trains it on other rows
    on = camoe.CTRPipeline(_config(**deep_merge(extra, {"train": {"ema_decay": 0.95, "refit_output_bias": True}}))
                           ).fit(train, splits["valid"])
    off = camoe.CTRPipeline(_config(**deep_merge(extra, {"train": {"ema_decay": 0.95, "refit_output_bias": False}}))
                            ).fit(train, splits["valid"])
    tasks = train["format"].map(on.layout_.format_to_task).to_numpy()
    p_on, p_off = on.predict_proba(train), off.predict_proba(train)
    shift = on.train_result_.output_bias_shift
    assert set(shift) == set(on.layout_.tasks) and off.train_result_.output_bias_shift == {}
    for task in on.layout_.tasks:
        rows = tasks == task
        clicks = train["click"].to_numpy()[rows]
        assert p_on[rows].mean() == pytest.approx(clicks.mean(), rel=1e-4), task  # the intercept's score equation
        assert abs(p_off[rows].mean() / clicks.mean() - 1) > 1e-3, task  # what training alone left
        assert shift[task] != 0
        # one logit shift per task: the order of its rows' pCTRs is unchanged (up to float32 rounding of near-ties)
        ordered = p_on[rows][np.argsort(p_off[rows], kind="stable")]
        assert (np.diff(ordered) >= -1e-6 * ordered[1:]).all(), task


class _FixedLogit(torch.nn.Module):
    """One task whose logit is ``value`` plus a bias; in eval mode (where the bias refit scores) row i's logit is
    ``eval_logits[i]`` plus the bias (the rows carry their index in the dense column)."""

    def __init__(self, value: float, eval_logits: torch.Tensor) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.value, self.eval_logits = value, eval_logits

    def forward(self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        rows = self.eval_logits[dense[:, 0].long()] if not self.training else torch.full((len(dense),), self.value)
        return ModelOutput(logits=rows.unsqueeze(1) + self.bias, gate_weights=None, embeddings=None)

    def shift_output_bias(self, shift: torch.Tensor) -> None:
        self.bias.data += shift


class _Rows:
    """200 training rows of one format, 20 clicks, as the trainer's ``TrainData``; the dense column is the row index."""

    num_rows = 200
    format_rows, format_clicks = np.array([200.0]), np.array([20.0])

    def batches(self, generator: torch.Generator | None, skip: int = 0):
        labels = (torch.arange(200) % 10 == 0).float()
        batch = Batch(cat_ids=torch.zeros(200, 0, dtype=torch.long), multi_ids=torch.zeros(200, 0, 1, dtype=torch.long),
                      dense=torch.arange(200.0).unsqueeze(1), format_ids=torch.zeros(200, dtype=torch.long),
                      labels=labels)
        return iter([batch.select(slice(a, a + 100)) for a in (0, 100)][skip:])


def _refit_trainer(value: float, eval_logits: torch.Tensor) -> Trainer:
    cfg = camoe.load_config(camoe.demo_config_path(), {"train": {"epochs": 1, "refit_output_bias": True,
                                                                 "ema_decay": None}}).train
    return Trainer(_FixedLogit(value, eval_logits), np.ones((1, 1)), ["t"], cfg, init_bias=False)


def test_the_bias_refit_warns_naming_the_task_when_its_logits_are_too_saturated_to_reach_the_ctr() -> None:
    # logits of 47.3: 50 Newton steps of at most one logit end about 0.08 short of the CTR's logit (mean pCTR ~7%
    # above the CTR of 0.1): saturated enough to miss, close enough that a loose tolerance would not warn
    with pytest.warns(RuntimeWarning, match=r"bias refit: task 't' reaches a mean pCTR of 0\.10[5-9] for a training "
                                            r"CTR of 0\.1 after a shift of -49\.\d\d logits; its logits are saturated"):
        result = _refit_trainer(47.3, torch.full((200,), 47.3)).fit(_Rows())
    assert -50.0 < result.output_bias_shift["t"] < -49.0


def test_the_bias_refit_stops_on_non_finite_logits_naming_the_task_and_the_count() -> None:
    logits = torch.full((200,), -2.0)
    logits[2::4], logits[1::50] = float("nan"), float("inf")  # 50 NaN, 4 inf, among finite rows (row 0 too)
    with pytest.raises(FloatingPointError, match=r"bias refit: task 't' has 54 non-finite logits on its "
                                                 r"training rows; .*train\.refit_output_bias: false"):
        _refit_trainer(-2.0, logits).fit(_Rows())
