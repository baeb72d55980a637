"""The synthetic log generator: the log is bit-identical to the one before the population was factored out, and the
population scores any (user, ad, context) with the log's own true click probability."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from camoe.data.synthetic import (
    DEVICES,
    SyntheticConfig,
    draw_ads,
    generate_log,
    synthetic_population,
    true_click_probability,
)


def _digest(frame: pd.DataFrame) -> str:
    values = pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
    return hashlib.sha256(values + str(list(frame.dtypes)).encode() + str(list(frame.columns)).encode()).hexdigest()


# computed with camoe at commit 2086d33, before the population and the true logit were factored out
BEFORE = {
    "unsharded": "a7f6b99b8b2c3e3f13c65d5da187f935c0efc230c91ba3b3f9c7fec5aa2dad4c",
    "shard1of3": "7342a43346d2202c7614ad295f6c259b4f54455550c880c6cf6715c6639adefc",
    "small": "0b4b351c8bec2b39f698421007691bc0cc92ef88fe220355b1b3cda3800a5ac7",
}


def test_generate_log_is_bit_identical_to_the_log_before_the_refactor() -> None:
    assert _digest(generate_log(SyntheticConfig(rows=20_000, seed=0))) == BEFORE["unsharded"]
    assert _digest(generate_log(SyntheticConfig(rows=20_000, seed=3), shard=1, num_shards=3)) == BEFORE["shard1of3"]
    assert _digest(generate_log(SyntheticConfig(rows=500, seed=7, users=50, ads=5))) == BEFORE["small"]


def _indices(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "user": frame["user_id"].str[1:].astype(int).to_numpy(),
        "ad": frame["ad_id"].str[1:].astype(int).to_numpy(),
        "hour": frame["hour"].to_numpy(),
        "device": frame["device"].map(DEVICES.index).to_numpy(),
        "in_focus": frame["app_in_focus"].to_numpy() == 1,
        "session_minutes": frame["session_minutes"].to_numpy().astype(np.float64),
    }


def test_population_reproduces_p_true_of_every_row_unsharded_and_sharded() -> None:
    for cfg, shard, shards in ((SyntheticConfig(rows=6000, seed=4), 0, 1), (SyntheticConfig(rows=6000, seed=4), 1, 2)):
        frame = generate_log(cfg, shard, shards)
        pop = synthetic_population(cfg, shard, shards)
        p = true_click_probability(pop, **_indices(frame))
        # session_minutes is stored as float32, so the session effect differs in the 7th digit
        np.testing.assert_allclose(p, frame["p_true"].to_numpy(), rtol=1e-5)
        assert (pop.user_ids[_indices(frame)["user"]] == frame["user_id"].to_numpy()).all()
        assert (pop.ad_format[_indices(frame)["ad"]] == pd.Categorical(
            frame["format"], categories=[f.name for f in cfg.formats]).codes).all()


def test_population_of_shards_shares_users_ads_and_effects() -> None:
    cfg = SyntheticConfig(rows=60_000, seed=2)
    a, b = synthetic_population(cfg, 0, 3), synthetic_population(cfg, 2, 3)
    for name in ("propensity", "ad_format", "adv_eff", "genre_f"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # the per-format bias is solved on each shard's impressions: close, not equal
    np.testing.assert_allclose(a.format_bias, b.format_bias, atol=0.15)


def test_draw_ads_picks_an_ad_of_the_requested_format() -> None:
    pop = synthetic_population(SyntheticConfig(rows=3000, seed=0))
    fmt = np.random.default_rng(0).integers(0, len(pop.cfg.formats), 500)
    ad = draw_ads(pop.ad_format, np.random.default_rng(1), fmt)
    assert (pop.ad_format[ad] == fmt).all()
