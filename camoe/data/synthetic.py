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

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_FORMATS",
    "PRESETS",
    "RARE_TASK_FORMATS",
    "FormatSpec",
    "SyntheticConfig",
    "SyntheticPopulation",
    "draw_ad_features",
    "draw_ads",
    "draw_contexts",
    "draw_users",
    "format_table",
    "generate_log",
    "synthetic_population",
    "true_click_probability",
]


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


@dataclass(frozen=True)
class SyntheticPopulation:
    """What every impression of one synthetic log shares: users, ads, effects and the per-format bias.

    U users, A ads, K formats, G genres. Built by ``synthetic_population``; ``true_click_probability`` scores any
    (user, ad, context) with it, so other row sets (e.g. the candidates of an auction log) get the log's true click
    probability.

    Attributes:
        cfg: the log's configuration (effect sizes, formats).
        age, country, main_device: (U,) int64 user attributes.
        propensity: (U,) float64 user click propensity (logit units).
        modality_aff: (U, 3) float64 user affinity per modality.
        interest_mask: (U, G) bool, the user's interests; interests_str: (U,) "|"-joined interests.
        activity: (U,) float64 relative impression rate of each user.
        ad_format, ad_adv, ad_cat: (A,) int64 format, advertiser and category of each ad.
        ad_quality: (A,) float64; adv_eff: (advertisers,) float64 (logit units).
        hour_f, device_f, modality_f, age_f, genre_f: factors of the order-3 and order-2 crosses.
        format_bias: (K,) float64 offset solved so each format's mean true CTR over the log's impressions is the
            format's ``ctr``.
    """

    cfg: SyntheticConfig
    age: np.ndarray
    country: np.ndarray
    main_device: np.ndarray
    propensity: np.ndarray
    modality_aff: np.ndarray
    interest_mask: np.ndarray
    interests_str: np.ndarray
    activity: np.ndarray
    ad_format: np.ndarray
    ad_adv: np.ndarray
    ad_cat: np.ndarray
    ad_quality: np.ndarray
    adv_eff: np.ndarray
    hour_f: np.ndarray
    device_f: np.ndarray
    modality_f: np.ndarray
    age_f: np.ndarray
    genre_f: np.ndarray
    format_bias: np.ndarray

    @property
    def shares(self) -> np.ndarray:
        """(K,) impression share of each format (normalised)."""
        shares = np.array([f.share for f in self.cfg.formats])
        return shares / shares.sum()

    @property
    def user_ids(self) -> np.ndarray:
        """(U,) the ``user_id`` strings the log writes ("u0", "u1", ...)."""
        return _labels("u", len(self.activity))

    @property
    def ad_ids(self) -> np.ndarray:
        """(A,) the ``ad_id`` strings ("a0", ...)."""
        return _labels("a", len(self.ad_format))

    @property
    def advertiser_ids(self) -> np.ndarray:
        """(advertisers,) the ``advertiser_id`` strings ("adv0", ...)."""
        return _labels("adv", len(self.adv_eff))


