"""Readers for the public logs in ``shared/data``: Open Bandit (ZOZOTOWN) and iPinYou (libSVM/FM files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["READERS", "read_ipinyou_fm", "read_open_bandit", "read_open_bandit_items"]


def read_open_bandit_items(root: str | Path, campaign: str, policy: str = "random") -> pd.DataFrame:
    """The items (arms) of one Open Bandit campaign: ``item_context.csv`` of ``<root>/<policy>/<campaign>/``.

    Returns:
        One row per item: item_id (0 .. n_items − 1, as in the log files) and item_feature_0..3.

    Raises:
        FileNotFoundError: the file is missing.
    """
    item_file = Path(root) / policy / campaign / "item_context.csv"
    if not item_file.is_file():
        raise FileNotFoundError(f"Open Bandit: {item_file} not found (root={root})")
    return pd.read_csv(item_file, index_col=0)


def read_open_bandit(
    root: str | Path,
    policies: tuple[str, ...] | list[str] = ("random", "bts"),
    campaigns: tuple[str, ...] | list[str] = ("all", "men", "women"),
    affinities: bool = False,
) -> pd.DataFrame:
    """Open Bandit Dataset (small version): every policy × campaign file joined with its ``item_context.csv``.

    Args:
        root: the ``open-bandit-dataset`` folder (holding ``random/`` and ``bts/``).
        policies: logging policies to read.
        campaigns: campaigns to read.
        affinities: keep the user's affinity for every item of the campaign (columns ``user-item_affinity_<k>``,
            NaN beyond a campaign's items), e.g. to score items that were not shown.

    Returns:
        One row per impression with: timestamp (string, UTC), click, policy, campaign, position ("1".."3"),
        item_id (campaign-qualified, e.g. "men:12"), propensity_score, user_feature_0..3, item_feature_0..3,
        item_affinity (the user's affinity for the shown item) and ``format`` = "<campaign>_pos<position>".

    Raises:
        FileNotFoundError: a campaign file or its item_context.csv is missing.
        ValueError: an item_id has no item_context row.
    """
    frames = []
    for policy in policies:
        for campaign in campaigns:
            folder = Path(root) / policy / campaign
            log_file, item_file = folder / f"{campaign}.csv", folder / "item_context.csv"
            if not log_file.is_file():
                raise FileNotFoundError(f"Open Bandit: {log_file} not found (root={root})")
            items = read_open_bandit_items(root, campaign, policy)
            log = pd.read_csv(log_file, index_col=0)
            unknown = sorted(set(log["item_id"]) - set(items["item_id"]))
            if unknown:
                raise ValueError(f"{log_file}: item_id {unknown[:5]} missing from {item_file}")
            affinity_cols = [c for c in log.columns if c.startswith("user-item_affinity_")]
            affinity = log[affinity_cols].to_numpy(dtype=np.float64)  # (N, items)
            item_pos = log["item_id"].to_numpy()
            shown = np.take_along_axis(affinity, item_pos[:, None], axis=1)[:, 0] if affinity_cols else np.nan
            merged = log.drop(columns=[] if affinities else affinity_cols).merge(items, on="item_id", how="left",
                                                                                  validate="many_to_one")
            merged["item_affinity"] = shown
            merged["policy"] = policy
            merged["campaign"] = campaign
            merged["item_id"] = campaign + ":" + merged["item_id"].astype(str)
            merged["position"] = merged["position"].astype(str)
            merged["format"] = campaign + "_pos" + merged["position"]
            frames.append(merged)
    return pd.concat(frames, ignore_index=True)


def read_ipinyou_fm(path: str | Path, featindex: str | Path | None = None) -> pd.DataFrame:
    """iPinYou libSVM/FM file (``label idx:1 idx:1 ...``) decoded to one string column per field.

    Args:
        path: a ``*.fm.txt`` file.
        featindex: the ``field:value<TAB>idx`` index; default ``featindex.fm.txt`` beside ``path``.

    Returns:
        Columns ``click`` and one per field (weekday, hour, useragent, IP, region, city, adexchange, domain, slotid,
        slotwidth, slotheight, slotvisibility, slotformat, creative, advertiser, slotprice), values as in the
        index (e.g. "FirstView"); a field absent from a row is missing (None).

    Raises:
        FileNotFoundError: the data or index file is missing.
        ValueError: a malformed line (with its line number) or an index id absent from the feature index.
    """
    path = Path(path)
    index_path = Path(featindex) if featindex is not None else path.parent / "featindex.fm.txt"
    for f in (path, index_path):
        if not f.is_file():
            raise FileNotFoundError(f"iPinYou: {f} not found")
    field_of: dict[int, tuple[str, str]] = {}
    fields: list[str] = []
    with index_path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                key, idx = line.rstrip("\n").rsplit("\t", 1)
                field, value = key.split(":", 1)
                field_of[int(idx)] = (field, value)
            except ValueError:
                raise ValueError(f"{index_path}:{lineno}: expected 'field:value<TAB>index', got {line[:60]!r}") from None
            if field not in fields:
                fields.append(field)
    labels: list[int] = []
    rows: list[dict[str, str]] = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                label = int(tokens[0])
                ids = [int(tok.split(":", 1)[0]) for tok in tokens[1:]]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'label idx:val ...', got {line[:60]!r}") from None
            if label not in (0, 1):
                raise ValueError(f"{path}:{lineno}: label must be 0 or 1, got {label}")
            row = {}
            for i in ids:
                if i not in field_of:
                    raise ValueError(f"{path}:{lineno}: feature index {i} not in {index_path}")
                field, value = field_of[i]
                row[field] = value
            labels.append(label)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=fields)
    frame.insert(0, "click", np.asarray(labels, dtype=np.int8))
    return frame


READERS: dict[str, Callable[..., pd.DataFrame]] = {"open_bandit": read_open_bandit, "ipinyou_fm": read_ipinyou_fm}

