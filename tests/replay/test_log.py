"""The synthetic auction log: one shown candidate per request drawn with its logged propensity, true click
probabilities from the impression log's generator, bids, prices, metadata, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from camoe.data.synthetic import DEVICES, SyntheticConfig, synthetic_population, true_click_probability
from camoe.replay.log import AuctionLogConfig, generate_auction_log, logging_propensities, read_log_metadata

WORLD = SyntheticConfig(rows=20_000, seed=0)


@pytest.fixture(scope="module")
def population():
    return synthetic_population(WORLD)


@pytest.fixture(scope="module")
def small_log(population, tmp_path_factory) -> tuple[pd.DataFrame, object]:
    out = tmp_path_factory.mktemp("auctions")
    info = generate_auction_log(population, AuctionLogConfig(requests=3000, candidates=6, seed=4, chunk_requests=700),
                                out)
    return pq.read_table(info.path).to_pandas(), info


def test_every_request_has_k_candidates_one_shown_and_propensities_summing_to_one(small_log) -> None:
    log, info = small_log
    assert len(log) == 3000 * 6 and info.rows == len(log) and info.requests == 3000
    by_request = log.groupby("request_id")
    assert (by_request.size() == 6).all() and (by_request["shown"].sum() == 1).all()
    np.testing.assert_allclose(by_request["propensity"].sum(), 1.0, rtol=1e-9)
    assert (log["propensity"] > 0).all()
    assert (log.loc[log["shown"] == 0, "click"] == 0).all() and log.loc[log["shown"] == 0, "price"].isna().all()
    shown = log[log["shown"] == 1]
    assert (shown["price"] <= shown["bid"] + 1e-12).all() and (shown["price"] >= 0).all()
    assert log["request_id"].is_monotonic_increasing


def test_p_true_is_the_impression_generators_probability(small_log, population) -> None:
    log, _ = small_log
    p = true_click_probability(
        population, log["user_id"].astype(str).str[1:].astype(int).to_numpy(),
        log["ad_id"].astype(str).str[1:].astype(int).to_numpy(), log["hour"].to_numpy(),
        log["device"].astype(str).map(DEVICES.index).to_numpy(), log["app_in_focus"].to_numpy() == 1,
        log["session_minutes"].to_numpy().astype(np.float64))
    np.testing.assert_allclose(p, log["p_true"], rtol=1e-5)  # session_minutes is stored as float32
    # a candidate's format is its ad's, and its content type is the format's (as in the impression log)
    ads = log["ad_id"].astype(str).str[1:].astype(int).to_numpy()
    names = np.array([f.name for f in WORLD.formats])
    assert (names[population.ad_format[ads]] == log["format"].astype(str).to_numpy()).all()
    contents = {f.name: f.content for f in WORLD.formats}
    assert (log["format"].astype(str).map(contents) == log["content_type"].astype(str)).all()


def test_shown_candidates_follow_the_logged_propensities(population, tmp_path) -> None:
    """The logged propensity is the probability the logging policy shows the candidate: shown frequency per
    propensity bin matches the mean propensity of the bin."""
    info = generate_auction_log(population, AuctionLogConfig(requests=20_000, candidates=5, seed=9), tmp_path)
    log = pq.read_table(info.path, columns=["propensity", "shown", "click", "p_true"]).to_pandas()
    bins = pd.qcut(log["propensity"], 10, duplicates="drop")
    table = log.groupby(bins, observed=True).agg(p=("propensity", "mean"), shown=("shown", "mean"), n=("shown", "size"))
    se = np.sqrt(table["p"] * (1 - table["p"]) / table["n"])
    assert (np.abs(table["shown"] - table["p"]) < 4 * se + 1e-3).all()
    shown = log[log["shown"] == 1]
    assert abs(shown["click"].sum() - shown["p_true"].sum()) < 4 * np.sqrt(shown["p_true"].sum())


def test_softmax_and_epsilon_greedy_propensities() -> None:
    ecpm = np.array([[1.0, 2.0, 5.0, 0.0]])
    soft = logging_propensities(ecpm, AuctionLogConfig(temperature=1.0))
    np.testing.assert_allclose(soft, [[1 / 8, 2 / 8, 5 / 8, 0.0]])  # proportional to eCPM; eCPM 0: never shown
    sharp = logging_propensities(ecpm, AuctionLogConfig(temperature=0.5))
    np.testing.assert_allclose(sharp, [[1 / 30, 4 / 30, 25 / 30, 0.0]])
    greedy = logging_propensities(ecpm, AuctionLogConfig(exploration="epsilon", epsilon=0.3))
    np.testing.assert_allclose(greedy, [[0.1, 0.1, 0.8, 0.0]])


def test_the_log_is_reproducible_and_stores_its_settings(population, small_log, tmp_path) -> None:
    log, info = small_log
    again = generate_auction_log(population, AuctionLogConfig(requests=3000, candidates=6, seed=4, chunk_requests=700),
                                 tmp_path)
    pd.testing.assert_frame_equal(pq.read_table(again.path).to_pandas(), log)
    meta = read_log_metadata(info.path)
    assert meta["auction"]["candidates"] == 6 and meta["auction"]["exploration"] == "softmax"
    assert meta["world"]["impression_log"] == {"rows": 20_000, "seed": 0, "shard": 0, "num_shards": 1}
    assert json.loads(info.sidecar.read_text()) == meta


def test_bad_settings_are_refused(tmp_path, population) -> None:
    with pytest.raises(ValueError, match="candidates must be >= 2"):
        AuctionLogConfig(candidates=1)
    with pytest.raises(ValueError, match="policy 'model' needs policy_model"):
        AuctionLogConfig(policy="model")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        generate_auction_log(population, AuctionLogConfig(requests=10), tmp_path / "file")
