"""Bounded-memory metrics of streamed splits (camoe.evaluation.binned) against the per-row metrics."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import camoe
from camoe.evaluation.binned import NUM_BUCKETS, BinnedMetrics, score_buckets
from camoe.evaluation.metrics import UndefinedMetricWarning, binary_metrics, evaluate_groups
from camoe.run import data_splits
from camoe.scoring import evaluate_source

EXACT = ("rows", "positives", "ctr", "mean_pctr", "logloss", "ne", "calibration_ratio")


def _log(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n rows of 3 formats: labels, pCTR, true probability, format index (CTR about 3%)."""
    rng = np.random.default_rng(seed)
    fmt = rng.integers(0, 3, n)
    logit = rng.normal(-4.0, 1.2, n) + 0.5 * fmt
    true_prob = 1 / (1 + np.exp(-logit))
    labels = (rng.uniform(size=n) < true_prob).astype(np.float32)
    pctr = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.7, n))))
    return labels, pctr, true_prob, fmt


def _binned(labels: np.ndarray, pctr: np.ndarray, true_prob: np.ndarray, fmt: np.ndarray, chunk: int,
            exact_max_rows: int = 0) -> BinnedMetrics:
    acc = BinnedMetrics(["a", "b", "c"], with_true_prob=True, exact_max_rows=exact_max_rows)
    for start in range(0, len(labels), chunk):
        part = slice(start, start + chunk)
        acc.update(fmt[part], labels[part], pctr[part], true_prob[part])
    return acc


def test_buckets_keep_the_order_of_the_scores() -> None:
    p = np.sort(np.random.default_rng(1).uniform(size=10_000) ** 4)
    b = score_buckets(p)
    assert (np.diff(b) >= 0).all() and b.min() >= 0 and b.max() < NUM_BUCKETS
    assert score_buckets(np.array([1.0]))[0] == NUM_BUCKETS - 1 and score_buckets(np.array([0.0]))[0] == 0


def test_binned_metrics_equal_per_row_metrics_within_bucket_precision() -> None:
    labels, pctr, true_prob, fmt = _log(300_000)
    acc = _binned(labels, pctr, true_prob, fmt, chunk=65_536)
    for group in (["a"], ["b"], ["c"], ["a", "b", "c"]):
        sel = np.isin(fmt, [["a", "b", "c"].index(g) for g in group])
        exact = binary_metrics(labels[sel], pctr[sel], true_prob[sel])
        binned = acc.metrics(group, "+".join(group))
        for key in EXACT:  # sums: equal up to float rounding
            assert binned[key] == pytest.approx(exact[key], rel=1e-9), key
        for key in ("auc_pr", "auc_roc", "oracle_auc_pr"):  # scores rounded to 2^-11 relative precision
            assert abs(binned[key] - exact[key]) < 1e-4, (key, binned[key], exact[key])
        assert abs(binned["ece"] - exact["ece"]) < 2e-4


def test_binned_metrics_do_not_depend_on_record_batch_boundaries() -> None:
    data = _log(20_000, seed=3)
    one, many = _binned(*data, chunk=20_000), _binned(*data, chunk=777)
    assert (one.counts == many.counts).all()
    a, b = one.metrics(["a", "b", "c"], "all"), many.metrics(["a", "b", "c"], "all")
    assert a == pytest.approx(b, rel=1e-12, nan_ok=True)


def test_binned_accumulator_memory_does_not_grow_with_rows() -> None:
    """Peak traced memory while adding 16 record batches equals that for 2 (same batch size): nothing per row is
    kept once binned; computing the metrics needs arrays of at most 2 x NUM_BUCKETS entries, whatever the rows."""
    labels, pctr, true_prob, fmt = _log(16 * 8192, seed=4)
    peaks = []
    for batches in (2, 16):
        rows = slice(0, batches * 8192)
        tracemalloc.start()
        acc = _binned(labels[rows], pctr[rows], true_prob[rows], fmt[rows], chunk=8192)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        acc.metrics(["a", "b", "c"], "all")
        metric_bytes = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        assert metric_bytes < 64 * 2 * NUM_BUCKETS, metric_bytes
    assert peaks[1] < 1.05 * peaks[0], peaks


def test_binned_tables_match_evaluate_groups_and_keep_undefined_metrics_nan() -> None:
    labels, pctr, true_prob, fmt = _log(50_000, seed=5)
    labels[fmt == 2] = 0.0  # format c has no clicks: AUC-PR undefined (B01 / B25 kinds), NaN with a warning
    names = np.array(["a", "b", "c"])[fmt]
    f2t = {"a": "audio", "b": "audio", "c": "display"}
    attrs = {"a": {"modality": "audio"}, "b": {"modality": "audio"}, "c": {"modality": "display"}}
    scores = np.column_stack([pctr, pctr])  # both heads score alike: the own-task column is pctr
    with pytest.warns(UndefinedMetricWarning, match="'c' on split 'test': no positives"):
        exact = evaluate_groups(labels, scores, names, f2t, ("audio", "display"), true_prob=true_prob,
                                group_attributes=attrs)
    acc = _binned(labels, pctr, true_prob, fmt, chunk=4096)
    with pytest.warns(UndefinedMetricWarning, match="'c' on split 'test': no positives"):
        binned = acc.evaluate(f2t, ("audio", "display"), "test", group_attributes=attrs)
    assert binned.keys() == exact.keys() and binned["macro"]["skipped"] == exact["macro"]["skipped"]
    for section in ("formats", "tasks", "modality"):
        assert binned[section].keys() == exact[section].keys()
        for name in exact[section]:
            for key, value in exact[section][name].items():
                if np.isnan(value):
                    assert np.isnan(binned[section][name][key]), (section, name, key)
                else:  # ~17k rows, ~500 clicks per format: a tie inside a bucket moves AUC-PR by up to ~1e-3
                    assert binned[section][name][key] == pytest.approx(value, rel=1e-9, abs=1.5e-3), (section, name, key)


