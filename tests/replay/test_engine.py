"""Replay over whole logs: bad input refused naming the rows or requests, unknown formats counted, truth-only logs,
and a streamed Parquet log (requests cut between record batches) measured exactly as the same log in memory."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from camoe.replay import LOGGED, replay

pytestmark = pytest.mark.filterwarnings("ignore:model .* effective sample size")


def test_log_without_propensities_gives_truth_only_and_says_so(five_request_log, column_model) -> None:
    log = five_request_log.drop(columns=["propensity"])
    with pytest.warns(UserWarning, match="no 'propensity' column: IPS, SNIPS and DR estimates are undefined"):
        res = replay(log, [column_model], bootstrap=10)
    assert not res.has_propensity and res.has_truth
    assert res.value(column_model.name, "truth_ctr") == pytest.approx(0.104)
    assert np.isnan(res.value(column_model.name, "dr_ctr")) and np.isnan(res.value(column_model.name, "ess"))


def test_log_without_propensities_and_without_truth_is_refused(five_request_log, column_model) -> None:
    with pytest.raises(ValueError, match="neither 'propensity' .* nor 'p_true'"):
        replay(five_request_log.drop(columns=["propensity", "p_true"]), [column_model])


def test_log_without_truth_gives_estimates_only(five_request_log, column_model) -> None:
    res = replay(five_request_log.drop(columns=["p_true"]), [column_model], bootstrap=0)
    assert not res.has_truth and res.value(column_model.name, "dr_ctr") == pytest.approx(0.515)
    assert np.isnan(res.value(column_model.name, "truth_ctr"))


@pytest.mark.parametrize("value, shown_text", [(0.0, "0"), (1.5, "1.5"), (np.nan, "missing")])
def test_shown_candidates_propensity_of_zero_above_one_or_missing_is_refused_naming_the_row(
    five_request_log, column_model, value, shown_text
) -> None:
    log = five_request_log.copy()
    log.loc[4, "propensity"] = value  # row 5 of the file: request 3's shown candidate
    with pytest.raises(ValueError, match=rf"shown candidate's propensity must be in \(0, 1\]; rows 5 \(request_id 3\) "
                                         rf"hold {shown_text}"):
        replay(log, [column_model])


def test_missing_propensity_of_a_candidate_not_shown_is_accepted(five_request_log, column_model) -> None:
    log = five_request_log.copy()
    log.loc[log["shown"] == 0, "propensity"] = np.nan  # real logs record the shown candidate's only
    res = replay(log, [column_model], bootstrap=0)
    assert res.value(column_model.name, "dr_ctr") == pytest.approx(0.515)


def test_request_with_no_shown_candidate_is_refused_naming_it(five_request_log, column_model) -> None:
    log = five_request_log.copy()
    log.loc[log["request_id"] == 2, ["shown", "click"]] = 0
    with pytest.raises(ValueError, match=r"exactly one shown candidate .* request_id 2 \(0 shown\)"):
        replay(log, [column_model])


def test_request_with_two_shown_candidates_is_refused_naming_it(five_request_log, column_model) -> None:
    log = five_request_log.copy()
    log.loc[(log["request_id"] == 4), "shown"] = 1
    with pytest.raises(ValueError, match=r"request_id 4 \(3 shown\)"):
        replay(log, [column_model])


def test_click_on_a_candidate_that_was_not_shown_is_refused(five_request_log, column_model) -> None:
    log = five_request_log.copy()
    log.loc[1, "click"] = 1
    with pytest.raises(ValueError, match=r"a click on a candidate that was not shown: rows 2 \(request_id 1\)"):
        replay(log, [column_model])


def test_unsorted_request_ids_are_refused_naming_the_row(five_request_log, column_model) -> None:
    log = pd.concat([five_request_log.iloc[2:4], five_request_log.iloc[0:2], five_request_log.iloc[4:]])
    with pytest.raises(ValueError, match=r"'request_id' is not sorted: row 3 has request 1 after request 2"):
        replay(log.reset_index(drop=True), [column_model])


def test_negative_bid_and_true_probability_above_one_are_refused(five_request_log, column_model) -> None:
    log = five_request_log.copy()
    log.loc[3, "bid"] = -1.0
    with pytest.raises(ValueError, match=r"'bid' \(CPC bid\) must be a finite number >= 0; rows 4 \(request_id 2\)"):
        replay(log, [column_model])
    log = five_request_log.copy()
    log.loc[0, "p_true"] = 1.2
    with pytest.raises(ValueError, match=r"'p_true' .* rows 1 \(request_id 1\) hold \[1.2\]"):
        replay(log, [column_model])


def test_missing_columns_are_named(five_request_log, column_model) -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['shown'\]"):
        replay(five_request_log.drop(columns=["shown"]), [column_model])
    with pytest.raises(ValueError, match=r"the models read column\(s\) \['model_pctr'\]"):
        replay(five_request_log.drop(columns=["model_pctr"]), [column_model])


def test_candidates_of_formats_a_model_does_not_know_are_left_out_of_its_auction(five_request_log, make_model) -> None:
    audio_only = make_model("audio only", formats=("fa",))
    res = replay(five_request_log, [audio_only], bootstrap=0)
    d = res.diagnostics["audio only"]
    assert d["requests_without_known_format"] == 0 and d["unknown_formats"] == ["fv"]
    assert d["candidates_scored"] == (five_request_log["format"] == "fa").sum() == 7
    # every request keeps an fa candidate; in request 4 fa B (eCPM 100) wins over fa C (50) without the fv A (300)
    assert res.value("audio only", "wins", "fa") == 5 and res.value("audio only", "wins", "fv") == 0
    # request 4's winner B: truth 0.1, CPC = 50 / (1000 · 0.1) = 0.5
    assert res.value("audio only", "truth_clicks") == pytest.approx(0.08 + 0.04 + 0.10 + 0.10 + 0.02)


def test_a_request_whose_candidates_are_all_of_unknown_formats_is_counted_and_unfilled_not_crashed_on(
    make_log, make_model
) -> None:
    log = make_log(300, 4, seed=2)
    log.loc[log["request_id"] == 7, "format"] = "fz"
    with pytest.warns(UserWarning, match=r"1 requests have no candidate of a format it scores .* \['fz'\]"):
        res = replay(log, [make_model("m")], bootstrap=0)
    assert res.diagnostics["m"]["requests_without_known_format"] == 1
    assert res.value("m", "wins", "total") == 299
    assert res.value(LOGGED, "wins", "fz") == 1  # the logged policy showed it: reported under its own format


def test_streamed_parquet_log_equals_the_same_log_in_memory(tmp_path, make_log, make_model) -> None:
    log = make_log(3000, 7, seed=3)
    path = tmp_path / "log.parquet"
    log.to_parquet(path, row_group_size=1000)  # row groups cut requests in two
    model = make_model("m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streamed = replay(path, [model], bootstrap=20, batch_rows=999)
        memory = replay(log, [make_model("m")], bootstrap=20)
    assert model.calls > 10  # really streamed in many chunks
    assert streamed.requests == memory.requests == 3000
    for key in ("wins", "truth_ctr", "ips_ctr", "snips_ctr", "dr_ctr", "truth_ecpc", "ess"):
        np.testing.assert_allclose(streamed.metrics["m"][key]["value"], memory.metrics["m"][key]["value"], rtol=1e-9)
    # the truth is Σ p_true of each request's winner (highest bid · pCTR) over the requests
    ecpm = log["bid"] * log["model_pctr"]
    winners = log.loc[ecpm.groupby(log["request_id"]).idxmax()]
    assert memory.value("m", "truth_clicks") == pytest.approx(winners["p_true"].sum())
    assert memory.value("m", "wins", "fa") == (winners["format"] == "fa").sum()


def test_duplicate_model_names_and_unknown_baseline_are_refused(five_request_log, make_model) -> None:
    with pytest.raises(ValueError, match=r"two models are named \['m'\]"):
        replay(five_request_log, [make_model("m"), make_model("m")])
    with pytest.raises(ValueError, match="baseline 'z' is none of the policies"):
        replay(five_request_log, [make_model("m")], baseline="z")


def test_a_missing_request_id_is_refused_naming_the_row(five_request_log, column_model) -> None:
    log = five_request_log.astype({"request_id": "float64"})
    log.loc[6, "request_id"] = np.nan
    with pytest.raises(ValueError, match=r"'request_id' is empty in rows 7"):
        replay(log, [column_model])