def draw_users(population: SyntheticPopulation | np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) user index of n impressions (or requests), drawn in proportion to user activity.

    Args:
        population: the population, or its (U,) activity array (``generate_log`` draws users before its ads exist).
    """
    activity = population.activity if isinstance(population, SyntheticPopulation) else population
    return rng.choice(len(activity), n, p=activity / activity.sum())


def draw_ads(ad_format: np.ndarray, rng: np.random.Generator, fmt: np.ndarray) -> np.ndarray:
    """(n,) ad index for n impressions of formats ``fmt`` (n,): an ad of that format, uniformly.

    Args:
        ad_format: (A,) format index of each ad (``SyntheticPopulation.ad_format``).
    """
    k = int(ad_format.max()) + 1
    order = np.argsort(ad_format, kind="stable")
    per_fmt = np.bincount(ad_format, minlength=k)
    starts = np.r_[0, np.cumsum(per_fmt)[:-1]]
    return order[starts[fmt] + (rng.random(len(fmt)) * per_fmt[fmt]).astype(np.int64)]


def draw_contexts(
    cfg: SyntheticConfig, rng: np.random.Generator, user: np.ndarray, main_device: np.ndarray
) -> dict[str, np.ndarray]:
    """Context of impressions (or requests) of ``user`` (n,): day, hour, ts (s), device, app in focus, session.

    Returns:
        {"day", "hour", "ts", "device", "in_focus", "session_minutes"}: (n,) arrays.
    """
    n = len(user)
    day = rng.integers(0, cfg.days, n)
    hour_p = 1.0 + 0.8 * np.sin((np.arange(24) - 8) / 24 * 2 * np.pi)
    hour = rng.choice(24, n, p=hour_p / hour_p.sum())
    ts = cfg.start_ts + day * 86400 + hour * 3600 + rng.integers(0, 3600, n)
    device = np.where(rng.random(n) < 0.8, main_device[user], rng.integers(0, len(DEVICES), n))
    in_focus = rng.random(n) < cfg.in_focus_share
    session_minutes = rng.lognormal(3.0, 0.8, n)
    return {"day": day, "hour": hour, "ts": ts, "device": device, "in_focus": in_focus,
            "session_minutes": session_minutes}


def draw_ad_features(cfg: SyntheticConfig, rng: np.random.Generator, fmt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) ``bid_price`` feature and (n,) ``ad_duration_s`` (s) of n impressions of formats ``fmt`` (n,)."""
    fmts = cfg.formats
    bid_price = rng.lognormal(1.0, 0.5, len(fmt)) * (1 + 2 * np.array([f.modality != "audio" for f in fmts])[fmt])
    duration = np.array([30.0 if f.modality == "audio" else 20.0 if f.modality == "video" else 0.0 for f in fmts])
    return bid_price, duration[fmt] * rng.choice([0.5, 1.0], len(fmt))


