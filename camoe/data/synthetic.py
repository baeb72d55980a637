"""Synthetic audio-centric multi-format ad impression log with a known true click probability per row.

The generator follows the blueprint in ``shared/PAPER.md``: 7 ad formats over 3 modalities, audio dominating
volume, ~70% of impressions with the app out of focus (visual formats then rarely clicked), and a true logit

    logit = format bias                        (solved so each format hits its base CTR)
          + user propensity                    (shared by all formats; partly from age/country, partly per user)
          + user affinity for the modality
          + app-in-focus effect                (large for video and display, small for audio)
          + genre match × content weight       (user's multi-valued interests vs the ad's category)
          + hour-bucket × device × modality    (order-3 cross)
          + age × ad category                  (order-2 cross)
          + ad quality + advertiser effect + session length (audio).

Each row keeps ``p_true = sigmoid(logit)`` and ``click ~ Bernoulli(p_true)``, so the oracle AUC-PR (average
precision of ``p_true``) bounds every model. Everything is vectorised NumPy; deterministic for a seed.

Example:
    >>> frame = generate_log(SyntheticConfig(rows=2000, seed=1))
    >>> sorted(frame["format"].unique())[:2], bool(frame["ts"].is_monotonic_increasing)
    (['audio_music', 'audio_podcast'], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_FORMATS", "FormatSpec", "SyntheticConfig", "generate_log", "format_table"]


@dataclass(frozen=True)
class FormatSpec:
    """One ad format of the synthetic log (shares and CTRs are the blueprint's)."""

    name: str
    modality: str  # audio | video | display
    content: str  # music | podcast | none
    slot: str  # in_stream | takeover | sponsored | banner | homepage
    share: float  # fraction of impressions
    ctr: float  # mean true CTR of the format


DEFAULT_FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec("audio_music", "audio", "music", "in_stream", 0.45, 0.003),
    FormatSpec("audio_podcast", "audio", "podcast", "in_stream", 0.25, 0.002),
    FormatSpec("video_takeover", "video", "music", "takeover", 0.07, 0.015),
    FormatSpec("video_sponsored_session", "video", "music", "sponsored", 0.05, 0.025),
    FormatSpec("video_podcast", "video", "podcast", "in_stream", 0.05, 0.008),
    FormatSpec("display_leaderboard", "display", "music", "banner", 0.07, 0.004),
    FormatSpec("display_homepage", "display", "none", "homepage", 0.06, 0.006),
)

# A log with one rare task: display (both formats) is 5% of the impressions with a CTR high enough for a few hundred
# validation clicks at 800k rows, so under modality grouping its head has little data of its own while audio and video
# share most of its click structure (propensity, crosses, genre match). Tunes "rare tasks learn from neighbours".
RARE_TASK_FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec("audio_music", "audio", "music", "in_stream", 0.47, 0.003),
    FormatSpec("audio_podcast", "audio", "podcast", "in_stream", 0.27, 0.002),
    FormatSpec("video_takeover", "video", "music", "takeover", 0.08, 0.015),
    FormatSpec("video_sponsored_session", "video", "music", "sponsored", 0.06, 0.025),
    FormatSpec("video_podcast", "video", "podcast", "in_stream", 0.07, 0.008),
    FormatSpec("display_leaderboard", "display", "music", "banner", 0.025, 0.04),
    FormatSpec("display_homepage", "display", "none", "homepage", 0.025, 0.05),
)

# Named format tables of ``camoe generate --preset`` and experiment files (``data.synthetic.preset``).
PRESETS: dict[str, tuple[FormatSpec, ...]] = {"audio_centric": DEFAULT_FORMATS, "rare_task": RARE_TASK_FORMATS}

GENRES = ("pop", "rock", "hiphop", "jazz", "classical", "electronic", "country", "latin",
          "news", "comedy", "true_crime", "sports")
DEVICES = ("ios", "android", "web", "desktop", "smart_speaker", "tv")
MODALITIES = ("audio", "video", "display")


