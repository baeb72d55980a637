"""Synthetic auction log: ad requests, K candidates each, the logging policy's choice, its propensity and the click.

One row per (request, candidate) -- long format -- streamed to Parquet in chunks of requests, so a log of any size
is written in bounded memory (1M requests × 20 candidates: 20M rows, about a minute on 2 cores).

The world is the synthetic impression log's (``camoe.data.synthetic``): the same users, ads, effects and per-format
bias (``synthetic_population`` of the impression log the models were trained on), so every candidate's ``p_true``
is the true click probability that log's generator would give that ad in that context. A request draws a user (by
activity) and a context (day, hour, device, app in focus, session length) as an impression does; its K candidates
draw a format by the formats' shares and an ad of that format, with the ad's ``bid_price`` feature and duration as
in the impression log. ``content_type`` is the candidate format's content (music / podcast / none), as in the
impression log, where it is a function of the format; the models were trained on that relation.

Advertisers bid per click (CPC). Each ad has one CPC bid, ``bid = cpm / (1000 · CTR_f) · LogNormal(−σ²/2, σ)``, so
every format's mean eCPM is about ``cpm`` and which format wins a request depends on the context (in focus, video
and display click far more) and on the ad -- the regime where a model's per-format pCTR decides the auction.

The logging policy (the "production model" that chose what was shown):

* pCTR: ``noisy_truth`` = p_true × LogNormal(−σ²/2, σ) per candidate (a good but imperfect model, mean-preserving
  noise), or ``model`` = a camoe artifact's pCTR through the one ``Scorer`` (e.g. a pooled single-task model);
* exploration over eCPM = 1000 · bid · pCTR: ``softmax`` shows candidate j with probability
  ∝ exp(ln eCPM_j / τ) = eCPM_j^(1/τ) (τ → 0: greedy; τ = 1: proportional to eCPM), or ``epsilon``-greedy: the top
  eCPM with probability 1 − ε + ε/K, any other with ε/K. Every candidate's propensity is known and > 0.
* price of the shown candidate (CPC, charged per click): second price among the logging policy's eCPMs,
  max(reserve, next eCPM / own pCTR), capped at its bid (a candidate shown by exploration below the top pays at
  most its bid); ``first``: its bid.

Columns: request_id, ts, user_id, age_bucket, country, device, hour, app_in_focus, content_type, interests,
session_minutes (the request's context), ad_id, advertiser_id, ad_category, format, slot, modality, bid_price,
ad_duration_s (the candidate), bid (CPC bid, currency per click), p_true, policy_pctr (the logging policy's pCTR),
propensity (the logging policy's probability of showing this candidate in this request), shown (0/1, one per
request), click (drawn from p_true for the shown candidate, 0 otherwise), price (CPC the shown candidate pays per
click; NaN for the others). The settings are stored in the Parquet file's metadata (key ``camoe.auction_log``) and
in ``auctions.json`` beside it.

Design source: AuctionGym (Jeunen, Rohde, Vasile & Bompaire, "Learning from Bandit Feedback: An Overview of the
State-of-the-art", AdKDD 2022 -- an ad-auction simulator with second-price auctions and learned CTR models; design
read, no code taken).

Example:
    >>> import tempfile, pyarrow.parquet as pq
    >>> from camoe.data.synthetic import SyntheticConfig
    >>> out = generate_auction_log(SyntheticConfig(rows=5000, seed=0), AuctionLogConfig(requests=300, candidates=5),
    ...                            tempfile.mkdtemp())
    >>> table = pq.read_table(out.path)
    >>> table.num_rows, int(table.column("shown").to_numpy().sum())
    (1500, 300)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from camoe.data.synthetic import (
    DEVICES,
    GENRES,
    SyntheticConfig,
    SyntheticPopulation,
    draw_ad_features,
    draw_ads,
    draw_contexts,
    draw_users,
    synthetic_population,
    true_click_probability,
)

__all__ = ["AUCTION_LOG_FILE", "METADATA_KEY", "AuctionLogConfig", "AuctionLogInfo", "generate_auction_log",
           "read_log_metadata"]

AUCTION_LOG_FILE = "auctions.parquet"
METADATA_KEY = "camoe.auction_log"
_STREAM = 0xA0C7  # the auction draws' stream, apart from the impression log's


@dataclass
class AuctionLogConfig:
    """Size, bids and logging policy of a synthetic auction log.

    Attributes:
        requests: ad requests R (one ad opportunity each).
        candidates: K candidates per request (≥ 2).
        seed: the auction draws' seed (requests, bids, noise, the policy's choices, clicks); the world (users, ads,
            effects) is the impression log's, from its own seed.
        cpm: mean eCPM every format is bid at (currency units per 1,000 impressions).
        bid_sigma: σ of the log-normal spread of CPC bids across ads.
        policy: ``noisy_truth`` or ``model`` (``policy_model`` = artifact folder, scored with ONNX Runtime).
        noise_sigma: σ of the log-normal noise of ``noisy_truth`` (0.5 ≈ a decent production model).
        exploration: ``softmax`` over ln eCPM with ``temperature`` τ, or ``epsilon``-greedy with ``epsilon``.
        pricing: the logged price rule, ``second`` or ``first``.
        reserve: CPC reserve price of the logging auction (candidates bidding below it are never shown).
        chunk_requests: requests generated and written at once (memory ≈ chunk × K × 200 bytes).
    """

    requests: int = 100_000
    candidates: int = 20
    seed: int = 0
    cpm: float = 2.0
    bid_sigma: float = 0.4
    policy: Literal["noisy_truth", "model"] = "noisy_truth"
    policy_model: str | None = None
    noise_sigma: float = 0.5
    exploration: Literal["softmax", "epsilon"] = "softmax"
    temperature: float = 1.0
    epsilon: float = 0.2
    pricing: Literal["second", "first"] = "second"
    reserve: float = 0.0
    chunk_requests: int = 50_000

    def __post_init__(self) -> None:
        checks = [
            (self.requests >= 1, f"requests must be >= 1, got {self.requests}"),
            (self.candidates >= 2, f"candidates must be >= 2, got {self.candidates}"),
            (self.cpm > 0, f"cpm must be > 0, got {self.cpm}"),
            (self.bid_sigma >= 0, f"bid_sigma must be >= 0, got {self.bid_sigma}"),
            (self.noise_sigma >= 0, f"noise_sigma must be >= 0, got {self.noise_sigma}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (0 < self.epsilon <= 1, f"epsilon must be in (0, 1], got {self.epsilon}"),
            (self.reserve >= 0, f"reserve must be >= 0, got {self.reserve}"),
            (self.chunk_requests >= 1, f"chunk_requests must be >= 1, got {self.chunk_requests}"),
            (self.policy in ("noisy_truth", "model"), f"policy must be noisy_truth or model, got '{self.policy}'"),
            (self.exploration in ("softmax", "epsilon"),
             f"exploration must be softmax or epsilon, got '{self.exploration}'"),
            (self.pricing in ("second", "first"), f"pricing must be second or first, got '{self.pricing}'"),
            (self.policy != "model" or bool(self.policy_model), "policy 'model' needs policy_model (an artifact)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"auction log: {message}")


@dataclass
class AuctionLogInfo:
    """What ``generate_auction_log`` wrote: the Parquet file, its sidecar JSON, rows, requests and the metadata."""

    path: Path
    sidecar: Path
    rows: int
    requests: int
    metadata: dict[str, Any] = field(default_factory=dict)


def _dictionary(indices: np.ndarray, values: np.ndarray) -> pa.DictionaryArray:
    """A dictionary-encoded string column: (n,) indices into (V,) strings (written and read back as categories);
    repeated strings share one dictionary entry."""
    uniques, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return pa.DictionaryArray.from_arrays(pa.array(inverse[indices].astype(np.int32)), pa.array(uniques.tolist()))


def _ad_bids(pop: SyntheticPopulation, cfg: AuctionLogConfig) -> np.ndarray:
    """(A,) CPC bid of every ad: cpm / (1000 · CTR of its format) × LogNormal(−σ²/2, σ)."""
    rng = np.random.default_rng([cfg.seed, _STREAM, 1])
    ctr = np.array([f.ctr for f in pop.cfg.formats])[pop.ad_format]
    noise = np.exp(cfg.bid_sigma * rng.standard_normal(len(ctr)) - cfg.bid_sigma ** 2 / 2)
    return cfg.cpm / (1000.0 * ctr) * noise


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (R, K) logits."""
    z = logits - logits.max(axis=1, keepdims=True)  # (R, K)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logging_propensities(ecpm: np.ndarray, cfg: AuctionLogConfig) -> np.ndarray:
    """(R, K) probability that the logging policy shows each candidate, from (R, K) eCPM > 0.

    ``softmax``: exp(ln eCPM / τ) normalised per request; ``epsilon``: ε/K each, plus 1 − ε on the first top eCPM.
    A candidate with eCPM 0 (a bid below the reserve) gets probability 0.
    """
    eligible = ecpm > 0
    if cfg.exploration == "softmax":
        with np.errstate(divide="ignore"):
            logits = np.where(eligible, np.log(np.where(eligible, ecpm, 1.0)) / cfg.temperature, -np.inf)  # (R, K)
        probs = _softmax_rows(np.where(eligible.any(axis=1, keepdims=True), logits, 0.0))
        return np.where(eligible, probs, 0.0)
    count = eligible.sum(axis=1, keepdims=True)  # (R, 1)
    probs = np.where(eligible, cfg.epsilon / np.maximum(count, 1), 0.0)  # (R, K)
    top = np.argmax(np.where(eligible, ecpm, -np.inf), axis=1)  # (R,)
    probs[np.arange(len(ecpm)), top] += 1.0 - cfg.epsilon
    return probs


