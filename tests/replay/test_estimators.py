"""IPS, SNIPS and DR against hand computations on a 5-request log, the truth, the logged policy, and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from camoe.replay import LOGGED, GroupSums, replay
from camoe.replay.estimators import STATS, bootstrap_weights, percentile_ci, policy_metrics, request_terms

# Hand computation on the 5-request log of conftest.FIVE (eCPM = 1000 · bid · pCTR, second price):
#   request  target winner (eCPM)        CPC price          logged shown  match  w = 1/π0  click  q (pCTR)
#   1        A fa (100 > 40)             40/100 = 0.4       A             yes    2         1      0.10
#   2        B fv (80 > 50)              50/80  = 0.625     A             no     0         1      0.08
#   3        A fa (200 > 100)            100/200 = 0.5      A             yes    4         0      0.20
#   4        A fv (300 > 100 > 50)       100/100 = 1.0      A             yes    1.25      1      0.10
#   5        B fv (30 > 10)              10/30  = 1/3       B             yes    2         0      0.03
# IPS clicks   = Σ w·y = 2 + 1.25 = 3.25                      -> CTR 3.25 / 5 = 0.65
# SNIPS CTR    = Σ w·y / Σ w = 3.25 / 9.25 = 0.351351...
# DR terms     = q + w (y − q): 1.9, 0.08, −0.6, 1.225, −0.03 -> Σ 2.575 -> CTR 0.515
# ESS          = (Σ w)² / Σ w² = 9.25² / (4 + 16 + 1.5625 + 4) = 85.5625 / 25.5625 = 3.347188...
# IPS spend    = Σ w·y·ρ = 2·0.4 + 1.25·1.0 = 2.05           -> eCPC 2.05 / 3.25 = 0.630769...
# DR spend     = Σ ρ·DR term = 0.76 + 0.05 − 0.3 + 1.225 − 0.01 = 1.725 -> eCPC 1.725 / 2.575 = 0.669903...
# truth clicks = p_true of the winners = 0.08 + 0.10 + 0.10 + 0.20 + 0.04 = 0.52 -> CTR 0.104
# truth spend  = 0.4·0.08 + 0.625·0.1 + 0.5·0.1 + 1·0.2 + 0.04/3 = 0.357833... -> eCPC 0.688141...
# per format: fa = requests 1, 3: IPS CTR 2/2 = 1.0, SNIPS 2/6, DR (1.9 − 0.6)/2 = 0.65, ESS 36/20 = 1.8
#             fv = requests 2, 4, 5: IPS 1.25/3, SNIPS 1.25/3.25, DR (0.08 + 1.225 − 0.03)/3 = 0.425
# logged policy: observed clicks 3 of 5 (CTR 0.6), true 0.08 + 0.04 + 0.1 + 0.2 + 0.04 = 0.46, spend 0.4 + 0.5 + 1.0

pytestmark = pytest.mark.filterwarnings("ignore:model .* effective sample size")


def test_ips_snips_dr_match_hand_computation_on_a_five_request_log(five_request_log, column_model) -> None:
    res = replay(five_request_log, [column_model], bootstrap=0)
    m = column_model.name
    expected_all = {"wins": 5, "ips_ctr": 0.65, "snips_ctr": 3.25 / 9.25, "dr_ctr": 0.515, "ess": 9.25 ** 2 / 25.5625,
                    "ips_ecpc": 2.05 / 3.25, "dr_ecpc": 1.725 / 2.575, "truth_ctr": 0.104,
                    "truth_ecpc": (0.032 + 0.0625 + 0.05 + 0.2 + 0.04 / 3) / 0.52, "ips_revenue_per_1k": 1000 * 2.05 / 5,
                    "snips_clicks": 5 * 3.25 / 9.25, "dr_clicks": 2.575, "matches": 4}
    for key, want in expected_all.items():
        assert res.value(m, key, "total") == pytest.approx(want, rel=1e-9), key
    for group, want in {"fa": (2, 1.0, 2 / 6, 0.65, 1.8), "fv": (3, 1.25 / 3, 1.25 / 3.25, 0.425, 3.25 ** 2 / 5.5625)}.items():
        got = tuple(res.value(m, k, group) for k in ("wins", "ips_ctr", "snips_ctr", "dr_ctr", "ess"))
        assert got == pytest.approx(want, rel=1e-9), group
    # the modality level sums its formats (fa = audio, fv = video)
    assert res.value(m, "dr_ctr", "video") == pytest.approx(0.425)
    # the logged policy: on-policy, every estimate is the observed value
    for key in ("ips_ctr", "snips_ctr", "dr_ctr"):
        assert res.value(LOGGED, key) == pytest.approx(0.6)
    assert res.value(LOGGED, "truth_ctr") == pytest.approx(0.092)
    assert res.value(LOGGED, "dr_ecpc") == pytest.approx(1.9 / 3)
    assert res.value(LOGGED, "wins", "fa") == 3 and res.value(LOGGED, "wins", "fv") == 2
    # one model: lifts are over the logged policy; true CTR 0.104 vs 0.092
    assert res.baseline == LOGGED
    assert res.interval(m, "truth_ctr", "total", lift=True)[0] == pytest.approx(0.104 / 0.092 - 1)


def test_first_price_charges_the_bid_in_spend_and_ecpc(five_request_log, column_model) -> None:
    res = replay(five_request_log, [column_model], bootstrap=0, pricing="first")
    # winners' bids: 1, 1, 1, 3, 1; IPS spend = 2·1 + 1.25·3 = 5.75 over IPS clicks 3.25
    assert res.value(column_model.name, "ips_ecpc") == pytest.approx(5.75 / 3.25)
    truth_spend = 1 * 0.08 + 1 * 0.10 + 1 * 0.10 + 3 * 0.20 + 1 * 0.04
    assert res.value(column_model.name, "truth_spend") == pytest.approx(truth_spend)


def test_group_sums_bootstrap_equals_explicitly_weighted_sums() -> None:
    rng = np.random.default_rng(0)
    r, groups, b = 500, 4, 7
    group = rng.integers(0, groups, r)
    terms = rng.normal(size=(r, len(STATS)))
    weights = bootstrap_weights(b, r, 3)
    sums = GroupSums(groups, b)
    sums.add(group[:200], terms[:200], weights[:, :200])  # two chunks add up like one
    sums.add(group[200:], terms[200:], weights[:, 200:])
    onehot = np.eye(groups)[group]  # (R, G)
    want = np.einsum("br,rg,rs->bgs", weights.astype(np.float64), onehot, terms)
    np.testing.assert_allclose(sums.boot, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sums.point, onehot.T @ terms)


def test_bootstrap_weights_are_poisson_one_and_reproducible() -> None:
    w = bootstrap_weights(50, 20_000, [1, 2])
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.var() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(w, bootstrap_weights(50, 20_000, [1, 2]))


def test_percentile_interval_skips_nan_replicates() -> None:
    reps = np.r_[np.arange(100.0), [np.nan] * 10][:, None]
    lo, hi = percentile_ci(reps, 0.9)
    assert lo[0] == pytest.approx(4.95) and hi[0] == pytest.approx(94.05)


def test_request_terms_of_the_logged_policy_are_its_observed_clicks() -> None:
    click = np.array([1, 0, 1, 0])
    ones = np.ones(4, bool)
    terms = request_terms(ones, ones, np.ones(4), click, click, np.array([0.5, 0.5, 2.0, 1.0]), None)
    m = policy_metrics(terms.sum(axis=0)[None, None], np.ones((1, 1)))
    assert m["ips_ctr"][0, 0] == m["snips_ctr"][0, 0] == m["dr_ctr"][0, 0] == 0.5
    assert m["dr_ecpc"][0, 0] == pytest.approx(2.5 / 2)
    assert np.isnan(m["truth_ctr"][0, 0])  # no p_true: no truth


def test_paired_lift_of_a_policy_over_itself_is_exactly_zero(make_log, make_model) -> None:
    log = make_log(2000, 5, seed=1)
    a, b = make_model("a"), make_model("b")
    res = replay(log, [a, b], bootstrap=50)
    value, lo, hi = res.interval("b", "dr_ctr", "total", lift=True)
    assert value == lo == hi == 0.0  # the same policy on the same resampled requests: no difference at all
    v, lo, hi = res.interval("a", "truth_ctr")
    assert lo < v < hi