@dataclass
class SyntheticConfig:
    """Volumes, rates and effect sizes of the synthetic log (all configurable).

    Effect sizes are in logit units. ``users`` = 0 means rows // 40 (about 40 impressions per user).
    """

    rows: int = 1_000_000
    seed: int = 0
    formats: tuple[FormatSpec, ...] = DEFAULT_FORMATS
    users: int = 0
    ads: int = 3000
    advertisers: int = 100
    days: int = 14
    start_ts: int = 1_767_225_600  # 2026-01-01 00:00:00 UTC, seconds
    in_focus_share: float = 0.3
    user_propensity_std: float = 0.08  # per-user part, learnable only through user_id
    demographic_effect_std: float = 0.5  # age bucket and country parts of the propensity
    modality_affinity_std: float = 0.35  # age bucket × modality part of the modality affinity
    user_modality_std: float = 0.05  # per-user part of the modality affinity
    focus_effect: dict[str, float] = field(default_factory=lambda: {"audio": 0.15, "video": 1.3, "display": 1.1})
    genre_match: dict[str, float] = field(default_factory=lambda: {"music": 0.4, "podcast": 0.6, "none": 0.3})
    cross3_std: float = 0.6  # scale of hour-bucket × device × modality (product of unit-normal factors)
    cross2_std: float = 0.5  # scale of age bucket × ad category (product of unit-normal factors)
    ad_quality_std: float = 0.05  # per ad: barely learnable from ad_id, like real creative noise
    advertiser_std: float = 0.3
    session_effect: float = 0.25  # per std of log session minutes, audio formats only

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")
        shares = np.array([f.share for f in self.formats])
        if (shares <= 0).any():
            raise ValueError("every format share must be > 0")
        for f in self.formats:
            if not 0 < f.ctr < 1:
                raise ValueError(f"format '{f.name}': ctr must be in (0, 1), got {f.ctr}")
            if f.modality not in MODALITIES:
                raise ValueError(f"format '{f.name}': modality must be one of {MODALITIES}, got '{f.modality}'")


def format_table(formats: tuple[FormatSpec, ...] = DEFAULT_FORMATS) -> dict[str, dict[str, str]]:
    """Format attributes as a config ``formats:`` table (modality, content, slot)."""
    return {f.name: {"modality": f.modality, "content": f.content, "slot": f.slot} for f in formats}