def _chunk(
    pop: SyntheticPopulation, cfg: AuctionLogConfig, bids: np.ndarray, chunk: int, first_request: int, n: int,
    policy_score: Callable[[pd.DataFrame], np.ndarray] | None,
) -> pa.Table:
    """Requests ``first_request .. first_request + n - 1`` as one Arrow table (n · K rows)."""
    rng = np.random.default_rng([cfg.seed, _STREAM, 2, chunk])
    syn, k = pop.cfg, cfg.candidates
    fmts = syn.formats
    # ---- requests (n,): a user and a context, as an impression draws them
    user = draw_users(pop, rng, n)
    ctx = draw_contexts(syn, rng, user, pop.main_device)
    # ---- candidates (n·K,): a format by share, an ad of that format, its features and bid
    fmt = rng.choice(len(fmts), n * k, p=pop.shares)
    ad = draw_ads(pop.ad_format, rng, fmt)
    bid_price, ad_duration = draw_ad_features(syn, rng, fmt)
    req = np.repeat(np.arange(n), k)  # (n·K,) request of each candidate
    p_true = true_click_probability(pop, user[req], ad, ctx["hour"][req], ctx["device"][req], ctx["in_focus"][req],
                                    ctx["session_minutes"][req])
    bid = bids[ad]
    modality_names = np.array(sorted({f.modality for f in fmts}))
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(np.arange(first_request, first_request + n, dtype=np.int64)[req]),
        "ts": pa.array(ctx["ts"].astype(np.int64)[req]),
        "user_id": _dictionary(user[req], pop.user_ids),
        "age_bucket": pa.array(pop.age[user].astype(np.int64)[req]),
        "country": pa.array(pop.country[user].astype(np.int64)[req]),
        "device": _dictionary(ctx["device"][req], np.array(DEVICES)),
        "hour": pa.array(ctx["hour"].astype(np.int64)[req]),
        "app_in_focus": pa.array(ctx["in_focus"].astype(np.int8)[req]),
        "content_type": _dictionary(fmt, np.array([f.content for f in fmts])),
        "interests": _dictionary(user[req], pop.interests_str),
        "session_minutes": pa.array(ctx["session_minutes"].astype(np.float32)[req]),
        "ad_id": _dictionary(ad, pop.ad_ids),
        "advertiser_id": _dictionary(pop.ad_adv[ad], pop.advertiser_ids),
        "ad_category": _dictionary(pop.ad_cat[ad], np.array(GENRES)),
        "format": _dictionary(fmt, np.array([f.name for f in fmts])),
        "slot": _dictionary(fmt, np.array([f.slot for f in fmts])),
        "modality": _dictionary(np.searchsorted(modality_names, np.array([f.modality for f in fmts])[fmt]),
                                modality_names),
        "bid_price": pa.array(bid_price.astype(np.float32)),
        "ad_duration_s": pa.array(ad_duration.astype(np.float32)),
        "bid": pa.array(bid),
        "p_true": pa.array(p_true),
    }
    # ---- the logging policy: its pCTR, exploration over its eCPM, the shown candidate, its price and click
    if policy_score is None:
        noise = np.exp(cfg.noise_sigma * rng.standard_normal(n * k) - cfg.noise_sigma ** 2 / 2)
        policy_pctr = p_true * noise
    else:
        policy_pctr = policy_score(pa.table(columns).to_pandas())
    eligible = bid >= cfg.reserve
    ecpm = np.where(eligible, 1000.0 * bid * policy_pctr, 0.0).reshape(n, k)  # (n, K)
    probs = logging_propensities(ecpm, cfg)  # (n, K)
    cdf = np.cumsum(probs, axis=1)  # (n, K)
    u = rng.random(n)[:, None] * cdf[:, -1:]  # (n, 1)
    shown_k = np.minimum((cdf <= u).sum(axis=1), k - 1)  # (n,) first candidate whose cdf exceeds u
    shown_k = np.where(probs[np.arange(n), shown_k] > 0, shown_k, probs.argmax(axis=1))  # never a 0-probability one
    rows = np.arange(n)
    others = ecpm.copy()
    others[rows, shown_k] = 0.0
    bid_shown = bid.reshape(n, k)[rows, shown_k]
    if cfg.pricing == "second":
        pctr_shown = policy_pctr.reshape(n, k)[rows, shown_k]
        price_shown = np.minimum(bid_shown, np.maximum(cfg.reserve, others.max(axis=1) / (1000.0 * pctr_shown)))
    else:
        price_shown = bid_shown
    shown = np.zeros((n, k), dtype=np.int8)
    shown[rows, shown_k] = 1
    click = np.zeros((n, k), dtype=np.int8)
    click[rows, shown_k] = rng.random(n) < p_true.reshape(n, k)[rows, shown_k]
    price = np.full((n, k), np.nan)
    price[rows, shown_k] = price_shown
    columns.update({
        "policy_pctr": pa.array(np.asarray(policy_pctr, dtype=np.float64)),
        "propensity": pa.array(probs.reshape(-1)),
        "shown": pa.array(shown.reshape(-1)),
        "click": pa.array(click.reshape(-1)),
        "price": pa.array(price.reshape(-1)),
    })
    return pa.table(columns)