def _same(a: object, b: object) -> bool:
    """Exact equality of nested metric dicts, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


def test_small_split_is_exact_and_a_large_one_switches_to_histograms() -> None:
    labels, pctr, true_prob, fmt = _log(30_000, seed=6)
    names = np.array(["a", "b", "c"])[fmt]
    f2t = {"a": "audio", "b": "audio", "c": "display"}
    exact = evaluate_groups(labels, np.column_stack([pctr, pctr]), names, f2t, ("audio", "display"), true_prob=true_prob)
    small = _binned(labels, pctr, true_prob, fmt, chunk=4096, exact_max_rows=30_000)
    assert not small.binned and _same(small.evaluate(f2t, ("audio", "display"), "test"), exact)  # identical
    large = _binned(labels, pctr, true_prob, fmt, chunk=4096, exact_max_rows=10_000)  # folds 8,192 kept rows
    assert large.binned
    assert (large.counts == _binned(labels, pctr, true_prob, fmt, chunk=4096).counts).all()


def test_negative_zero_scores_count_as_zero_not_one() -> None:
    """-0.0 has the float sign bit set; it must land in the lowest bucket, as 0.0 does (a breaker found this)."""
    assert score_buckets(np.array([-0.0]))[0] == 0
    labels, pctr, true_prob, fmt = _log(5_000, seed=8)
    true_prob[:50] = 0.0
    signed = true_prob.copy()
    signed[:50] = -0.0
    a = _binned(labels, pctr, true_prob, fmt, chunk=1000).metrics(["a", "b", "c"], "all")
    b = _binned(labels, pctr, signed, fmt, chunk=1000).metrics(["a", "b", "c"], "all")
    assert a["oracle_auc_pr"] == b["oracle_auc_pr"]


def test_binned_update_refuses_bad_values_naming_the_source() -> None:
    acc = BinnedMetrics(["a"], exact_max_rows=0)
    with pytest.raises(ValueError, match="valid split: pCTR must be finite"):
        acc.update(np.zeros(2, int), np.array([0, 1]), np.array([0.1, np.nan]), source="valid split")
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        acc.update(np.zeros(2, int), np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"format ids must be integers in \[0, 1\)"):
        acc.update(np.array([0, 1]), np.array([0, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="format ids must be integers"):
        acc.update(np.array([0.7, 0.2]), np.array([0, 1]), np.array([0.1, 0.2]))
    with_tp = BinnedMetrics(["a"], with_true_prob=True, exact_max_rows=0)
    with pytest.raises(ValueError, match="true click probabilities must be finite"):
        with_tp.update(np.zeros(2, int), np.array([0, 1]), np.array([0.1, 0.2]), np.array([0.1, 1.5]))
    for checked in (acc, with_tp):  # nothing half-added
        assert not checked.binned and checked.logloss_sum.sum() == 0


def test_histogram_metrics_of_a_streamed_split_stay_within_tolerance_of_exact_ones(tmp_path: Path) -> None:
    for shard in range(2):
        camoe.generate_log(camoe.SyntheticConfig(rows=8_000, seed=7), shard=shard, num_shards=2).to_parquet(
            tmp_path / f"part-{shard}.parquet", index=False)
    cfg = camoe.load_config(camoe.demo_config_path(), {
        "data": {"path": str(tmp_path), "streaming": {"enabled": True, "read_batch_rows": 1000}},
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"epochs": 3, "batch_size": 256, "learning_rate": 0.01},  # trained enough to spread the scores
    })
    splits = data_splits(cfg)
    assert splits.test is not None and not splits.test.in_memory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        pipe = camoe.CTRPipeline(cfg).fit(splits.train, splits.valid)
        streamed = evaluate_source(pipe.scorer(), splits.test, "test", attributes=pipe.format_attributes_,
                                   exact_max_rows=0)  # histograms from the first record batch
        in_memory = pipe.evaluate(pd.concat(list(splits.test.chunks())), split="test")  # exact: under the budget
    assert streamed["metric_precision"].startswith("score histograms") and in_memory["metric_precision"] == "exact (per row)"
    assert streamed["formats"].keys() == in_memory["formats"].keys() and streamed["oov"] == in_memory["oov"]
    for section in ("formats", "tasks", "modality"):
        for name, exact in in_memory[section].items():
            got = streamed[section][name]
            for key in EXACT:
                assert got[key] == pytest.approx(exact[key], rel=1e-6, nan_ok=True), (section, name, key)
            for key in ("auc_pr", "auc_roc", "oracle_auc_pr", "ece"):  # a few hundred rows per format: ties in a bucket move AUC-PR by a few 1e-3
                assert got[key] == pytest.approx(exact[key], abs=5e-3, nan_ok=True), (section, name, key)