def _solve_bias(logit: np.ndarray, group: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-group offset b with mean(sigmoid(logit + b)) = target, by bisection (60 steps, all groups at once)."""
    lo, hi = np.full(len(target), -20.0), np.full(len(target), 20.0)
    counts = np.maximum(np.bincount(group, minlength=len(target)), 1)
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = np.bincount(group, weights=_sigmoid(logit + mid[group]), minlength=len(target)) / counts
        too_high = mean > target
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return (lo + hi) / 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _labels(prefix: str, n: int) -> np.ndarray:
    return np.char.add(prefix, np.arange(n).astype(str)).astype(object)


def generate_log(cfg: SyntheticConfig | None = None, shard: int = 0, num_shards: int = 1) -> pd.DataFrame:
    """Generate the impression log, or one shard of it.

    Args:
        cfg: sizes, seed and effect sizes; defaults to ``SyntheticConfig()`` (1M rows).
        shard: which shard to generate, in [0, num_shards).
        num_shards: S > 1 splits the ``cfg.rows`` impressions into S shards of about rows / S that share users,
            ads and effects (drawn from the seed alone) and draw their impressions independently, so a log of any
            size is written shard by shard in bounded memory. S = 1 is the unsharded log.

    Returns:
        DataFrame of ``cfg.rows`` rows sorted by ``ts`` with columns ts, user_id, age_bucket, country, device, hour,
        app_in_focus, content_type, interests ("|"-separated genres, may be empty), ad_id, advertiser_id,
        ad_category, format, slot, modality, bid_price, session_minutes, ad_duration_s, click, p_true.
    """
    cfg = cfg or SyntheticConfig()
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, num_shards), got shard {shard} of {num_shards}")
    # population (users, ads, effects) from the seed alone, so every shard shares it; impressions from (seed, shard).
    # With one shard both are the same generator, which reproduces the unsharded log exactly.
    rng_pop = np.random.default_rng(cfg.seed)
    rng = rng_pop if num_shards == 1 else np.random.default_rng([cfg.seed, shard])
    n = cfg.rows // num_shards + (1 if shard < cfg.rows % num_shards else 0)
    fmts = cfg.formats
    k = len(fmts)
    n_users = cfg.users or max(200, cfg.rows // 40)
    g = len(GENRES)

    # ---- users
    age = rng_pop.integers(0, 6, n_users)
    country = np.minimum(rng_pop.geometric(0.18, n_users) - 1, 19)
    main_device = rng_pop.choice(len(DEVICES), n_users, p=[0.35, 0.35, 0.1, 0.1, 0.05, 0.05])
    age_eff = rng_pop.normal(0, cfg.demographic_effect_std, 6)
    country_eff = rng_pop.normal(0, cfg.demographic_effect_std, 20)
    propensity = age_eff[age] + country_eff[country] + rng_pop.normal(0, cfg.user_propensity_std, n_users)
    age_modality = rng_pop.normal(0, cfg.modality_affinity_std, (6, 3))
    modality_aff = age_modality[age] + rng_pop.normal(0, cfg.user_modality_std, (n_users, 3))
    genre_weight = rng_pop.gamma(0.35, 1.0, (n_users, g))  # sparse-ish affinities
    genre_weight /= genre_weight.sum(axis=1, keepdims=True)
    interest_mask = genre_weight > 0.15  # 0-4 genres per user; some users have none
    interests_str = np.array(
        ["|".join(GENRES[j] for j in np.flatnonzero(row)) for row in interest_mask], dtype=object
    )
    activity = rng_pop.lognormal(0, 1.0, n_users)
    user = rng.choice(n_users, n, p=activity / activity.sum())

    # ---- ads: each ad belongs to one format
    shares = np.array([f.share for f in fmts])
    shares = shares / shares.sum()
    ad_format = (
        np.concatenate([np.arange(k), rng_pop.choice(k, cfg.ads - k, p=shares)]) if cfg.ads > k else np.arange(k)
    )
    n_ads = len(ad_format)
    ad_adv = rng_pop.integers(0, cfg.advertisers, n_ads)
    ad_cat = rng_pop.integers(0, g, n_ads)
    ad_quality = rng_pop.normal(0, cfg.ad_quality_std, n_ads)
    adv_eff = rng_pop.normal(0, cfg.advertiser_std, cfg.advertisers)

    # ---- impressions: format by share, then an ad of that format
    fmt = rng.choice(k, n, p=shares)
    order = np.argsort(ad_format, kind="stable")
    per_fmt = np.bincount(ad_format, minlength=k)
    starts = np.r_[0, np.cumsum(per_fmt)[:-1]]
    ad = order[starts[fmt] + (rng.random(n) * per_fmt[fmt]).astype(np.int64)]

    day = rng.integers(0, cfg.days, n)
    hour_p = 1.0 + 0.8 * np.sin((np.arange(24) - 8) / 24 * 2 * np.pi)
    hour = rng.choice(24, n, p=hour_p / hour_p.sum())
    ts = cfg.start_ts + day * 86400 + hour * 3600 + rng.integers(0, 3600, n)
    device = np.where(rng.random(n) < 0.8, main_device[user], rng.integers(0, len(DEVICES), n))
    in_focus = rng.random(n) < cfg.in_focus_share
    session_minutes = rng.lognormal(3.0, 0.8, n)
    bid_price = rng.lognormal(1.0, 0.5, n) * (1 + 2 * np.array([f.modality != "audio" for f in fmts])[fmt])
    duration = np.array([30.0 if f.modality == "audio" else 20.0 if f.modality == "video" else 0.0 for f in fmts])
    ad_duration = duration[fmt] * rng.choice([0.5, 1.0], n)

    # ---- true logit
    modality_idx = np.array([MODALITIES.index(f.modality) for f in fmts])[fmt]
    content = np.array([f.content for f in fmts], dtype=object)[fmt]
    focus = np.array([cfg.focus_effect[f.modality] for f in fmts])[fmt]
    match_w = np.array([cfg.genre_match[f.content] for f in fmts])[fmt]
    # order-3 and order-2 crosses as products of per-value factors: not additive, few parameters to learn
    hour_f, device_f = rng_pop.normal(0, 1, 6), rng_pop.normal(0, 1, len(DEVICES))
    modality_f = rng_pop.normal(0, 1, 3)
    age_f, genre_f = rng_pop.normal(0, 1, 6), rng_pop.normal(0, 1, g)
    cross3 = cfg.cross3_std * hour_f[hour // 4] * device_f[device] * modality_f[modality_idx]
    cross2 = cfg.cross2_std * age_f[age[user]] * genre_f[ad_cat[ad]]
    log_sess = np.log(session_minutes)
    logit = (
        propensity[user]
        + modality_aff[user, modality_idx]
        + np.where(in_focus, focus, -focus)
        + match_w * interest_mask[user, ad_cat[ad]]
        + cross3
        + cross2
        + ad_quality[ad]
        + adv_eff[ad_adv[ad]]
        + cfg.session_effect * (modality_idx == 0) * (log_sess - 3.0) / 0.8
    )
    logit = logit + _solve_bias(logit, fmt, np.array([f.ctr for f in fmts]))[fmt]
    p_true = _sigmoid(logit)
    click = (rng.random(n) < p_true).astype(np.int8)

    frame = pd.DataFrame(
        {
            "ts": ts.astype(np.int64),
            "user_id": _labels("u", n_users)[user],
            "age_bucket": age[user].astype(np.int64),
            "country": country[user].astype(np.int64),
            "device": np.array(DEVICES, dtype=object)[device],
            "hour": hour.astype(np.int64),
            "app_in_focus": in_focus.astype(np.int8),
            "content_type": content,
            "interests": interests_str[user],
            "ad_id": _labels("a", n_ads)[ad],
            "advertiser_id": _labels("adv", cfg.advertisers)[ad_adv[ad]],
            "ad_category": np.array(GENRES, dtype=object)[ad_cat[ad]],
            "format": np.array([f.name for f in fmts], dtype=object)[fmt],
            "slot": np.array([f.slot for f in fmts], dtype=object)[fmt],
            "modality": np.array([f.modality for f in fmts], dtype=object)[fmt],
            "bid_price": bid_price.astype(np.float32),
            "session_minutes": session_minutes.astype(np.float32),
            "ad_duration_s": ad_duration.astype(np.float32),
            "click": click,
            "p_true": p_true,
        }
    )
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)
