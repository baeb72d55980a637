"""Metrics on arrays: agreement with scikit-learn, invariances, and CASES B01, B02, B03, B24, B25."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

import camoe
from camoe.evaluation import (
    METRIC_NAMES,
    UndefinedMetricWarning,
    binary_metrics,
    evaluate_groups,
    expected_calibration_error,
    own_task_scores,
)

TASKS = ("audio", "video", "display")
FORMAT_TO_TASK = {"audio": "audio", "video": "video", "display": "display"}


def _random_slice(seed: int, n: int = 400, rate: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < rate).astype(np.int64)
    labels[:2] = [0, 1]  # both classes always present
    pctr = np.clip(rng.random(n) * 0.6 + 0.3 * labels, 1e-4, 1 - 1e-4)
    return labels, pctr


def _b01_inputs(video_clicks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CASES B01 val.csv rows as arrays: labels, (N, T) scores, formats. Scores are an arbitrary fixed matrix."""
    formats = np.array(["audio", "audio", "video", "video", "display", "display"])
    labels = np.array([1, 0, *video_clicks, 1, 0])
    scores = np.array(
        [
            [0.7, 0.2, 0.3],
            [0.2, 0.5, 0.6],
            [0.4, 0.6, 0.1],
            [0.3, 0.3, 0.2],
            [0.5, 0.5, 0.8],
            [0.5, 0.5, 0.3],
        ]
    )
    return labels, scores, formats


# ----------------------------------------------------------------------------- agreement with scikit-learn
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_agree_with_sklearn(seed: int) -> None:
    labels, pctr = _random_slice(seed)
    m = binary_metrics(labels, pctr)
    assert set(m) == set(METRIC_NAMES)
    assert m["auc_pr"] == pytest.approx(average_precision_score(labels, pctr), abs=1e-12)
    assert m["auc_roc"] == pytest.approx(roc_auc_score(labels, pctr), abs=1e-12)
    assert m["logloss"] == pytest.approx(log_loss(labels, pctr), abs=1e-12)
    ctr = labels.mean()
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
    assert m["ne"] == pytest.approx(m["logloss"] / entropy, rel=1e-12)
    assert m["calibration_ratio"] == pytest.approx(pctr.sum() / labels.sum(), rel=1e-12)
    assert m["rows"] == len(labels)
    assert m["positives"] == labels.sum()
    assert m["ctr"] == pytest.approx(ctr)
    assert m["mean_pctr"] == pytest.approx(pctr.mean())
    assert math.isnan(m["oracle_auc_pr"])


def test_oracle_auc_pr_is_average_precision_of_true_prob() -> None:
    labels, pctr = _random_slice(3)
    true_prob = np.clip(pctr[::-1].copy(), 0, 1)
    m = binary_metrics(labels, pctr, true_prob)
    assert m["oracle_auc_pr"] == pytest.approx(average_precision_score(labels, true_prob), abs=1e-12)


