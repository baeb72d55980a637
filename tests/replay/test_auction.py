"""The vectorised auction: second and first price, reserve price, unfilled requests, ties, against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from camoe.replay.auction import request_starts, run_auction


def _loop_auction(ids, bid, pctr, reserve, pricing):
    """Reference: one request at a time, in plain Python."""
    winners, prices = [], []
    for rid in dict.fromkeys(ids.tolist()):
        rows = [i for i in range(len(ids)) if ids[i] == rid]
        ok = [i for i in rows if np.isfinite(pctr[i]) and pctr[i] > 0 and bid[i] > 0 and bid[i] >= reserve]
        if not ok:
            winners.append(-1)
            prices.append(np.nan)
            continue
        ecpm = {i: 1000 * bid[i] * pctr[i] for i in ok}
        best = max(ok, key=lambda i: (ecpm[i], -i))
        others = [ecpm[i] for i in ok if i != best]
        runner_up = max(others) if others else 0.0
        price = bid[best] if pricing == "first" else min(bid[best], max(reserve, runner_up / (1000 * pctr[best])))
        winners.append(best)
        prices.append(price)
    return np.array(winners), np.array(prices)


def test_second_price_pays_the_runner_up_ecpm_over_its_own_pctr() -> None:
    starts = request_starts(np.array([1, 1, 1]))
    out = run_auction(starts, np.array([1.0, 2.0, 0.5]), np.array([0.02, 0.02, 0.1]))
    assert out.winner.tolist() == [2]  # eCPM 20, 40, 50
    assert out.price[0] == pytest.approx(40 / (1000 * 0.1))


def test_first_price_pays_the_winners_bid() -> None:
    out = run_auction(request_starts(np.array([1, 1])), np.array([1.0, 2.0]), np.array([0.05, 0.04]), pricing="first")
    assert out.winner.tolist() == [1] and out.price.tolist() == [2.0]


def test_reserve_price_makes_low_bids_ineligible_and_floors_the_second_price() -> None:
    starts = request_starts(np.array([1, 1, 1]))
    bid, pctr = np.array([0.4, 1.0, 2.0]), np.array([0.5, 0.01, 0.01])
    free = run_auction(starts, bid, pctr)
    assert free.winner.tolist() == [0]  # eCPM 200 > 20 > 10
    reserved = run_auction(starts, bid, pctr, reserve=0.5)
    assert reserved.winner.tolist() == [2]  # bid 0.4 is below the reserve: eCPM 20 now wins
    assert reserved.price[0] == pytest.approx(max(0.5, 10 / (1000 * 0.01)))  # runner-up 10 -> CPC 1.0 >= reserve
    alone = run_auction(request_starts(np.array([1])), np.array([2.0]), np.array([0.01]), reserve=0.7)
    assert alone.price[0] == pytest.approx(0.7)  # no runner-up: the reserve


def test_request_without_an_eligible_candidate_is_unfilled() -> None:
    starts = request_starts(np.array([1, 1, 2]))
    out = run_auction(starts, np.array([1.0, 0.0, 1.0]), np.array([np.nan, 0.1, 0.2]))
    assert out.winner.tolist() == [-1, 2] and np.isnan(out.price[0]) and out.filled.tolist() == [False, True]
    assert out.eligible_rows.tolist() == [0, 1]


def test_ties_go_to_the_first_candidate_and_pay_their_own_bid() -> None:
    out = run_auction(request_starts(np.array([5, 5])), np.array([1.0, 1.0]), np.array([0.1, 0.1]))
    assert out.winner.tolist() == [0] and out.price[0] == pytest.approx(1.0)


def test_vectorised_auction_equals_a_loop_over_requests() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, 300)
    ids = np.repeat(np.arange(300) * 3 + 7, sizes)
    n = len(ids)
    bid = np.round(rng.uniform(0, 2, n), 1)  # rounding makes ties and zero bids
    pctr = np.where(rng.random(n) < 0.1, np.nan, np.round(rng.uniform(0, 0.1, n), 2))
    for pricing in ("second", "first"):
        for reserve in (0.0, 0.8):
            out = run_auction(request_starts(ids), bid, pctr, reserve, pricing)
            winners, prices = _loop_auction(ids, bid, pctr, reserve, pricing)
            np.testing.assert_array_equal(out.winner, winners)
            np.testing.assert_allclose(out.price, prices, rtol=1e-12)


def test_a_request_split_into_two_groups_of_rows_is_refused() -> None:
    with pytest.raises(ValueError, match=r"request ids \[1\] appear in separate groups"):
        request_starts(np.array([1, 1, 2, 1]))


def test_bad_pricing_and_negative_reserve_are_refused() -> None:
    starts = request_starts(np.array([1]))
    with pytest.raises(ValueError, match="pricing must be one of"):
        run_auction(starts, np.ones(1), np.ones(1) / 10, pricing="vickrey")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserve price must be >= 0"):
        run_auction(starts, np.ones(1), np.ones(1) / 10, reserve=-1)
