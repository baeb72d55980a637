"""The train / valid / test split: one rule for rows in memory and rows streamed from Parquet.

Every row gets a sort key: its timestamp (``temporal``, the default; numbers, datetimes or ISO 8601 date strings,
``camoe.data.columns.timestamp_values``) or a seeded hash of its position in the source (``random``). The split is
two cut points on that key: with N rows and n_train = N − round(N·test_fraction) − round(N·valid_fraction),

    train = key <= c1,   valid = c1 < key <= c2,   test = key > c2

where c1 is the n_train-th smallest key and c2 the (n_train + n_valid)-th. **A timestamp value never spans two
splits: rows sharing the cut timestamp go to the earlier split** (so a split can hold a few more rows than its
fraction, and a log whose rows share too few timestamps can leave a later split empty, which is warned about).

The cut points are found exactly in bounded memory from the key column alone: a pass for the count and range, then
histogram passes that narrow the range holding each cut to at most ``max_exact_keys`` keys, which are then sorted.
A frame in memory is the same computation over one chunk, so both paths put the same rows in each split
(random keys depend on the row's position in file order, which a frame read from the same files shares).

``SplitPlan`` holds the cut points, the rows and the first / last key of each split; it is printed by
``camoe train`` and stored in ``metrics.json`` and the artifact's manifest.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from camoe.config import SplitConfig
from camoe.data.columns import timestamp_values
from camoe.data.sources import FrameSource, RowSource

__all__ = ["SPLITS", "SplitFilter", "SplitPlan", "plan_split", "split_frame"]

SPLITS = ("train", "valid", "test")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _random_keys(seed: int, start: int, n: int) -> np.ndarray:
    """(n,) int64 keys in [0, 2^63) for rows ``start .. start + n - 1``: splitmix64 of (seed, position)."""
    with np.errstate(over="ignore"):
        x = (np.arange(start, start + n, dtype=np.uint64) + np.uint64(seed % 2**64) * _GOLDEN) * _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(1)).astype(np.int64)


@dataclass(frozen=True)
class _Key:
    """How a row's sort key is computed."""

    method: Literal["temporal", "random"]
    column: str | None  # timestamp column (temporal)
    seed: int = 0  # random

    def values(self, values: pd.Series, start: int, source: str) -> np.ndarray:
        if self.method == "random":
            return _random_keys(self.seed, start, len(values))
        assert self.column is not None
        return timestamp_values(pd.DataFrame({self.column: values}), self.column, source)

    def chunks(self, source: RowSource) -> Iterator[np.ndarray]:
        """Every chunk's keys, in file order."""
        start = 0
        for chunk in source.chunks([self.column] if self.column else []):
            values = chunk[self.column] if self.column else pd.Series(np.zeros(len(chunk)))
            yield self.values(values, start, source.name)
            start += len(chunk)