def test_evaluate_groups_per_task_agrees_with_sklearn_on_own_column() -> None:
    rng = np.random.default_rng(5)
    n = 900
    formats = rng.choice(list(TASKS), n)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.random((n, 3))
    result = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS, split="test")
    for t, task in enumerate(TASKS):
        sel = formats == task
        y, p = labels[sel], scores[sel, t]
        got = result["tasks"][task]
        assert got["rows"] == sel.sum()
        assert got["auc_pr"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert got["auc_roc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert got["logloss"] == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-12)
        assert result["formats"][task]["auc_pr"] == got["auc_pr"]
    for metric in ("auc_pr", "auc_roc", "logloss"):
        expected = np.mean([result["tasks"][t][metric] for t in TASKS])
        assert result["macro"][metric] == pytest.approx(expected, rel=1e-12)
    assert result["macro"]["skipped"] == {}


def test_evaluate_groups_attribute_section_pools_formats_of_the_attribute() -> None:
    formats = np.array(["a1", "a1", "a2", "a2", "v1", "v1"])
    f2t = {"a1": "audio", "a2": "audio", "v1": "video"}
    labels = np.array([1, 0, 0, 1, 1, 0])
    scores = np.array([[0.9, 0.0], [0.2, 0.0], [0.3, 0.0], [0.6, 0.0], [0.0, 0.7], [0.0, 0.1]])
    attrs = {"a1": {"modality": "audio"}, "a2": {"modality": "audio"}, "v1": {"modality": "video"}}
    result = evaluate_groups(labels, scores, formats, f2t, ("audio", "video"), group_attributes=attrs)
    audio = result["modality"]["audio"]
    assert audio["rows"] == 4
    assert audio["auc_roc"] == pytest.approx(roc_auc_score([1, 0, 0, 1], [0.9, 0.2, 0.3, 0.6]))
    assert result["modality"]["video"]["auc_roc"] == 1.0


# ----------------------------------------------------------------------------- invariances
def test_binary_metrics_invariant_to_row_order() -> None:
    labels, pctr = _random_slice(7)
    perm = np.random.default_rng(0).permutation(len(labels))
    a = binary_metrics(labels, pctr)
    b = binary_metrics(labels[perm], pctr[perm])
    for key in METRIC_NAMES:
        if math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-12), key


def test_evaluate_groups_invariant_to_row_order() -> None:
    rng = np.random.default_rng(11)
    n = 300
    formats = rng.choice(list(TASKS), n)
    labels = (rng.random(n) < 0.4).astype(int)
    scores = rng.random((n, 3))
    perm = rng.permutation(n)
    a = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS)
    b = evaluate_groups(labels[perm], scores[perm], formats[perm], FORMAT_TO_TASK, TASKS)
    for task in TASKS:
        for key in ("auc_pr", "auc_roc", "logloss", "ece", "calibration_ratio"):
            assert b["tasks"][task][key] == pytest.approx(a["tasks"][task][key], rel=1e-12, abs=1e-12)


def test_metrics_of_a_slice_equal_metrics_with_other_rows_removed() -> None:
    """A task's metrics depend only on its own rows: adding rows of another format changes nothing."""
    labels, scores, formats = _b01_inputs((1, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # video and display have no rows in `base`
        base = evaluate_groups(labels[:2], scores[:2], formats[:2], FORMAT_TO_TASK, TASKS)
        full = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS)
    for key in ("auc_pr", "auc_roc", "logloss", "ece"):
        assert full["tasks"]["audio"][key] == base["tasks"]["audio"][key]


# ----------------------------------------------------------------------------- B01
def test_b01_task_with_no_positives_gives_nan_auc_and_warning_naming_task_and_split() -> None:
    labels, scores, formats = _b01_inputs((0, 0))
    with pytest.warns(UndefinedMetricWarning) as record:
        result = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS, split="valid")
    video = result["tasks"]["video"]
    assert math.isnan(video["auc_roc"])
    assert math.isnan(video["auc_pr"])
    assert video["rows"] == 2 and video["positives"] == 0
    messages = [str(w.message) for w in record if issubclass(w.category, UndefinedMetricWarning)]
    assert any("video" in m and "valid" in m for m in messages), messages
    assert not any("audio" in m or "display" in m for m in messages), messages
    # the other tasks still get numbers: audio 0.7 vs 0.2, display 0.8 vs 0.3, both ranked right
    assert result["tasks"]["audio"]["auc_roc"] == 1.0
    assert result["tasks"]["audio"]["auc_pr"] == 1.0
    assert result["tasks"]["display"]["auc_roc"] == 1.0
    assert result["tasks"]["display"]["auc_pr"] == 1.0
    assert math.isfinite(video["logloss"])


def test_b01_macro_average_skips_nan_and_lists_skipped_tasks() -> None:
    labels, scores, formats = _b01_inputs((0, 0))
    scores = scores.copy()
    scores[0, 0] = 0.1  # audio now ranked wrong: AUC 0.0, display stays 1.0
    with pytest.warns(UndefinedMetricWarning):
        result = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS, split="valid")
    macro = result["macro"]
    assert result["tasks"]["audio"]["auc_roc"] == 0.0
    assert macro["auc_roc"] == pytest.approx(0.5)  # mean of 0.0 and 1.0; video NaN skipped
    assert macro["auc_pr"] == pytest.approx((0.5 + 1.0) / 2)
    assert macro["skipped"]["auc_roc"] == ["video"]
    assert macro["skipped"]["auc_pr"] == ["video"]
    assert "logloss" not in macro["skipped"]
    assert math.isfinite(macro["logloss"])


