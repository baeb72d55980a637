"""Auction replay: what a model would do to CTR, spend and eCPC per ad format in the ad auction, measured offline.

* ``log``: the synthetic auction log (requests × candidates, true click probabilities, a logging policy with known
  propensities), streamed to Parquet.
* ``auction``: the vectorised one-slot auction (eCPM ranking, second / first price CPC, reserve price).
* ``estimators``: IPS, SNIPS and DR per-request terms, Poisson bootstrap sums and metrics.
* ``models``: artifacts (or one artifact per format) scored through the one ``Scorer``.
* ``engine``: ``replay`` -- stream a log, score, run every model's auction, measure truth and estimates.
* ``open_bandit``: the Open Bandit Dataset as a replay log (a model as a recommendation policy).
* ``report``: terminal tables, ``replay.json``, ``replay.html``.
"""

from camoe.replay.auction import AuctionOutcome, request_starts, run_auction
from camoe.replay.engine import LOGGED, ReplayResult, replay
from camoe.replay.estimators import GroupSums, policy_metrics, request_terms
from camoe.replay.log import AuctionLogConfig, generate_auction_log
from camoe.replay.models import ArtifactModel, ReplayModel, load_replay_model
from camoe.replay.open_bandit import open_bandit_log

__all__ = [
    "LOGGED",
    "ArtifactModel",
    "AuctionLogConfig",
    "AuctionOutcome",
    "GroupSums",
    "ReplayModel",
    "ReplayResult",
    "generate_auction_log",
    "load_replay_model",
    "open_bandit_log",
    "policy_metrics",
    "replay",
    "request_starts",
    "request_terms",
    "run_auction",
]
