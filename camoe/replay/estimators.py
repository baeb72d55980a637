"""Off-policy estimates of a target policy's clicks and spend from a logged policy's choices, with bootstrap CIs.

Notation per request i: x_i its context, a_i the candidate the logging policy showed with propensity
π0_i = π0(a_i | x_i) > 0, y_i ∈ {0, 1} its click. The target policy π is deterministic (an auction run with a
model's pCTR): it shows a*_i (or nothing), pays CPC ρ_i per click, and its model predicts q_i = q̂(x_i, a*_i).
With the importance weight w_i = 1[a_i = a*_i] / π0_i (π is 1 on its winner):

    IPS    clicks = Σ_i w_i y_i                                   (Horvitz & Thompson 1952)
    SNIPS  CTR    = Σ_i w_i y_i / Σ_i w_i                         (self-normalised; Swaminathan & Joachims 2015)
    DR     clicks = Σ_i [ q_i + w_i (y_i − q_i) ]                 (doubly robust; Dudík, Langford & Li 2011,
                                                                   reward model = the target model's own pCTR)
    ESS           = (Σ_i w_i)² / Σ_i w_i²                         (Kish's effective sample size)

and spend = the same sums with y replaced by ρ_i · y_i (DR: ρ_i · [q_i + w_i (y_i − q_i)]). A group of requests
(the format or modality of the target's winner) sums over its requests; the target's wins per group are known
exactly (it is deterministic), so CTR = clicks / wins (SNIPS: the ratio above), eCPC = spend / clicks and revenue
per 1,000 requests = 1000 · spend / requests. Where the log knows every candidate's true click probability p, the
**truth** is the exact expectation: clicks = Σ_i p(x_i, a*_i), spend = Σ_i ρ_i p(x_i, a*_i). The logged policy
itself is measured on-policy: w_i = 1, so its IPS, SNIPS and DR are all its observed clicks and spend.

Confidence intervals: Poisson bootstrap over requests (Hanley & MacGibbon 2006; Chamandy, Muralidharan, Najmi &
Naidu 2012, "Estimating uncertainty for massive data streams"): replicate b gives request i the weight
W_bi ~ Poisson(1), independently, so replicates are built in one streaming pass chunk by chunk; every policy uses
the same weights (a paired bootstrap, so a lift's CI reflects only the difference between policies); the 95% CI is
the 2.5th and 97.5th percentile of a statistic over the B replicates (Efron & Tibshirani 1993, ch. 13).

Example (the 5-request log of ``tests/replay/test_estimators.py``):
    >>> terms = request_terms(filled=np.array([1, 1, 1, 1, 0], bool), match=np.array([1, 0, 1, 1, 0], bool),
    ...                       propensity=np.array([0.5, 0.2, 0.25, 0.8, 0.5]), click=np.array([1, 1, 0, 1, 0]),
    ...                       q=np.array([0.3, 0.1, 0.2, 0.4, 0.0]), price=np.ones(5), p_true=None)
    >>> sums = GroupSums(groups=2, replicates=0)  # group 0: one format; group 1: unfilled requests
    >>> sums.add(np.array([0, 0, 0, 0, 1]), terms)
    >>> m = policy_metrics(sums.point[None], np.array([[1.0, 0.0], [1.0, 1.0]]))  # the format; all requests
    >>> [round(float(m[k][0, 0]), 4) for k in ("ips_ctr", "snips_ctr", "dr_ctr", "ess")]
    [0.8125, 0.4483, 0.5875, 2.4377]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ESTIMATORS",
    "STATS",
    "GroupSums",
    "bootstrap_weights",
    "percentile_ci",
    "policy_metrics",
    "request_terms",
]

# per-request terms summed per group; "requests" counts every request (filled or not) of the group
STATS = ("requests", "wins", "true_clicks", "true_spend", "weight", "weight_sq", "matches", "ips_clicks",
         "ips_spend", "dr_clicks", "dr_spend")
_S = {name: i for i, name in enumerate(STATS)}
ESTIMATORS = ("truth", "ips", "snips", "dr")


def request_terms(
    filled: np.ndarray, match: np.ndarray, propensity: np.ndarray, click: np.ndarray, q: np.ndarray,
    price: np.ndarray, p_true: np.ndarray | None,
) -> np.ndarray:
    """(R, S) per-request terms (columns ``STATS``) of a deterministic target policy on R logged requests.

    Args:
        filled: (R,) bool, the target shows a candidate (its auction has a winner).
        match: (R,) bool, the logged shown candidate is the target's winner.
        propensity: (R,) π0 of the logged shown candidate, in (0, 1].
        click: (R,) logged click of the shown candidate (0 / 1).
        q: (R,) the target model's pCTR of its winner (the DR reward model); ignored where unfilled.
        price: (R,) CPC the target's winner pays per click (currency units); ignored where unfilled.
        p_true: (R,) true click probability of the target's winner, or None when the log has none (truth columns
            are then NaN).

    For the logged policy itself pass filled = match = True and propensity = 1: every estimate is then the
    observed value.
    """
    filled, match = np.asarray(filled, bool), np.asarray(match, bool)
    r = len(filled)
    out = np.zeros((r, len(STATS)))
    f = filled.astype(np.float64)
    rho = np.where(filled, np.nan_to_num(np.asarray(price, np.float64), nan=0.0), 0.0)  # (R,)
    qq = np.where(filled, np.nan_to_num(np.asarray(q, np.float64), nan=0.0), 0.0)  # (R,)
    y = np.asarray(click, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(filled & match, 1.0 / np.asarray(propensity, np.float64), 0.0)  # (R,)
    out[:, _S["requests"]] = 1.0
    out[:, _S["wins"]] = f
    if p_true is None:
        out[:, _S["true_clicks"]] = np.nan
        out[:, _S["true_spend"]] = np.nan
    else:
        p = np.where(filled, np.asarray(p_true, np.float64), 0.0)
        out[:, _S["true_clicks"]] = p
        out[:, _S["true_spend"]] = rho * p
    dr = f * (qq + w * (y - qq))  # (R,)
    out[:, _S["weight"]] = w
    out[:, _S["weight_sq"]] = w * w
    out[:, _S["matches"]] = (filled & match).astype(np.float64)
    out[:, _S["ips_clicks"]] = w * y
    out[:, _S["ips_spend"]] = w * y * rho
    out[:, _S["dr_clicks"]] = dr
    out[:, _S["dr_spend"]] = rho * dr
    if np.isnan(price).any():  # a spend the log cannot tell (e.g. the logged policy without a price column)
        unknown = filled & np.isnan(np.asarray(price, np.float64))
        for name in ("true_spend", "ips_spend", "dr_spend"):
            out[unknown, _S[name]] = np.nan
    return out


def bootstrap_weights(replicates: int, rows: int, seed: int | list[int]) -> np.ndarray:
    """(B, R) float32 Poisson(1) bootstrap weights of R requests (see the module docstring)."""
    return np.random.default_rng(seed).poisson(1.0, (replicates, rows)).astype(np.float32)


@dataclass
class GroupSums:
    """Sums of the per-request terms per group: the point sums and B bootstrap replicates.

    Args:
        groups: G groups (e.g. K formats + 1 for unfilled requests).
        replicates: B (0: point sums only).

    Attributes:
        point: (G, S) float64 sums with weight 1.
        boot: (B, G, S) float64 sums with the bootstrap weights.
    """

    groups: int
    replicates: int
    point: np.ndarray = field(init=False)
    boot: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.point = np.zeros((self.groups, len(STATS)))
        self.boot = np.zeros((self.replicates, self.groups, len(STATS)))

    def add(self, group: np.ndarray, terms: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add R requests: (R,) group index in [0, G), (R, S) terms, (B, R) bootstrap weights (None when B = 0).

        Raises:
            ValueError: a group index outside [0, G), or weights of the wrong shape.
        """
        group = np.asarray(group, dtype=np.int64)
        if len(group) and (group.min() < 0 or group.max() >= self.groups):
            raise ValueError(f"group index outside [0, {self.groups})")
        np.add.at(self.point, group, terms)
        if self.replicates == 0:
            return
        if weights is None or weights.shape != (self.replicates, len(group)):
            raise ValueError(f"bootstrap weights must have shape ({self.replicates}, {len(group)})")
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(self.groups + 1))
        t32 = np.nan_to_num(terms, nan=0.0).astype(np.float32)  # NaN columns stay NaN through ``point``
        for g in range(self.groups):
            rows = order[bounds[g]:bounds[g + 1]]
            if len(rows):
                self.boot[:, g, :] += weights[:, rows] @ t32[rows]  # (B, S)
        nan_cols = np.isnan(terms).any(axis=0)
        if nan_cols.any():
            self.boot[:, :, nan_cols] = np.nan