@dataclass
class SplitPlan:
    """Cut points of a split and what they give.

    Attributes:
        method: ``temporal`` or ``random``.
        column: the timestamp column (temporal), else None.
        seed: the random split's seed.
        cuts: (c1, c2) key values; train = key <= c1, valid = c1 < key <= c2, test = key > c2. None for a split
            that takes no rows from this source (its fraction is 0 or it comes from its own file).
        rows: rows per split.
        first, last: smallest and largest key per split (None when empty).
        datetime_keys: keys are nanoseconds since the epoch (shown as ISO 8601 UTC times).
    """

    method: Literal["temporal", "random"]
    column: str | None
    seed: int = 0
    cuts: tuple[int | float | None, int | float | None] = (None, None)
    rows: dict[str, int] = field(default_factory=dict)
    first: dict[str, int | float | None] = field(default_factory=dict)
    last: dict[str, int | float | None] = field(default_factory=dict)
    datetime_keys: bool = False

    @property
    def _key(self) -> _Key:
        return _Key(self.method, self.column, self.seed)

    def where(self, split: str) -> SplitFilter:
        """The ``RowFilter`` selecting ``split``'s rows."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        return SplitFilter(self, split)

    def bounds(self, split: str) -> tuple[Any, Any] | None:
        """(lo, hi] key bounds of a split (None = unbounded side); None when the split takes no rows here."""
        c1, c2 = self.cuts
        if split == "train":
            return (None, c1) if self.rows.get("train", 0) else None
        if split == "valid":
            return (c1, c2) if self.rows.get("valid", 0) else None
        return (c2 if c2 is not None else c1, None) if self.rows.get("test", 0) else None

    def show(self, value: int | float | None) -> str:
        """A key as text: ISO 8601 UTC for datetime keys, the number otherwise."""
        if value is None:
            return "-"
        if self.datetime_keys:
            return pd.Timestamp(int(value), unit="ns", tz="UTC").isoformat()
        return f"{value}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in ``metrics.json`` and the manifest."""
        key = (f"timestamp column '{self.column}'" if self.method == "temporal"
               else f"seeded hash of the row position (seed {self.seed})")
        return {
            "method": self.method, "key": key,
            "rule": "train = key <= c1, valid = c1 < key <= c2, test = key > c2; rows sharing a cut key go to the "
                    "earlier split",
            "cut_points": {"c1": self.show(self.cuts[0]) if self.cuts[0] is not None else None,
                           "c2": self.show(self.cuts[1]) if self.cuts[1] is not None else None},
            "rows": dict(self.rows),
            "first": {s: self.show(v) if v is not None else None for s, v in self.first.items()},
            "last": {s: self.show(v) if v is not None else None for s, v in self.last.items()},
        }

    def describe(self) -> str:
        """One line per split: rows and key range, for the terminal."""
        if self.method == "random":
            lines = [f"split random (seed {self.seed}, by a hash of the row position):"]
        else:
            lines = [f"split by '{self.column}': train <= {self.show(self.cuts[0])} < valid <= "
                     f"{self.show(self.cuts[1])} < test (rows sharing a cut timestamp stay in the earlier split)"]
        for s in SPLITS:
            if s in self.rows:
                span = (f"  {self.show(self.first.get(s))} .. {self.show(self.last.get(s))}"
                        if self.method == "temporal" and self.rows[s] else "")
                lines.append(f"  {s:5s} {self.rows[s]:>12,} rows{span}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SplitFilter:
    """Rows of one split of a ``SplitPlan`` (a ``RowFilter``)."""

    plan: SplitPlan
    split: str

    @property
    def column(self) -> str | None:
        return self.plan.column if self.plan.method == "temporal" else None

    def keep(self, values: pd.Series, start: int, source: str) -> np.ndarray:
        bounds = self.plan.bounds(self.split)
        if bounds is None:
            return np.zeros(len(values), dtype=bool)
        keys = self.plan._key.values(values, start, source)
        lo, hi = bounds
        mask = np.ones(len(keys), dtype=bool)
        if lo is not None:
            mask &= keys > lo
        if hi is not None:
            mask &= keys <= hi
        return mask


class _Target:
    """One cut being searched: the key at 0-based ``rank`` lies in [a, b] (inclusive), with ``below`` keys < a."""

    def __init__(self, rank: int, a: Any, b: Any) -> None:
        self.rank, self.a, self.b, self.below = rank, a, b, 0
        self.count: int | None = None  # keys in [a, b], once counted
        self.value: Any = None
        self.starts: np.ndarray | None = None  # histogram bin starts (bin i = [starts[i], starts[i + 1]))
        self.hist: np.ndarray | None = None
        self.found: list[tuple[np.ndarray, np.ndarray]] = []  # collected (unique keys, counts)

    def prepare(self, integer: bool, bins: int, max_exact_keys: int) -> None:
        """Choose this pass's work: a histogram over [a, b], or collecting the keys when they are few (or the
        interval cannot be split further)."""
        self.starts = self.hist = None
        self.found = []
        if self.count is not None and self.count <= max_exact_keys:
            return
        if integer:
            span = int(self.b) - int(self.a) + 1
            step = max(1, -(-span // bins))
            starts = np.arange(0, -(-span // step), dtype=np.int64) * np.int64(step) + np.int64(self.a)
        else:
            starts = np.unique(np.linspace(float(self.a), float(self.b), bins, endpoint=False))
        if len(starts) > 1:
            self.starts, self.hist = starts, np.zeros(len(starts), dtype=np.int64)

    def add(self, keys: np.ndarray) -> None:
        inside = keys[(keys >= self.a) & (keys <= self.b)]
        if self.starts is None:
            self.found.append(np.unique(inside, return_counts=True))
            if len(self.found) > 64:  # merge so that memory follows the distinct keys, not the chunks
                self.found = [_merge(self.found)]
        else:
            assert self.hist is not None
            self.hist += np.bincount(np.searchsorted(self.starts, inside, side="right") - 1, minlength=len(self.hist))

    def finish(self, integer: bool) -> None:
        target = self.rank - self.below
        if self.starts is None:
            values, counts = _merge(self.found)
            self.value = values[int(np.searchsorted(np.cumsum(counts), target, side="right"))].item()
            return
        assert self.hist is not None
        cum = np.cumsum(self.hist)
        i = int(np.searchsorted(cum, target, side="right"))
        self.below += int(cum[i - 1]) if i else 0
        self.count = int(self.hist[i])
        self.a = self.starts[i].item()
        if i + 1 < len(self.starts):
            upper = self.starts[i + 1].item()
            self.b = upper - 1 if integer else float(np.nextafter(upper, -np.inf))
        if self.a == self.b:
            self.value = self.a


def _merge(found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not found:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    values, inverse = np.unique(np.concatenate([v for v, _ in found]), return_inverse=True)
    return values, np.bincount(inverse, weights=np.concatenate([c for _, c in found])).astype(np.int64)


def _kth_smallest(key: _Key, source: RowSource, ranks: list[int], lo: Any, hi: Any, integer: bool,
                  bins: int, max_exact_keys: int) -> list[Any]:
    """The keys at 0-based ``ranks`` (in sorted order) of the source, exactly, in bounded memory.

    Each pass over the key column either narrows every open cut's interval to one bin of a ``bins``-bin histogram,
    or, once the interval holds at most ``max_exact_keys`` keys (or cannot be split), collects its distinct keys
    with their counts and reads the cut off them.
    """
    targets = [_Target(r, lo, hi) for r in ranks]
    for t in targets:
        if t.a == t.b:
            t.value = t.a
    while True:
        open_ = [t for t in targets if t.value is None]
        if not open_:
            return [t.value for t in targets]
        for t in open_:
            t.prepare(integer, bins, max_exact_keys)
        for keys in key.chunks(source):
            for t in open_:
                t.add(keys)
        for t in open_:
            t.finish(integer)


def plan_split(
    source: RowSource, config: SplitConfig, timestamp: str | None, *, valid_fraction: float | None = None,
    test_fraction: float | None = None, bins: int = 1 << 20, max_exact_keys: int = 1 << 20,
) -> SplitPlan:
    """Compute the cut points of ``source``'s split.

    Args:
        source: the rows (a frame or a Parquet source).
        config: method, fractions and the random seed.
        timestamp: the timestamp column (required by ``temporal``).
        valid_fraction, test_fraction: override the config's (0 when the split comes from its own file).
        bins: histogram bins per narrowing pass.
        max_exact_keys: keys collected and sorted once a cut's interval holds no more.

    Returns:
        The ``SplitPlan``; a split whose fraction is 0 gets no rows.

    Raises:
        ValueError: temporal split without a timestamp column, missing or unparseable timestamps (naming the source
            and column), no rows, or no training rows left.
    """
    valid_fraction = config.valid_fraction if valid_fraction is None else valid_fraction
    test_fraction = config.test_fraction if test_fraction is None else test_fraction
    if config.method == "temporal":
        if timestamp is None:
            raise ValueError(f"{source.name}: temporal split needs schema.timestamp; set split.method: random to split "
                             f"randomly")
        if timestamp not in source.columns:
            raise ValueError(f"{source.name}: timestamp column '{timestamp}' not found (schema.timestamp); columns: "
                             f"{source.columns}. Set schema.timestamp: null and split.method: random for logs without "
                             f"time")
    key = _Key(config.method, timestamp if config.method == "temporal" else None, config.seed)
    n, lo, hi, integer, datetime_keys = 0, None, None, True, False
    for keys in key.chunks(source):
        if not len(keys):
            continue
        n += len(keys)
        integer = integer and np.issubdtype(keys.dtype, np.integer)
        lo = keys.min().item() if lo is None else min(lo, keys.min().item())
        hi = keys.max().item() if hi is None else max(hi, keys.max().item())
    if key.column is not None and n:
        sample = next(source.chunks([key.column]))[key.column]
        datetime_keys = not pd.api.types.is_numeric_dtype(sample.dtype)
    if n == 0:
        raise ValueError(f"{source.name}: no rows")
    n_test, n_valid = int(round(n * test_fraction)), int(round(n * valid_fraction))
    n_train = n - n_test - n_valid
    if n_train < 1:
        raise ValueError(f"{source.name}: {n} rows leave no training rows with the split fractions")
    plan = SplitPlan(config.method, key.column, config.seed, datetime_keys=datetime_keys)
    if n_valid + n_test == 0:
        plan.rows, plan.first, plan.last = {"train": n}, {"train": lo}, {"train": hi}
        return plan
    ranks = [n_train - 1] + ([n_train + n_valid - 1] if n_test else [])
    cut_values = _kth_smallest(key, source, ranks, lo, hi, integer, bins, max_exact_keys)
    c1 = cut_values[0]
    c2 = cut_values[1] if n_test else hi
    plan.cuts = (c1, c2 if n_test else None)
    counts = {s: 0 for s in SPLITS}
    first: dict[str, Any] = {s: None for s in SPLITS}
    last: dict[str, Any] = {s: None for s in SPLITS}
    for keys in key.chunks(source):
        parts = {"train": keys[keys <= c1], "valid": keys[(keys > c1) & (keys <= c2)], "test": keys[keys > c2]}
        for s, part in parts.items():
            if len(part):
                counts[s] += len(part)
                first[s] = part.min().item() if first[s] is None else min(first[s], part.min().item())
                last[s] = part.max().item() if last[s] is None else max(last[s], part.max().item())
    wanted = {"train": n_train, "valid": n_valid, "test": n_test}
    for s in ("valid", "test"):
        if wanted[s] and not counts[s]:
            warnings.warn(f"{source.name}: the {config.method} split leaves the {s} split empty (asked for {wanted[s]} "
                          f"of {n} rows): rows sharing a cut key stay in the earlier split and the rows hold too few "
                          f"distinct keys; give explicit data.valid_path / data.test_path", stacklevel=2)
    plan.rows = {s: counts[s] for s in SPLITS if wanted[s] or s == "train"}
    plan.first, plan.last = {s: first[s] for s in plan.rows}, {s: last[s] for s in plan.rows}
    return plan


def split_frame(
    frame: pd.DataFrame, config: SplitConfig, timestamp: str | None, source: str = "data"
) -> dict[str, pd.DataFrame]:
    """Split rows in memory into ``train`` / ``valid`` / ``test`` with ``plan_split``'s rule.

    Rows keep their order within each split (the index is reset).

    Raises:
        ValueError: as ``plan_split``.

    Example:
        >>> frame = pd.DataFrame({"ts": [5, 1, 4, 2, 3, 9, 8, 7, 6, 10]})
        >>> parts = split_frame(frame, SplitConfig(valid_fraction=0.2, test_fraction=0.3), "ts")
        >>> [sorted(parts[s]["ts"]) for s in SPLITS]
        [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    """
    rows = FrameSource(frame, source)
    plan = plan_split(rows, config, timestamp if config.method == "temporal" else None)
    out = {}
    for split in SPLITS:
        part = next(rows.chunks(where=plan.where(split)), frame.iloc[0:0])
        out[split] = part.reset_index(drop=True)
    return out
