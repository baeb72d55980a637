"""Replay on the Open Bandit Dataset (ZOZOTOWN; Saito, Aihara, Matsutani & Narita, arXiv:2008.07146): a camoe model
as a recommendation policy, evaluated off-policy from the logged impressions and their propensities.

How the candidate set of a logged impression is built: each row of an Open Bandit log is one impression -- a user,
a slot (position 1..3) of a campaign's 3-slot widget, the item the logging policy put there, its propensity (the
probability that policy put that item at that position: 1 / n_items under ``random``, Thompson-sampling
frequencies under ``bts``) and the click. The logging policy chose among **all the campaign's items** for that
position, so the candidate set of the impression is every item of the campaign (34 / 46 / 80) at the logged
position, with the row's user features and the user's affinity for each item (the log's ``user-item_affinity_<k>``
columns; ``item_affinity`` of a candidate is the one for its item), the item's features from ``item_context.csv``
and ``format`` = "<campaign>_pos<position>". The shown candidate is the logged item (its propensity and click are
the log's); the others were not shown (click 0, propensity not logged). Every bid is 1, so the auction ranks by
pCTR and the policy value is CTR.

The target policy is slot-wise: for each logged impression it shows the campaign item with the highest pCTR at that
position. Open Bandit rows carry no slate id, so each impression is evaluated on its own, as Open Bandit Pipeline's
position-wise estimators do; a slate of the target policy could repeat an item across positions (this evaluates
"the best item for this slot", not a de-duplicated ranking).

Rows: by default the test split of the model's own config (the same temporal cut as ``camoe train`` used on the
same files, so the model never saw these rows); ``split="all"`` replays every row (more rows, but the reward model
of DR has seen most of them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from camoe.config import SplitConfig
from camoe.data.datasets import read_open_bandit, read_open_bandit_items
from camoe.data.split import split_frame

__all__ = ["BEHAVIORS", "is_open_bandit_root", "open_bandit_log"]

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")


def is_open_bandit_root(path: str | Path) -> bool:
    """Whether ``path`` is an Open Bandit Dataset folder (``random/`` or ``bts/`` holding campaign folders)."""
    root = Path(path)
    return root.is_dir() and any((root / b / c / "item_context.csv").is_file() for b in BEHAVIORS for c in CAMPAIGNS)


def open_bandit_log(
    root: str | Path, behavior: str, split: str = "test", split_config: SplitConfig | None = None,
    campaigns: tuple[str, ...] = CAMPAIGNS,
) -> pd.DataFrame:
    """The replay log (one row per logged impression × campaign item) of one Open Bandit behavior policy.

    Args:
        root: the ``open-bandit-dataset`` folder.
        behavior: ``random`` or ``bts`` (the logging policy).
        split: ``test`` (the rows the model's split puts in test), ``valid``, ``train`` or ``all``.
        split_config: the model's split (``config.data.split``); the cut is computed over both behaviors' files,
            as training read them. Required unless ``split == "all"``.
        campaigns: campaigns to read.

    Returns:
        Long-format DataFrame: request_id (one per logged impression), the model's Open Bandit columns (timestamp,
        user_feature_0..3, item_id, item_feature_0..3, position, campaign, item_affinity, format), bid = 1, shown,
        click, propensity (the shown candidate's; NaN for the others), policy.

    Raises:
        ValueError: unknown behavior or split, or no rows left.
        FileNotFoundError: missing files.
    """
    if behavior not in BEHAVIORS:
        raise ValueError(f"Open Bandit behavior policy must be one of {BEHAVIORS}, got '{behavior}'")
    if split not in ("train", "valid", "test", "all"):
        raise ValueError(f"split must be train, valid, test or all, got '{split}'")
    frame = read_open_bandit(root, policies=BEHAVIORS, campaigns=campaigns, affinities=True)
    if split != "all":
        if split_config is None:
            raise ValueError("split_config (the model's data.split) is needed to select the test rows")
        frame = split_frame(frame, split_config, "timestamp", source=str(root))[split]
    frame = frame[frame["policy"] == behavior].reset_index(drop=True)
    if not len(frame):
        raise ValueError(f"{root}: no '{behavior}' rows in the {split} split")
    parts = []
    first_request = 0
    for campaign in campaigns:
        rows = frame[frame["campaign"] == campaign].reset_index(drop=True)
        if not len(rows):
            continue
        items = read_open_bandit_items(root, campaign, behavior).sort_values("item_id").reset_index(drop=True)
        n, k = len(rows), len(items)
        req = np.repeat(np.arange(n), k)  # (n·k,) logged impression of each candidate
        item = np.tile(np.arange(k), n)  # (n·k,) item index of each candidate
        affinity = rows[[f"user-item_affinity_{j}" for j in items["item_id"]]].to_numpy(dtype=np.float64)  # (n, k)
        logged_item = rows["item_id"].str.split(":", n=1).str[1].astype(int).to_numpy()  # (n,)
        shown = (items["item_id"].to_numpy()[item] == logged_item[req]).astype(np.int8)
        cand = pd.DataFrame({
            "request_id": first_request + req,
            "timestamp": rows["timestamp"].to_numpy()[req],
            **{f"user_feature_{j}": rows[f"user_feature_{j}"].to_numpy()[req] for j in range(4)},
            "item_id": campaign + ":" + items["item_id"].astype(str).to_numpy()[item],
            **{f"item_feature_{j}": items[f"item_feature_{j}"].to_numpy()[item] for j in range(4)},
            "item_affinity": affinity.reshape(-1),
            "position": rows["position"].to_numpy()[req],
            "campaign": campaign,
            "format": rows["format"].to_numpy()[req],
            "policy": behavior,
            "bid": 1.0,
            "shown": shown,
            "click": np.where(shown == 1, rows["click"].to_numpy()[req], 0).astype(np.int8),
            "propensity": np.where(shown == 1, rows["propensity_score"].to_numpy()[req], np.nan),
        })
        parts.append(cand)
        first_request += n
    return pd.concat(parts, ignore_index=True)