def _raw_logit(
    pop: SyntheticPopulation, user: np.ndarray, ad: np.ndarray, hour: np.ndarray, device: np.ndarray,
    in_focus: np.ndarray, session_minutes: np.ndarray,
) -> np.ndarray:
    """(n,) true logit without the per-format bias (the module docstring's sum of effects)."""
    cfg, fmts = pop.cfg, pop.cfg.formats
    fmt = pop.ad_format[ad]
    age, ad_cat = pop.age, pop.ad_cat
    modality_idx = np.array([MODALITIES.index(f.modality) for f in fmts])[fmt]
    focus = np.array([cfg.focus_effect[f.modality] for f in fmts])[fmt]
    match_w = np.array([cfg.genre_match[f.content] for f in fmts])[fmt]
    # order-3 and order-2 crosses as products of per-value factors: not additive, few parameters to learn
    cross3 = cfg.cross3_std * pop.hour_f[hour // 4] * pop.device_f[device] * pop.modality_f[modality_idx]
    cross2 = cfg.cross2_std * pop.age_f[age[user]] * pop.genre_f[ad_cat[ad]]
    log_sess = np.log(session_minutes)
    return (
        pop.propensity[user]
        + pop.modality_aff[user, modality_idx]
        + np.where(in_focus, focus, -focus)
        + match_w * pop.interest_mask[user, ad_cat[ad]]
        + cross3
        + cross2
        + pop.ad_quality[ad]
        + pop.adv_eff[pop.ad_adv[ad]]
        + cfg.session_effect * (modality_idx == 0) * (log_sess - 3.0) / 0.8
    )


def true_click_probability(
    pop: SyntheticPopulation, user: np.ndarray, ad: np.ndarray, hour: np.ndarray, device: np.ndarray,
    in_focus: np.ndarray, session_minutes: np.ndarray,
) -> np.ndarray:
    """(n,) float64 true click probability sigmoid(logit) of ads ``ad`` (n,) shown to ``user`` (n,) in a context.

    The same logit as the log's ``p_true`` (module docstring), with the log's per-format bias; the ad's format is
    ``pop.ad_format[ad]``.

    Args:
        user, ad: (n,) int64 indices into the population's users and ads.
        hour, device: (n,) int64 hour of day and index into ``DEVICES``; in_focus: (n,) bool;
        session_minutes: (n,) float64.
    """
    logit = _raw_logit(pop, user, ad, hour, device, in_focus, session_minutes)
    return _sigmoid(logit + pop.format_bias[pop.ad_format[ad]])


def _draw(cfg: SyntheticConfig, shard: int, num_shards: int) -> tuple[SyntheticPopulation, dict[str, np.ndarray]]:
    """The population and the impressions of one shard, drawn in the log's fixed order (see ``generate_log``)."""
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
    user = draw_users(activity, rng, n)

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
    ad = draw_ads(ad_format, rng, fmt)
    context = draw_contexts(cfg, rng, user, main_device)
    bid_price, ad_duration = draw_ad_features(cfg, rng, fmt)

    # ---- true logit: cross factors (drawn after the impressions), then the bias that hits each format's CTR
    hour_f, device_f = rng_pop.normal(0, 1, 6), rng_pop.normal(0, 1, len(DEVICES))
    modality_f = rng_pop.normal(0, 1, 3)
    age_f, genre_f = rng_pop.normal(0, 1, 6), rng_pop.normal(0, 1, g)
    pop = SyntheticPopulation(
        cfg, age, country, main_device, propensity, modality_aff, interest_mask, interests_str, activity,
        ad_format, ad_adv, ad_cat, ad_quality, adv_eff, hour_f, device_f, modality_f, age_f, genre_f, np.zeros(k),
    )
    hour, device, in_focus = context["hour"], context["device"], context["in_focus"]
    logit = _raw_logit(pop, user, ad, hour, device, in_focus, context["session_minutes"])
    bias = _solve_bias(logit, fmt, np.array([f.ctr for f in fmts]))
    pop = replace(pop, format_bias=bias)
    logit = logit + bias[fmt]
    p_true = _sigmoid(logit)
    click = (rng.random(n) < p_true).astype(np.int8)
    return pop, {"user": user, "fmt": fmt, "ad": ad, **context, "bid_price": bid_price, "ad_duration": ad_duration,
                 "p_true": p_true, "click": click}


def synthetic_population(cfg: SyntheticConfig | None = None, shard: int = 0, num_shards: int = 1) -> SyntheticPopulation:
    """The population of ``generate_log(cfg, shard, num_shards)``: its users, ads, effects and per-format bias.

    Draws the log's impressions too (the population's random draws are interleaved with them in an unsharded
    log, and the per-format bias is solved on them), so it costs about as much as generating the log without
    building the table.

    Example:
        >>> cfg = SyntheticConfig(rows=2000, seed=1)
        >>> pop = synthetic_population(cfg)
        >>> frame = generate_log(cfg)
        >>> users = frame["user_id"].str[1:].astype(int).to_numpy()
        >>> ads = frame["ad_id"].str[1:].astype(int).to_numpy()
        >>> devices = frame["device"].map(DEVICES.index).to_numpy()
        >>> p = true_click_probability(pop, users, ads, frame["hour"].to_numpy(), devices,
        ...                            frame["app_in_focus"].to_numpy() == 1, frame["session_minutes"].to_numpy())
        >>> bool(np.allclose(p, frame["p_true"], rtol=1e-5))  # session_minutes is stored as float32
        True
    """
    cfg = cfg or SyntheticConfig()
    return _draw(cfg, shard, num_shards)[0]


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
    pop, imp = _draw(cfg, shard, num_shards)
    fmts, n_users, n_ads = cfg.formats, len(pop.activity), len(pop.ad_format)
    user, ad, fmt, hour = imp["user"], imp["ad"], imp["fmt"], imp["hour"]
    ts, device, in_focus, session_minutes = imp["ts"], imp["device"], imp["in_focus"], imp["session_minutes"]
    age, country, interests_str, ad_adv, ad_cat = pop.age, pop.country, pop.interests_str, pop.ad_adv, pop.ad_cat
    content = np.array([f.content for f in fmts], dtype=object)[fmt]
    bid_price, ad_duration, click, p_true = imp["bid_price"], imp["ad_duration"], imp["click"], imp["p_true"]

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