def generate_auction_log(
    world: SyntheticConfig | SyntheticPopulation, cfg: AuctionLogConfig, output: str | Path, shard: int = 0,
    num_shards: int = 1, progress: Callable[[int, int], None] | None = None,
) -> AuctionLogInfo:
    """Write a synthetic auction log to ``output/auctions.parquet`` (and ``output/auctions.json``).

    Args:
        world: the impression log's config (its population is rebuilt: ``synthetic_population(world, shard,
            num_shards)``) or the population itself.
        cfg: requests, candidates, bids, logging policy.
        output: folder to write.
        shard, num_shards: which shard of a sharded impression log gives the population (its per-format bias).
        progress: called with (requests written, requests) after each chunk.

    Returns:
        ``AuctionLogInfo``.

    Raises:
        ValueError: bad settings, or ``output`` is a file.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file; give a folder (it receives {AUCTION_LOG_FILE} and auctions.json)")
    pop = world if isinstance(world, SyntheticPopulation) else synthetic_population(world, shard, num_shards)
    policy_score = None
    if cfg.policy == "model":
        from camoe.pipeline import CTRPipeline

        scorer = CTRPipeline.load(cfg.policy_model).scorer("onnx")  # type: ignore[arg-type]
        known = set(scorer.layout.formats)
        missing = sorted({f.name for f in pop.cfg.formats} - known)
        if missing:
            raise ValueError(f"policy_model {cfg.policy_model}: formats {missing} are unknown to the model; the "
                             f"logging policy must score every candidate")

        def policy_score(frame: pd.DataFrame) -> np.ndarray:
            return scorer.score(frame, "auction log candidates").pctr

    syn = pop.cfg
    meta = {
        "kind": METADATA_KEY, "version": 1,
        "world": {"impression_log": {"rows": syn.rows, "seed": syn.seed, "shard": shard, "num_shards": num_shards},
                  "formats": [asdict(f) for f in syn.formats]},
        "auction": asdict(cfg),
        "columns": {"bid": "CPC bid, currency units per click", "price": "CPC charged per click to the shown "
                    "candidate (NaN for the others)", "propensity": "logging policy's probability of showing the "
                    "candidate", "p_true": "true click probability", "policy_pctr": "logging policy's pCTR"},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / AUCTION_LOG_FILE
    bids = _ad_bids(pop, cfg)
    written = 0
    writer: pq.ParquetWriter | None = None
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        for chunk, first in enumerate(range(0, cfg.requests, cfg.chunk_requests)):
            n = min(cfg.chunk_requests, cfg.requests - first)
            table = _chunk(pop, cfg, bids, chunk, first, n, policy_score)
            if writer is None:
                schema = table.schema.with_metadata({METADATA_KEY: json.dumps(meta, default=str)})
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata), row_group_size=262_144)
            written += n
            if progress is not None:
                progress(written, cfg.requests)
        assert writer is not None
        writer.close()
        writer = None
        tmp.replace(path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    sidecar = out / "auctions.json"
    sidecar.write_text(json.dumps(meta, indent=2, default=str))
    return AuctionLogInfo(path, sidecar, written * cfg.candidates, written, meta)


def read_log_metadata(path: str | Path) -> dict[str, Any] | None:
    """The ``camoe.auction_log`` metadata of a Parquet auction log, or None when it has none."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY.encode())
    return json.loads(raw) if raw else None
