"""The ad auction of one request, vectorised over many requests: rank by eCPM, price by second or first price.

Candidates of R requests arrive as N rows grouped by request (``request_starts``: the first row of each group).
For each candidate

    eCPM = 1000 · bid · pCTR          (currency units per 1,000 impressions; bid is a CPC bid, units per click)

A candidate is **eligible** when its pCTR is known and finite (a format the model scores), its bid is > 0 and at
least the reserve price R. The eligible candidate with the highest eCPM wins (ties: the first row). It pays per
click (CPC)

    second price: max(R, eCPM_second / (1000 · pCTR_winner))   -- the generalised second-price CPC of a one-slot
                                                                  auction ranked by bid × pCTR (Edelman, Ostrovsky &
                                                                  Schwarz 2007; Varian 2007), at most its bid
    first price:  its bid

where eCPM_second is the runner-up's eCPM (no runner-up: the winner pays the reserve). A request without an
eligible candidate is **unfilled**. The reserve is a CPC reserve price (units per click), as an advertiser bids.

Everything is NumPy over whole arrays (``np.maximum.reduceat`` per request), with no Python loop per request.

Example:
    >>> starts = request_starts(np.array([7, 7, 7, 9, 9]))
    >>> out = run_auction(starts, bid=np.array([1.0, 2.0, 0.5, 1.0, 1.0]),
    ...                   pctr=np.array([0.02, 0.02, 0.1, 0.01, np.nan]))
    >>> out.winner.tolist(), out.price.round(3).tolist()
    ([2, 3], [0.4, 0.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["PRICING", "AuctionOutcome", "request_starts", "run_auction"]

PRICING = ("second", "first")


@dataclass(frozen=True)
class AuctionOutcome:
    """The auctions of R requests.

    Attributes:
        winner: (R,) int64 row of the winning candidate, -1 where the request is unfilled.
        price: (R,) float64 CPC the winner pays per click (currency units per click), NaN where unfilled.
        ecpm: (N,) float64 eCPM of every candidate (-inf where ineligible).
        eligible_rows: (R,) int64 eligible candidates per request.
    """

    winner: np.ndarray
    price: np.ndarray
    ecpm: np.ndarray
    eligible_rows: np.ndarray

    @property
    def filled(self) -> np.ndarray:
        """(R,) bool: the request has a winner."""
        return self.winner >= 0


def request_starts(request_ids: np.ndarray) -> np.ndarray:
    """(R,) int64 first row of each request in (N,) request ids whose rows are contiguous (one group per id).

    Raises:
        ValueError: an id appears in two separate groups (the rows of a request must be adjacent).
    """
    ids = np.asarray(request_ids)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1].astype(np.int64)
    group_ids = ids[starts]
    if len(np.unique(group_ids)) != len(group_ids):
        uniq, counts = np.unique(group_ids, return_counts=True)
        split = uniq[counts > 1][:5].tolist()
        raise ValueError(f"request ids {split} appear in separate groups of rows; the candidates of a request must be "
                         f"adjacent (sort the log by request_id)")
    return starts


def run_auction(
    starts: np.ndarray, bid: np.ndarray, pctr: np.ndarray, reserve: float = 0.0,
    pricing: Literal["second", "first"] = "second",
) -> AuctionOutcome:
    """Run the one-slot auction of every request.

    Args:
        starts: (R,) int64 first row of each request (``request_starts``); rows of request r are
            ``starts[r] .. starts[r + 1] - 1``.
        bid: (N,) CPC bids (currency units per click).
        pctr: (N,) pCTR of each candidate; NaN = not scored (a format the model does not know): ineligible.
        reserve: CPC reserve price R ≥ 0; candidates bidding below it are ineligible, and the second price is at
            least R.
        pricing: ``second`` (generalised second price) or ``first`` (the winner's bid).

    Returns:
        ``AuctionOutcome``.

    Raises:
        ValueError: unknown pricing, a negative reserve, or arrays of different lengths.
    """
    if pricing not in PRICING:
        raise ValueError(f"pricing must be one of {PRICING}, got '{pricing}'")
    if not reserve >= 0:
        raise ValueError(f"reserve price must be >= 0, got {reserve}")
    bid, pctr = np.asarray(bid, dtype=np.float64), np.asarray(pctr, dtype=np.float64)
    n, r = len(bid), len(starts)
    if len(pctr) != n:
        raise ValueError(f"bid has {n} rows but pctr has {len(pctr)}")
    if r == 0:
        empty = np.zeros(0, dtype=np.int64)
        return AuctionOutcome(empty, np.zeros(0), np.full(n, -np.inf), empty)
    with np.errstate(invalid="ignore"):
        eligible = np.isfinite(pctr) & (pctr > 0) & np.isfinite(bid) & (bid > 0) & (bid >= reserve)  # (N,)
    ecpm = np.where(eligible, 1000.0 * np.where(eligible, bid, 0.0) * np.where(eligible, pctr, 0.0), -np.inf)  # (N,)
    best = np.maximum.reduceat(ecpm, starts)  # (R,)
    sizes = np.diff(np.r_[starts, n])  # (R,)
    group = np.repeat(np.arange(r), sizes)  # (N,) request of each row
    is_best = eligible & (ecpm == best[group])  # (N,)
    first_best = np.minimum.reduceat(np.where(is_best, np.arange(n), n), starts)  # (R,) n where none
    filled = first_best < n
    winner = np.where(filled, first_best, -1)
    rest = ecpm.copy()
    rest[winner[filled]] = -np.inf
    second = np.maximum.reduceat(rest, starts)  # (R,) runner-up eCPM, -inf without one
    price = np.full(r, np.nan)
    w = winner[filled]
    if pricing == "second":
        runner_up = np.where(np.isfinite(second[filled]), second[filled], 0.0)
        price[filled] = np.minimum(bid[w], np.maximum(reserve, runner_up / (1000.0 * pctr[w])))
    else:
        price[filled] = bid[w]
    eligible_rows = np.add.reduceat(eligible.astype(np.int64), starts)
    return AuctionOutcome(winner.astype(np.int64), price, ecpm, eligible_rows)