def test_b01_all_video_clicks_positive_gives_nan_auc_roc() -> None:
    labels, scores, formats = _b01_inputs((1, 1))
    with pytest.warns(UndefinedMetricWarning, match=r"video.*test|test.*video"):
        result = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS, split="test")
    video = result["tasks"]["video"]
    assert math.isnan(video["auc_roc"])
    assert video["positives"] == 2
    assert math.isfinite(video["logloss"])
    assert result["tasks"]["audio"]["auc_roc"] == 1.0
    assert result["tasks"]["display"]["auc_roc"] == 1.0
    assert "video" in result["macro"]["skipped"]["auc_roc"]


def test_b01_all_negative_slice_warns_in_binary_metrics() -> None:
    with pytest.warns(UndefinedMetricWarning, match="'video'.*'valid'"):
        m = binary_metrics(np.array([0, 0, 0]), np.array([0.2, 0.4, 0.1]), name="video", split="valid")
    assert math.isnan(m["auc_roc"]) and math.isnan(m["auc_pr"]) and math.isnan(m["ne"])


# ----------------------------------------------------------------------------- B02
@pytest.mark.parametrize("label", [0, 1])
def test_b02_logloss_defined_for_single_class_slice(label: int) -> None:
    labels = np.full(4, label)
    pctr = np.array([0.1, 0.2, 0.3, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        m = binary_metrics(labels, pctr)
    expected = -np.mean(np.log(pctr)) if label == 1 else -np.mean(np.log(1 - pctr))
    assert m["logloss"] == pytest.approx(expected, rel=1e-9)
    assert math.isfinite(m["ece"])


def test_b02_logloss_clips_certain_wrong_predictions() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        m = binary_metrics(np.array([1, 1]), np.array([0.0, 1.0]))
    assert math.isfinite(m["logloss"])
    assert m["logloss"] == pytest.approx(-0.5 * (math.log(1e-7) + math.log(1 - 1e-7)), rel=1e-6)


# ----------------------------------------------------------------------------- B03
def test_b03_each_task_uses_only_its_own_column_and_rows() -> None:
    formats = np.array(["audio", "audio", "video", "video"])
    labels = np.array([1, 0, 1, 0])
    scores = np.array(
        [
            [0.9, 0.01, 0.01],
            [0.1, 0.99, 0.99],
            [0.1, 0.8, 0.01],
            [0.9, 0.2, 0.99],
        ]
    )
    with pytest.warns(UndefinedMetricWarning, match="display"):
        result = evaluate_groups(labels, scores, formats, FORMAT_TO_TASK, TASKS, split="test")
    assert result["tasks"]["audio"]["auc_roc"] == 1.0
    assert result["tasks"]["video"]["auc_roc"] == 1.0
    assert result["tasks"]["audio"]["auc_pr"] == 1.0
    assert result["tasks"]["video"]["auc_pr"] == 1.0
    assert "display" not in result["formats"]
    assert result["tasks"]["display"]["rows"] == 0
    assert math.isnan(result["tasks"]["display"]["auc_roc"])
    assert math.isnan(result["tasks"]["display"]["auc_pr"])
    assert result["macro"]["auc_roc"] == 1.0
    assert result["macro"]["skipped"]["auc_roc"] == ["display"]


def test_b03_rejects_matrix_of_wrong_shape_and_unknown_format() -> None:
    labels = np.array([1, 0])
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        evaluate_groups(labels, np.array([0.3, 0.4]), np.array(["audio", "audio"]), FORMAT_TO_TASK, TASKS)
    with pytest.raises(ValueError, match="podcast"):
        evaluate_groups(labels, np.zeros((2, 3)), np.array(["audio", "podcast"]), FORMAT_TO_TASK, TASKS)


def test_own_task_scores_picks_each_rows_column() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.3, 0.6, 0.7]])
    assert own_task_scores(scores, np.array([2, 0, 1])).tolist() == [0.5, 0.2, 0.6]