def policy_metrics(sums: np.ndarray, aggregate: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics per output group from group sums.

    Args:
        sums: (..., G, S) sums (``GroupSums.point[None]`` or ``GroupSums.boot``).
        aggregate: (H, G) 0/1 matrix: output group h sums input groups g (formats -> modalities -> all). The
            revenue per 1,000 requests divides by the requests of the last output group (all requests).

    Returns:
        name -> (..., H) array: wins, win_share, matches, ess, and for each estimator e in truth / ips / snips /
        dr: {e}_clicks, {e}_ctr, {e}_spend, {e}_ecpc, {e}_revenue_per_1k. Ratios with a zero denominator are NaN.
    """
    agg = np.einsum("hg,...gs->...hs", aggregate, sums)  # (..., H, S)

    def col(name: str) -> np.ndarray:
        return agg[..., _S[name]]

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)

    requests = col("requests")[..., -1:]  # (..., 1) every request
    wins = col("wins")
    ess = np.where(col("weight_sq") > 0, ratio(col("weight") ** 2, col("weight_sq")),
                   np.where(np.isnan(col("weight_sq")), np.nan, 0.0))  # no matched request: ESS 0
    out = {"wins": wins, "win_share": ratio(wins, requests), "matches": col("matches"), "ess": ess}
    snips_ctr = ratio(col("ips_clicks"), col("weight"))
    clicks = {"truth": col("true_clicks"), "ips": col("ips_clicks"), "snips": wins * snips_ctr,
              "dr": col("dr_clicks")}
    spend = {"truth": col("true_spend"), "ips": col("ips_spend"), "snips": wins * ratio(col("ips_spend"), col("weight")),
             "dr": col("dr_spend")}
    for e in ESTIMATORS:
        out[f"{e}_clicks"] = clicks[e]
        out[f"{e}_ctr"] = snips_ctr if e == "snips" else ratio(clicks[e], wins)
        out[f"{e}_spend"] = spend[e]
        out[f"{e}_ecpc"] = ratio(spend[e], clicks[e])
        out[f"{e}_revenue_per_1k"] = 1000.0 * ratio(spend[e], requests)
    return out


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) percentile interval over axis 0 of (B, ...) replicates, NaN replicates skipped.

    Example:
        >>> lo, hi = percentile_ci(np.arange(101.0)[:, None])
        >>> round(float(lo[0]), 6), round(float(hi[0]), 6)
        (2.5, 97.5)
    """
    if len(replicates) == 0:
        nan = np.full(replicates.shape[1:], np.nan)
        return nan, nan.copy()
    tail = (1.0 - level) / 2 * 100
    finite = np.where(np.isfinite(replicates), replicates, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN bounds
        lo = np.nanpercentile(finite, tail, axis=0)
        hi = np.nanpercentile(finite, 100 - tail, axis=0)
    return lo, hi