# ----------------------------------------------------------------------------- B25
def test_b25_constant_predictions_give_auc_pr_equal_to_prevalence() -> None:
    labels = np.array([1] + [0] * 9)
    m = binary_metrics(labels, np.full(10, 0.3), name="video")
    assert m["auc_pr"] == pytest.approx(0.1, abs=1e-12)
    assert m["auc_roc"] == pytest.approx(0.5)


def test_b25_auc_pr_is_average_precision_not_trapezoid() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 0])
    pctr = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # AP = sum over positives of precision at its rank / n_pos = (1/2 + 2/4 + 3/5) / 3
    assert binary_metrics(labels, pctr)["auc_pr"] == pytest.approx((0.5 + 0.5 + 0.6) / 3, abs=1e-12)


def test_b25_no_positives_gives_nan_auc_pr_and_warning() -> None:
    with pytest.warns(UndefinedMetricWarning, match="video"):
        m = binary_metrics(np.zeros(10, dtype=int), np.full(10, 0.3), name="video", split="test")
    assert math.isnan(m["auc_pr"])
    assert math.isnan(m["calibration_ratio"])


# ----------------------------------------------------------------------------- B24 and calibration
def test_b24_calibration_ratio_example() -> None:
    labels = np.array([1, 0, 0, 0, 0])
    m = binary_metrics(labels, np.full(5, 0.10), name="audio")
    assert m["calibration_ratio"] == pytest.approx(0.5, rel=1e-12)


def test_b24_downsampling_correction_undoes_negative_sampling() -> None:
    q = camoe.correct_downsampling(np.array([0.5]), 0.1)
    assert float(q[0]) == pytest.approx(1 / 11, rel=1e-12)
    assert float(q[0]) == pytest.approx(0.0909, abs=1e-4)
    p = np.array([0.0, 0.2, 0.7, 1.0])
    assert np.allclose(camoe.correct_downsampling(p, 1.0), p)
    corrected = camoe.correct_downsampling(p, 0.25)
    assert np.all(corrected <= p) and corrected[0] == 0.0 and corrected[-1] == 1.0


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_correct_downsampling_rejects_rates_outside_unit_interval(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        camoe.correct_downsampling(np.array([0.5]), rate)


def test_ece_hand_computed_cases() -> None:
    # one bin (all ties): |0.1 - 0.2| = 0.1
    assert expected_calibration_error(np.array([1, 0, 0, 0, 0]), np.full(5, 0.1)) == pytest.approx(0.1)
    # two tie groups: |0.1 - 0.25| and |0.9 - 0.75|, each half the rows -> 0.15, whatever the bin count
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    pctr = np.array([0.1] * 4 + [0.9] * 4)
    assert expected_calibration_error(labels, pctr, n_bins=2) == pytest.approx(0.15)
    assert expected_calibration_error(labels, pctr) == pytest.approx(0.15)
    # equal-mass bins: {0.1, 0.2} vs {0.3, 0.4}: 0.5·|0.15 - 0| + 0.5·|0.35 - 1| = 0.4
    assert expected_calibration_error(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]), n_bins=2) == (
        pytest.approx(0.4)
    )
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))


def test_binary_metrics_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="non-finite"):
        binary_metrics(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2]))


def test_gauc_is_the_impression_weighted_mean_of_per_user_auc() -> None:
    from camoe.evaluation.metrics import group_auc
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 2000)
    labels = (rng.random(2000) < 0.2).astype(int)
    pctr = np.round(rng.random(2000) * 0.3 + labels * 0.2, 2)  # rounding makes ties inside users
    expected_num = expected_den = 0.0
    for u in np.unique(users):
        sel = users == u
        if 0 < labels[sel].sum() < sel.sum():
            expected_num += sel.sum() * roc_auc_score(labels[sel], pctr[sel])
            expected_den += sel.sum()
    assert group_auc(labels, pctr, users) == pytest.approx(expected_num / expected_den, rel=1e-12)
    assert np.isnan(group_auc(np.ones(3), np.ones(3), np.zeros(3)))  # no user with both classes
    m = binary_metrics(labels, pctr, groups=users.astype(str))
    assert m["gauc"] == pytest.approx(expected_num / expected_den, rel=1e-12)
    assert np.isnan(binary_metrics(labels, pctr)["gauc"])  # no user column: not defined
