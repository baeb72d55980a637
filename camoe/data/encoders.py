"""Feature encoding: raw columns -> (ids, multi-valued ids, dense floats), fitted on the training split only.

One ``FeatureEncoder`` serves training, batch scoring and serving, so the encoding step is the same code everywhere.
Its state (vocabularies, hash settings, numeric statistics) is plain JSON saved with the model.

Rules (documented in the README "Your own data"):

* categorical ``vocab``: values seen >= ``min_count`` times in train get ids 2.. (most frequent first); unseen values
  map to OOV id 1 and are counted; missing values (NaN, None, empty string) map to id 0, never to OOV.
* categorical ``hash``: stable seedless hash (pandas ``hash_array`` with its fixed key, identical in every process
  and Python version) into ``hash_buckets`` buckets, ids 2 .. buckets+1.
* categorical ``identity``: pre-encoded integers in [0, num_ids) -> ids 2..; out-of-range ids raise (strict) or map
  to OOV and are counted (lenient).
* multi-valued: split on ``separator``, first ``max_len`` values kept, padding 0; an empty cell is an empty list.
* numeric: cast to float64 (non-numeric text raises); NaN/inf are missing -> ``fill_value`` or the training mean,
  plus an optional 0/1 missing-indicator column; ``log`` applies sign(x)·log1p(|x|); then standardised with the
  training mean and std. NaN never leaves the encoder.

Example:
    >>> import pandas as pd
    >>> from camoe.config import SchemaConfig
    >>> schema = SchemaConfig(features=[{"name": "device", "type": "categorical"},
    ...                                 {"name": "bid", "type": "numeric"}])
    >>> enc = FeatureEncoder(schema).fit(pd.DataFrame({"device": ["ios", "web", "ios"], "bid": [1.0, 2.0, 3.0]}))
    >>> out = enc.transform(pd.DataFrame({"device": ["tv", None], "bid": [2.0, None]}))
    >>> out.cat_ids.tolist(), out.dense.tolist(), out.oov_counts["device"]
    ([[1], [0]], [[0.0], [0.0]], 1)
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from camoe.config import FeatureSpec, SchemaConfig
from camoe.data.columns import (
    Rows,
    categorical_strings,
    category_value,
    category_values,
    column,
    columns_of,
    memoisable,
    multi_values,
    numeric_block,
    num_rows,
    numeric_values,
)
from camoe.data.derived import key_strings, prior_counts, time_parts, timestamps_in_seconds, value_matches
from camoe.schema import MISSING_ID, NUM_RESERVED, OOV_ID, InputSpec

__all__ = ["HASH_KEY", "EncodedFeatures", "EncoderFit", "FeatureEncoder", "InputQuality", "extend_encoder",
           "stable_hash"]

_SMALL = 4096  # inputs up to this many values take the per-value lookups (scoring requests)
_MEMO_TYPES = frozenset({str, int, float, bool})  # request values memoised as they come (True == 1 share "1")
_MEMO_MAX = 1 << 16
HASH_KEY = "camoe-hash-v1.0."  # 16 bytes; changing it changes every hashed id


def stable_hash(values: np.ndarray, buckets: int) -> np.ndarray:
    """Seedless, process-independent hash of string values into [0, buckets).

    Uses ``pandas.util.hash_array`` (SipHash with a fixed key), so a value lands in the same bucket in any process
    regardless of ``PYTHONHASHSEED`` (case B28).

    Args:
        values: (N,) strings.
        buckets: number of buckets.

    Returns:
        (N,) int64 bucket ids in [0, buckets).
    """
    hashed = pd.util.hash_array(np.asarray(values, dtype=object), hash_key=HASH_KEY, categorize=True)
    return (hashed % np.uint64(buckets)).astype(np.int64)


@dataclass
class InputQuality:
    """What the encoder had to map, per feature: rows with an out-of-vocabulary value (values, for multi-valued
    features) and rows with a missing value. Summed over chunks with ``add``; reported by predict, evaluate and the
    service.

    Attributes:
        rows: rows counted.
        out_of_vocabulary: feature -> count.
        missing: feature -> count.
        clipped: numeric feature -> values clipped to the training range (``clip: clip``).
    """

    rows: int = 0
    out_of_vocabulary: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)

    def add(self, other: InputQuality) -> None:
        """Add another chunk's counts in place."""
        self.rows += other.rows
        for mine, theirs in ((self.out_of_vocabulary, other.out_of_vocabulary), (self.missing, other.missing),
                             (self.clipped, other.clipped)):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + int(count)

    def to_dict(self, nonzero: bool = False) -> dict[str, Any]:
        """{"rows", "out_of_vocabulary", "missing", "clipped"}; with ``nonzero`` only features with a count."""
        pick = (lambda d: {k: v for k, v in d.items() if v}) if nonzero else dict
        return {"rows": self.rows, "out_of_vocabulary": pick(self.out_of_vocabulary), "missing": pick(self.missing),
                "clipped": pick(self.clipped)}


@dataclass
class EncodedFeatures:
    """Encoded features of N rows plus what the encoder had to map.

    Attributes:
        cat_ids: (N, F) int64.
        multi_ids: (N, M, L) int64, 0 = padding.
        dense: (N, N_dense) float32, finite.
        oov_counts: feature -> rows (or values, for multi-valued) mapped to OOV.
        missing_counts: feature -> rows with a missing value.
        clipped_counts: numeric feature -> values clipped to the training range.
        missing_rows: feature -> (N,) bool, the rows whose value is missing (features with any missing value).
    """

    cat_ids: np.ndarray
    multi_ids: np.ndarray
    dense: np.ndarray
    oov_counts: dict[str, int] = field(default_factory=dict)
    missing_counts: dict[str, int] = field(default_factory=dict)
    clipped_counts: dict[str, int] = field(default_factory=dict)
    missing_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cat_ids.shape[0])

    @property
    def quality(self) -> InputQuality:
        return InputQuality(len(self), dict(self.oov_counts), dict(self.missing_counts), dict(self.clipped_counts))


# ---------------------------------------------------------------------------------------------------- value helpers
def _split_multi(col: pd.Series | np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explode a multi-valued column: (row index, position in row, value string), positions < max_len.

    A cell is a separator-joined string or a list of values (a JSON list, a Parquet list column); values are
    normalised as categorical values are (``category_value``: stripped, "3.0" -> "3", missing tokens dropped) and
    blank values dropped, so "a||b", ["a", "", "b"] and "a|b" hold the same two values. A column of hashable cells
    is split once per distinct cell; a training frame, a Parquet batch and a service request give the same values.
    """
    if isinstance(col, pd.Series):
        try:
            codes, uniques = pd.factorize(col, use_na_sentinel=True)  # (N,), (U,)
        except TypeError:  # unhashable cells (lists): cell by cell
            return _split_multi(col.to_numpy(dtype=object), spec)
        u_rows, u_pos, u_vals = _split_multi(np.asarray(uniques, dtype=object), spec)
        row_ids, src = _expand_distinct(codes, u_rows, len(uniques))
        return row_ids, u_pos[src], u_vals[src]
    sep, max_len = spec.separator, spec.max_len
    kept: list[Sequence[str]] = []  # per cell: its non-blank values, the first max_len
    for i, cell in enumerate(col):
        if type(cell) is str:
            items: Sequence[str] = multi_values(cell, sep)  # memoised, blanks already dropped
        else:
            if isinstance(cell, (list, tuple, np.ndarray)):
                try:
                    items = category_values(cell)
                except TypeError as err:
                    raise ValueError(f"multi-valued feature '{spec.name}', row {i}: nested value ({err})") from None
            else:
                try:
                    text = category_value(cell)
                except TypeError as err:  # a dict or set cell
                    raise ValueError(f"multi-valued feature '{spec.name}', row {i}: got a {type(cell).__name__} "
                                     f"({err}); expected a list of values or '{sep}'-separated text") from None
                items = category_values(text.split(sep)) if sep in text else ([text] if text else [])
            items = [v for v in items if v]
        kept.append(items[:max_len])
    rows, pos = _ragged(kept)
    vals = np.empty(len(rows), dtype=object)
    vals[:] = list(itertools.chain.from_iterable(kept))
    return rows, pos, vals


def _ragged(cells: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(row index (V,), position in row (V,)) of the V values of N variable-length cells, in cell order."""
    counts = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))  # (N,)
    rows = np.repeat(np.arange(len(cells), dtype=np.int64), counts)  # (V,)
    pos = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)  # (V,)
    return rows, pos


def _expand_distinct(codes: np.ndarray, u_rows: np.ndarray, num_unique: int) -> tuple[np.ndarray, np.ndarray]:
    """From the values of U distinct cells (``u_rows`` (V_u,): the distinct cell of each value, ascending) to the N
    rows whose cell codes are ``codes`` (N,) (-1 = missing): (row index (V,), index into the distinct values (V,))."""
    if num_unique == 0:  # every cell missing (e.g. an all-empty column read as all-NaN floats)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    per_unique = np.bincount(u_rows, minlength=num_unique)  # (U,) values kept per distinct cell
    offsets = np.r_[0, np.cumsum(per_unique)[:-1]].astype(np.int64)  # (U,)
    present = codes >= 0
    counts = np.where(present, per_unique[np.where(present, codes, 0)], 0)  # (N,)
    row_ids = np.repeat(np.arange(len(codes)), counts)  # (V,)
    within = np.arange(len(row_ids)) - np.repeat(np.cumsum(counts) - counts, counts)  # (V,) 0.. per row
    return row_ids, np.repeat(offsets[np.where(present, codes, 0)], counts) + within


def _repeats(col: pd.Series | np.ndarray) -> bool:
    """Whether a column is a typed pandas column (not Python objects) long enough that encoding its distinct values
    once, then taking by row, beats value-by-value work (a Parquet log: strings, categories, integers)."""
    return isinstance(col, pd.Series) and len(col) > _SMALL and col.dtype != object


def _transform_raw(log: bool | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Numeric values before standardisation: NaN for missing / non-finite, then ``log`` = sign(x)·log1p(|x|).

    ``log``: whether the feature's transform is ``log``: one flag for a column, or (K,) flags for (N, K) columns.
    """
    x = np.where(np.isfinite(x), x, np.nan)
    if np.any(log):
        return np.where(log, np.sign(x) * np.log1p(np.abs(x)), x)
    return x


@dataclass(frozen=True)
class _NumericPlan:
    """Per-feature constants of the numeric columns as (K,) arrays, so a chunk's K columns are guarded, transformed
    and standardised at once (``FeatureEncoder.transform``)."""

    modes: tuple[str, ...]  # (K,) the range rule each was built for
    lo: np.ndarray  # (K,) training minimum (-inf where the guard is off)
    hi: np.ndarray  # (K,) training maximum (+inf where the guard is off)
    unbounded: np.ndarray  # (K,) bool: guarded but no training value, so every present value is out of range
    error: np.ndarray  # (K,) bool: ``clip: error``
    log: np.ndarray  # (K,) bool: ``transform: log``
    fill: np.ndarray  # (K,) imputed value (transformed scale)
    mean: np.ndarray  # (K,)
    std: np.ndarray  # (K,)
    value_cols: np.ndarray  # (K,) column of each feature in the dense block
    indicator_cols: np.ndarray  # (I,) columns of the missing indicators
    indicator_of: np.ndarray  # (I,) the feature (0..K-1) of each indicator


def _check_missing_policy(spec: FeatureSpec, n_missing: int, source: str) -> None:
    """Raise when a ``missing: error`` feature has missing values (a multi-valued cell with no values, e.g. only
    separators, counts as missing)."""
    if spec.missing == "error" and n_missing:
        raise ValueError(
            f"{source}: feature '{spec.name}' has {n_missing} missing values (NaN/empty) and its schema says "
            f"missing: error"
        )


def _check_columns(features: list[FeatureSpec], rows: Rows, source: str, timestamp: str | None = None) -> None:
    present = set(columns_of(rows)) if isinstance(rows, pd.DataFrame) else rows  # a mapping: its keys
    needed = [name for f in features for name in f.source_columns]
    if timestamp and any(f.timed for f in features) and isinstance(rows, pd.DataFrame):
        needed.append(timestamp)  # a request ({column: values}) without it is stamped with the time it is scored
    missing = [name for name in dict.fromkeys(needed) if name and name not in present]
    if missing:
        raise ValueError(f"{source}: missing feature column(s) {missing}; columns present: {columns_of(rows)}")


def _derived_columns(features: list[FeatureSpec], schema: SchemaConfig, rows: Rows, source: str,
                     seeds: dict[str, dict[str, int]] | None) -> dict[str, pd.Series | np.ndarray]:
    """Values of the derived features (``camoe.data.derived``); ``seeds`` = rows per key before these rows (None
    for the training rows themselves, which count among themselves only)."""
    specs = [f for f in features if f.derive is not None]
    out: dict[str, pd.Series | np.ndarray] = {}
    for spec in specs:
        if spec.derive == "match":
            assert spec.key is not None and spec.within is not None
            keys, cells = key_strings(rows, spec.key, source), column(rows, spec.within)
            if len(cells) <= _SMALL and isinstance(cells, np.ndarray) and all(type(c) is str for c in cells):
                # a request's text cells: the memoised split of each cell, no explode (the same values as below)
                sep = spec.separator
                out[spec.name] = np.array([("1" if k in multi_values(c, sep) else "0") if k else ""
                                           for k, c in zip(keys.tolist(), cells.tolist())], dtype=object)
                continue
            within = spec.model_copy(update={"name": spec.within, "max_len": 1 << 62})
            row_ids, _, values = _split_multi(cells, within)
            out[spec.name] = value_matches(keys, row_ids, values)  # (N,) object
    specs = [f for f in specs if f.timed]
    if not specs:
        return out
    assert schema.timestamp is not None
    seconds = timestamps_in_seconds(rows, schema.timestamp, schema.timestamp_unit, source)
    hour, weekday = time_parts(seconds)
    for spec in specs:
        if spec.derive == "hour":
            out[spec.name] = pd.Series(hour)
        elif spec.derive == "day_of_week":
            out[spec.name] = pd.Series(weekday)
        else:
            assert spec.key is not None
            keys = key_strings(rows, spec.key, source)
            seed = None if seeds is None else seeds.get(spec.name, {})
            out[spec.name] = pd.Series(prior_counts(keys, seconds, seed).astype(np.float64))
    return out


# ---------------------------------------------------------------------------------------------------- fitting
_MANTISSA = 26  # split of a 53-bit integer mantissa into hi / lo halves whose products fit in int64 sums
_MASK_26, _MASK_27 = (1 << 26) - 1, (1 << 27) - 1


def _split27(values: np.ndarray, starts: np.ndarray) -> list[int]:
    """Exact per-group sums of int64 values |v| < 2^55 (groups start at ``starts``): Σ(v >> 27)·2^27 + Σ(v & mask)."""
    high = np.add.reduceat(values >> 27, starts)
    low = np.add.reduceat(values & _MASK_27, starts)
    return [(int(h) << 27) + int(lo) for h, lo in zip(high, low)]


def _to_float(value: Fraction) -> float:
    """Correctly rounded float of an exact value; +-inf beyond the float64 range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


class _ExactMoments:
    """Count, min, max and the exact sums Σx and Σx² of finite float64 values.

    The sums are Python integers in units of 2^-1126 (Σx) and 2^-2252 (Σx²), accumulated without rounding, so the
    mean and standard deviation computed from them are the same for any order or chunking of the values: an
    encoder fitted on a frame in memory and one fitted record batch by record batch hold identical statistics.

    Each x = m · 2^s · 2^-1126 with m the 53-bit integer mantissa (``np.frexp``) and s >= 0; values are grouped by s
    and the mantissas (and their squares, split into 26/27-bit halves) are summed in int64 without overflow.
    """

    def __init__(self) -> None:
        self.n = 0
        self.sum = 0
        self.sum_sq = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        self.n += len(x)
        self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))
        frac, exp = np.frexp(x)
        mant = np.ldexp(frac, 53).astype(np.int64)  # exact: x = mant · 2^(exp - 53), |mant| < 2^53
        shift = (exp + 1073).astype(np.int16)  # >= 0 for every finite float64
        order = np.argsort(shift, kind="stable")  # radix sort on int16
        shift, mant = shift[order], mant[order]
        starts = np.flatnonzero(np.r_[True, shift[1:] != shift[:-1]])
        hi, lo = mant >> _MANTISSA, mant & _MASK_26  # mant = hi·2^26 + lo, |hi| <= 2^27, 0 <= lo < 2^26
        sum_hi, sum_lo = np.add.reduceat(hi, starts), np.add.reduceat(lo, starts)
        sq_hh, sq_hl, sq_ll = _split27(hi * hi, starts), _split27(hi * lo, starts), _split27(lo * lo, starts)
        for g, s in enumerate(shift[starts].tolist()):
            self.sum += ((int(sum_hi[g]) << _MANTISSA) + int(sum_lo[g])) << s
            square = (sq_hh[g] << (2 * _MANTISSA)) + (sq_hl[g] << (_MANTISSA + 1)) + sq_ll[g]  # Σ mant²
            self.sum_sq += square << (2 * s)

    def add_range(self, x: np.ndarray) -> None:
        """Count, min and max only (no sums)."""
        if len(x):
            self.n += len(x)
            self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))

    def mean(self) -> float:
        return _to_float(Fraction(self.sum, self.n << 1126)) if self.n else 0.0

    def std(self) -> float:
        """Population standard deviation (1.0 for fewer than 2 values or a constant column)."""
        if self.n < 2:
            return 1.0
        variance = Fraction(self.sum_sq * self.n - self.sum * self.sum, (self.n * self.n) << 2252)
        std = math.sqrt(_to_float(variance))
        return std if std > 1e-12 else 1.0


QUANTILES = (0.001, 0.01, 0.5, 0.99, 0.999)  # recorded per numeric feature (robust range, drift monitoring)
_SKETCH_SHIFT = 40  # float64 keys keep the sign, exponent and 12 mantissa bits: relative precision 2^-12


def _sortable(x: np.ndarray) -> np.ndarray:
    """int64 keys ordered like the float64 values (negative values' magnitude bits flipped)."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.int64)
    return bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


def _unsortable(keys: np.ndarray) -> np.ndarray:
    return (keys ^ ((keys >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))).view(np.float64)


class _QuantileSketch:
    """Counts of finite values per float bucket (sign, exponent, 12 mantissa bits): exact counts, so the quantiles
    do not depend on the chunking; memory follows the distinct buckets (at most ~16M, usually a few thousand)."""

    def __init__(self) -> None:
        self.counts: pd.Series | None = None

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        buckets, counts = np.unique(_sortable(x) >> _SKETCH_SHIFT, return_counts=True)
        part = pd.Series(counts, index=buckets)
        self.counts = part if self.counts is None else self.counts.add(part, fill_value=0).astype(np.int64)

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """Lower edge of the bucket holding each quantile (NaN without values)."""
        if self.counts is None:
            return [float("nan")] * len(qs)
        counts = self.counts.sort_index()
        cum = np.cumsum(counts.to_numpy())
        index = np.minimum(np.searchsorted(cum, np.array(qs) * cum[-1], side="left"), len(cum) - 1)
        return _unsortable(counts.index.to_numpy()[index] << _SKETCH_SHIFT).tolist()


class EncoderFit:
    """The one way an encoder is fitted: statistics accumulated chunk by chunk over the training rows.

    ``FeatureEncoder.fit`` feeds it one frame; a streamed fit feeds it record batch after record batch. Counts and
    exact moment sums do not depend on how the rows are chunked, so both give the same encoder state.

    Args:
        schema: the features to fit.
        max_distinct_values: refuse a ``vocab`` feature with more distinct values than this (use ``hash``); None =
            no limit.

    Example:
        >>> schema = SchemaConfig(features=[{"name": "device", "type": "categorical"},
        ...                                 {"name": "bid", "type": "numeric"}])
        >>> fit = EncoderFit(schema)
        >>> fit.add(pd.DataFrame({"device": ["ios", "web"], "bid": [1.0, 2.0]}))
        >>> fit.add(pd.DataFrame({"device": ["ios"], "bid": [3.0]}))
        >>> enc = fit.encoder()
        >>> enc.vocab_["device"], enc.mean_["bid"]
        (['ios', 'web'], 2.0)
    """

    def __init__(self, schema: SchemaConfig, max_distinct_values: int | None = None) -> None:
        self.schema = schema
        self.features = list(schema.features)
        self.max_distinct_values = max_distinct_values
        self.rows = 0
        self.counts_: dict[str, pd.Series] = {}
        self.moments_: dict[str, _ExactMoments] = {f.name: _ExactMoments() for f in self.features
                                                     if f.type == "numeric"}  # transformed values
        self.raw_: dict[str, _ExactMoments] = {f.name: _ExactMoments() for f in self.features if f.type == "numeric"}
        self.sketch_: dict[str, _QuantileSketch] = {f.name: _QuantileSketch() for f in self.features
                                                    if f.type == "numeric"}  # raw values
        self.key_totals_: dict[str, pd.Series] = {}  # derive: count -> training rows per key

    def add(self, rows: Rows, source: str = "train") -> None:
        """Count one chunk of training rows.

        Raises:
            ValueError: a feature column is missing, a numeric column holds text, a feature with ``missing: error``
                has missing values, or a vocab feature exceeds ``max_distinct_values``.
        """
        _check_columns(self.features, rows, source, self.schema.timestamp)
        counted = [f.name for f in self.features if f.derive == "count"]
        if counted and self.rows:
            raise ValueError(f"{source}: features {counted} (derive: count) count rows in time order, which needs the "
                             f"training rows in memory as one frame: set data.streaming.enabled: false")
        n = num_rows(rows)
        self.rows += n
        derived = _derived_columns(self.features, self.schema, rows, source, None)
        for spec in self.features:
            if spec.derive == "count":
                assert spec.key is not None
                keys = key_strings(rows, spec.key, source)
                self.key_totals_[spec.name] = pd.Series(keys[keys != ""], dtype=object).value_counts(sort=False)
            col = derived[spec.name] if spec.name in derived else column(rows, spec.name)
            if spec.type == "numeric":
                raw = numeric_values(col, spec.name, source)
                x = _transform_raw(spec.transform == "log", raw)
                finite = np.isfinite(x)
                _check_missing_policy(spec, int((~finite).sum()), source)
                self.moments_[spec.name].add(x[finite])
                present = raw[np.isfinite(raw)]
                self.raw_[spec.name].add_range(present)
                self.sketch_[spec.name].add(present)
            elif spec.encoding == "vocab":
                if spec.type == "multi_categorical":
                    row_ids, _, vals = _split_multi(col, spec)
                    _check_missing_policy(spec, n - len(np.unique(row_ids)), source)
                else:
                    strs, missing = categorical_strings(col, spec.name, source)
                    _check_missing_policy(spec, int(missing.sum()), source)
                    vals = strs[~missing]
                counts = pd.Series(vals, dtype=object).value_counts(sort=False)
                seen = self.counts_.get(spec.name)
                self.counts_[spec.name] = counts if seen is None else seen.add(counts, fill_value=0).astype(np.int64)
                if self.max_distinct_values is not None and len(self.counts_[spec.name]) > self.max_distinct_values:
                    raise ValueError(
                        f"{source}: feature '{spec.name}' has more than {self.max_distinct_values:,} distinct values "
                        f"(data.streaming.max_distinct_values); use encoding: hash with hash_buckets for it, or raise "
                        f"the limit"
                    )
            else:  # hash / identity: nothing to count, but the missing policy holds
                if spec.type == "categorical":
                    _check_missing_policy(spec, int(categorical_strings(col, spec.name, source)[1].sum()), source)

    def encoder(self, source: str = "train") -> FeatureEncoder:
        """The fitted ``FeatureEncoder``.

        Vocabularies keep values seen >= ``min_count`` times (at most ``max_vocab``), most frequent first, ties by
        value; numeric mean / std are those of the transformed finite values.

        Raises:
            ValueError: no rows, or numeric statistics that overflow float64.
        """
        if self.rows == 0:
            raise ValueError(f"{source}: no rows to fit the encoder on")
        enc = FeatureEncoder(self.schema)
        enc.prior_counts_ = {name: {str(k): int(v) for k, v in totals.items()} for name, totals in self.key_totals_.items()}
        for spec in self.features:
            if spec.type == "numeric":
                m = self.moments_[spec.name]
                mean, std = m.mean(), m.std()
                if not (math.isfinite(mean) and math.isfinite(std)):
                    raise ValueError(f"{source}: numeric feature '{spec.name}' reaches |x| = "
                                     f"{max(abs(m.min), abs(m.max)):.3g}; its mean / std overflow float64. Use "
                                     f"transform: log, or fix the values")
                enc.mean_[spec.name], enc.std_[spec.name] = mean, std
                raw = self.raw_[spec.name]
                enc.range_[spec.name] = {
                    "min": raw.min if raw.n else None, "max": raw.max if raw.n else None,
                    "quantiles": dict(zip([str(q) for q in QUANTILES], self.sketch_[spec.name].quantiles(QUANTILES))),
                }
                enc.fill_[spec.name] = (float(_transform_raw(spec.transform == "log", np.array([spec.fill_value]))[0])
                                        if spec.fill_value is not None else mean)
                if not raw.n:
                    warnings.warn(f"{source}: numeric feature '{spec.name}' has no value in the training rows: it is "
                                  f"imputed in every row, and values met when scoring (no training range bounds "
                                  f"them) are imputed too and counted as clipped")
                largest = max(abs(m.min), abs(m.max)) if m.n else 0.0
                if spec.transform == "none" and largest > 1e3:
                    warnings.warn(
                        f"numeric feature '{spec.name}' is not scaled (transform: none) and reaches |x| = "
                        f"{largest:.3g}; large inputs saturate the network. Use transform: standard or log.",
                        stacklevel=2,
                    )
            elif spec.encoding == "vocab":
                counts = self.counts_.get(spec.name, pd.Series(dtype=np.int64))
                kept = counts[counts >= spec.min_count]
                order = sorted(kept.items(), key=lambda kv: (-kv[1], str(kv[0])))
                if spec.max_vocab is not None:
                    order = order[: spec.max_vocab]
                enc.vocab_[spec.name] = [str(v) for v, _ in order]
        enc.input_spec_ = enc.build_input_spec()
        return enc


# ---------------------------------------------------------------------------------------------------- encoder
class FeatureEncoder:
    """Fits vocabularies and numeric statistics on training rows; encodes any rows the same way.

    Args:
        schema: the features to encode (``SchemaConfig.features``).

    Fitted attributes (after ``fit``): ``vocab_`` (feature -> list of values, id = position + 2),
    ``mean_`` / ``std_`` / ``fill_`` (numeric feature -> float, in transformed units), ``range_`` (numeric feature ->
    training ``min`` / ``max`` and ``quantiles`` of the raw values), ``input_spec_``.
    """

    def __init__(self, schema: SchemaConfig) -> None:
        self.schema = schema
        self.features: list[FeatureSpec] = list(schema.features)
        self.vocab_: dict[str, list[str]] = {}
        self.mean_: dict[str, float] = {}
        self.std_: dict[str, float] = {}
        self.fill_: dict[str, float] = {}
        self.range_: dict[str, dict[str, Any]] = {}  # numeric feature -> raw training min, max, quantiles
        self.prior_counts_: dict[str, dict[str, int]] = {}  # derive: count feature -> training rows per key
        self.input_spec_: InputSpec | None = None
        self._index_cache: dict[str, pd.Index] = {}  # feature -> vocabulary index, built on first transform
        self._id_cache: dict[str, dict[str, int]] = {}  # feature -> {value: id}, for small inputs
        self._raw_ids: dict[str, dict[Any, int]] = {}  # feature -> {raw request value: id} (``_small_ids``)
        self._raw_cells: dict[str, dict[str, tuple[int, ...]]] = {}  # multi-valued feature -> {cell text: ids}
        self._numeric_plan: _NumericPlan | None = None  # built from the fitted state on first transform

    @property
    def cat_specs(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.type == "categorical"]

    @property
    def multi_specs(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.type == "multi_categorical"]

    @property
    def numeric_specs(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.type == "numeric"]

    def _cardinality(self, spec: FeatureSpec) -> int:
        if spec.encoding == "hash":
            assert spec.hash_buckets is not None
            return spec.hash_buckets + NUM_RESERVED
        if spec.encoding == "identity":
            assert spec.num_ids is not None
            return spec.num_ids + NUM_RESERVED
        return len(self.vocab_[spec.name]) + NUM_RESERVED

    def check_columns(self, rows: Rows, source: str) -> None:
        """Raise naming every feature column absent from ``rows`` (columns are matched by name only; a derived
        feature needs the columns it is derived from)."""
        _check_columns(self.features, rows, source, self.schema.timestamp)

    def fit(self, rows: Rows, source: str = "train") -> FeatureEncoder:
        """Fit vocabularies and statistics on training rows only (``EncoderFit`` with one chunk).

        Raises:
            ValueError: a feature column is missing, a numeric column holds text, or a feature with
                ``missing: error`` has missing values.
        """
        if num_rows(rows) == 0:
            _check_columns(self.features, rows, source, self.schema.timestamp)
            raise ValueError(f"{source}: no rows to fit the encoder on")
        fit = EncoderFit(self.schema)
        fit.add(rows, source)
        fitted = fit.encoder(source)
        self.vocab_, self.mean_, self.std_, self.fill_ = fitted.vocab_, fitted.mean_, fitted.std_, fitted.fill_
        self.range_, self.prior_counts_ = fitted.range_, fitted.prior_counts_
        self.input_spec_ = fitted.input_spec_
        self._index_cache, self._id_cache, self._raw_ids, self._raw_cells = {}, {}, {}, {}
        self._numeric_plan = None
        return self

    def build_input_spec(self) -> InputSpec:
        """Column order and table sizes of the encoded inputs, from the fitted vocabularies and the schema."""
        dense_names: list[str] = []
        for spec in self.numeric_specs:
            dense_names.append(spec.name)
            if spec.missing_indicator:
                dense_names.append(f"{spec.name}_missing")
        return InputSpec(
            cat_features=tuple(f.name for f in self.cat_specs),
            cat_cardinalities=tuple(self._cardinality(f) for f in self.cat_specs),
            multi_features=tuple(f.name for f in self.multi_specs),
            multi_cardinalities=tuple(self._cardinality(f) for f in self.multi_specs),
            max_len=max((f.max_len for f in self.multi_specs), default=1),
            dense_features=tuple(dense_names),
            multi_pooling=tuple(f.pooling for f in self.multi_specs),
        )

    # ------------------------------------------------------------------ transform
    def _require_fitted(self) -> InputSpec:
        if self.input_spec_ is None:
            raise RuntimeError("FeatureEncoder is not fitted: call fit() on the training rows first")
        return self.input_spec_

    def _encode_strings(self, spec: FeatureSpec, strs: np.ndarray) -> np.ndarray:
        """Non-missing value strings -> ids >= 1 (1 = OOV)."""
        if spec.encoding == "hash":
            assert spec.hash_buckets is not None
            return stable_hash(strs, spec.hash_buckets) + NUM_RESERVED
        if len(strs) <= _SMALL:  # a scoring request: a dict lookup per value beats building a pandas Index
            ids = self._id_cache.get(spec.name)
            if ids is None:
                ids = self._id_cache[spec.name] = {v: i + NUM_RESERVED for i, v in enumerate(self.vocab_[spec.name])}
            return np.array([ids.get(v, OOV_ID) for v in strs], dtype=np.int64).reshape(len(strs))
        index = self._index_cache.get(spec.name)
        if index is None:  # built once per fitted state: its hash table costs O(vocabulary) to build
            index = self._index_cache[spec.name] = pd.Index(self.vocab_[spec.name], dtype=object)
        codes = index.get_indexer(pd.Index(np.asarray(strs, dtype=object), dtype=object))
        return np.where(codes < 0, OOV_ID, codes + NUM_RESERVED)

    def _small_ids(self, spec: FeatureSpec, values: list[Any], source: str) -> list[int]:
        """Ids of a short list of raw values (a scoring request) through a per-feature memo raw value -> id, so a
        value seen before costs one dict lookup; the same rules as the vectorised path (``category_value``, then
        the vocabulary or the hash). Keys are ``memoisable`` values only, and a value is looked up only when its type
        is str / int / float / bool (JSON's), so a hit is exact; other types (numpy scalars, ``Decimal``) take the
        rule every time."""
        memo = self._raw_ids.setdefault(spec.name, {})
        if _MEMO_TYPES.issuperset(map(type, values)):  # JSON values: one C-level lookup each
            ids = list(map(memo.get, values))
        else:
            ids = [memo.get(v) if type(v) in _MEMO_TYPES else None for v in values]
        if None in ids:
            for i, v in enumerate(values):
                if ids[i] is not None:
                    continue
                try:
                    text = category_value(v)
                except TypeError as err:
                    raise ValueError(f"{source}: feature '{spec.name}': {err}") from None
                got = MISSING_ID if not text else int(self._encode_strings(spec, np.array([text], dtype=object))[0])
                ids[i] = got
                if memoisable(v):
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    memo[v] = got
        return ids

    def _factorized_ids(self, spec: FeatureSpec, col: pd.Series, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(N,) ids and (N,) missing mask of a typed column, through its distinct values: the categorical rule and
        the vocabulary lookup run once per distinct value (``categorical_strings`` is value by value, so the result
        is the row-by-row one)."""
        codes, uniques = pd.factorize(col, use_na_sentinel=True)  # (N,) -1 = NA; (U,) distinct values
        strs_u, missing_u = categorical_strings(pd.Series(uniques, dtype=col.dtype), spec.name, source)
        ids_u = np.full(len(strs_u), MISSING_ID, dtype=np.int64)
        if (~missing_u).any():
            ids_u[~missing_u] = self._encode_strings(spec, strs_u[~missing_u])
        ids = np.r_[ids_u, MISSING_ID][codes]  # code -1 -> the appended MISSING_ID
        return ids, ids == MISSING_ID

    def _multi_ids(self, spec: FeatureSpec, col: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row index, position in row, id) of every kept value of a multi-valued column (``_split_multi``); a
        typed column with repeated cells is split and looked up once per distinct cell."""
        if isinstance(col, np.ndarray) and len(col) <= _SMALL:  # a scoring request: through the per-cell memo
            return self._small_multi_ids(spec, col)
        if not _repeats(col):
            row_ids, pos, vals = _split_multi(col, spec)
            return row_ids, pos, self._encode_strings(spec, vals) if len(vals) else np.zeros(0, dtype=np.int64)
        assert isinstance(col, pd.Series)
        codes, uniques = pd.factorize(col, use_na_sentinel=True)  # (N,), (U,)
        u_rows, u_pos, u_vals = _split_multi(np.asarray(uniques, dtype=object), spec)
        u_ids = self._encode_strings(spec, u_vals) if len(u_vals) else np.zeros(0, dtype=np.int64)
        row_ids, src = _expand_distinct(codes, u_rows, len(uniques))  # (V,), (V,) into the distinct values
        return row_ids, u_pos[src], u_ids[src]

    def _small_multi_ids(self, spec: FeatureSpec, col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``_multi_ids`` of a short object column (a scoring request) through a per-feature memo cell text -> kept
        ids, so a cell seen before (a request's shared context) costs one dict lookup; other cells take
        ``_split_multi``."""
        memo = self._raw_cells.setdefault(spec.name, {})
        cells = col.tolist()
        try:
            per_cell = list(map(memo.get, cells))
        except TypeError:  # list cells (JSON lists) are unhashable: the full rule
            per_cell = [None] * len(cells)
        if None in per_cell:
            todo = [i for i, ids in enumerate(per_cell) if ids is None]
            pending = column({spec.name: [cells[i] for i in todo]}, spec.name)  # (M,) object: list cells stay cells
            try:
                rows, _, vals = _split_multi(pending, spec)
            except ValueError:
                _split_multi(col, spec)  # the whole column, so that the error names the request's row
                raise
            ids = self._encode_strings(spec, vals).tolist() if len(vals) else []
            bounds = np.searchsorted(rows, np.arange(len(todo) + 1)).tolist()
            for k, i in enumerate(todo):
                per_cell[i] = got = tuple(ids[bounds[k]:bounds[k + 1]])
                if type(cells[i]) is str and memoisable(cells[i]):
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    memo[cells[i]] = got
        row_ids, pos = _ragged(per_cell)
        return row_ids, pos, np.fromiter(itertools.chain.from_iterable(per_cell), dtype=np.int64, count=len(row_ids))

    def _encode_identity(
        self, spec: FeatureSpec, col: pd.Series | np.ndarray, missing: np.ndarray, source: str
    ) -> np.ndarray:
        assert spec.num_ids is not None
        raw = numeric_values(col, spec.name, source)
        ids = np.full(len(col), MISSING_ID, dtype=np.int64)
        present = ~missing
        vals = raw[present]
        if not np.all(vals == np.round(vals)):
            bad = vals[vals != np.round(vals)][:5].tolist()
            raise ValueError(f"{source}: pre-encoded id feature '{spec.name}' holds non-integer ids {bad}")
        out_of_range = (vals < 0) | (vals >= spec.num_ids)  # checked on floats: no int64 overflow
        if out_of_range.any() and spec.out_of_range == "error":
            bad = [int(v) if abs(v) < 2**62 else v for v in np.unique(vals[out_of_range])[:5].tolist()]
            raise ValueError(
                f"{source}: feature '{spec.name}' has ids {bad} outside the table [0, {spec.num_ids}) "
                f"in {int(out_of_range.sum())} rows (table size {spec.num_ids}); fix the ids, raise num_ids, or set "
                f"out_of_range: oov to map them to the OOV id and count them"
            )
        ids[present] = np.where(out_of_range, OOV_ID, np.where(out_of_range, 0, vals).astype(np.int64) + NUM_RESERVED)
        return ids

    def transform(self, rows: Rows, source: str = "data", history: bool = True) -> EncodedFeatures:
        """Encode rows with the fitted state.

        Args:
            rows: raw rows holding every feature column (extra columns are ignored): a DataFrame, or a mapping
                {column: sequence of N Python values} (the scoring service's form; no DataFrame is built). Both
                follow the same value rules, so a row scores the same from a file or from a JSON request.
            source: file or split name used in errors.
            history: derived count features add the training rows of each key (``prior_counts_``); False for the
                training rows themselves, which count among themselves only.

        Returns:
            ``EncodedFeatures`` with (N, F) ids, (N, M, L) multi-valued ids and (N, N_dense) float32 values.

        Raises:
            ValueError: a feature column is missing, a numeric column holds text, an identity id is out of range
                (strict), or a ``missing: error`` feature has missing values.
            RuntimeError: the encoder is not fitted.
        """
        spec_in = self._require_fitted()
        self.check_columns(rows, source)
        n = num_rows(rows)
        derived = _derived_columns(self.features, self.schema, rows, source, self.prior_counts_ if history else None)
        cat = np.zeros((n, spec_in.num_cat), dtype=np.int64)
        multi = np.zeros((n, spec_in.num_multi, spec_in.max_len), dtype=np.int64)
        dense = np.zeros((n, spec_in.num_dense), dtype=np.float32)
        oov: dict[str, int] = {}
        missing_counts: dict[str, int] = {}
        missing_rows: dict[str, np.ndarray] = {}
        small_lists = not isinstance(rows, pd.DataFrame) and n <= _SMALL  # a scoring request's {column: list}
        listed: list[int] = []  # columns of ``cat`` looked up value by value (``_small_ids``), filled at once
        listed_ids: list[list[int]] = []
        for j, spec in enumerate(self.cat_specs):  # ids; MISSING_ID marks a missing value on every path
            # a request's values (derived ones too: hour, day of week, match) take the per-value memo
            values = (derived[spec.name].tolist() if spec.name in derived else rows[spec.name]) if small_lists else None
            if isinstance(values, list) and spec.encoding != "identity":
                listed.append(j)
                listed_ids.append(self._small_ids(spec, values, source))
                continue
            col = derived[spec.name] if spec.name in derived else column(rows, spec.name)
            if spec.encoding != "identity" and _repeats(col):
                cat[:, j] = self._factorized_ids(spec, col, source)[0]
            else:
                strs, missing = categorical_strings(col, spec.name, source)
                if spec.encoding == "identity":
                    cat[:, j] = self._encode_identity(spec, col, missing, source)
                else:
                    cat[~missing, j] = self._encode_strings(spec, strs[~missing])  # missing rows keep MISSING_ID
        if listed:
            cat[:, listed] = np.array(listed_ids, dtype=np.int64).reshape(len(listed), n).T
        cat_missing = cat == MISSING_ID  # (N, F)
        oov_per_feature, missing_per_feature = (cat == OOV_ID).sum(axis=0).tolist(), cat_missing.sum(axis=0).tolist()
        for j, spec in enumerate(self.cat_specs):
            _check_missing_policy(spec, missing_per_feature[j], source)
            oov[spec.name] = oov_per_feature[j]
            missing_counts[spec.name] = missing_per_feature[j]
            if missing_per_feature[j]:
                missing_rows[spec.name] = cat_missing[:, j]
        for j, spec in enumerate(self.multi_specs):
            row_ids, pos, ids = self._multi_ids(spec, column(rows, spec.name))
            has_value = np.zeros(n, dtype=bool)
            has_value[row_ids] = True
            n_missing = n - int(np.count_nonzero(has_value))
            _check_missing_policy(spec, n_missing, source)
            multi[row_ids, j, pos] = ids
            oov[spec.name] = int(np.count_nonzero(ids == OOV_ID))
            missing_counts[spec.name] = n_missing
            if n_missing:
                missing_rows[spec.name] = ~has_value
        numeric = self.numeric_specs
        raw = np.empty((n, len(numeric)))  # (N, K) float64, NaN = missing (``numeric_values`` refuses ±inf)
        as_lists = [k for k, spec in enumerate(numeric)
                    if small_lists and spec.name not in derived and isinstance(rows[spec.name], list)]
        if as_lists:  # a scoring request's lists: converted at once
            raw[:, as_lists] = numeric_block([rows[numeric[k].name] for k in as_lists],
                                             [numeric[k].name for k in as_lists], source)
        for k, spec in enumerate(numeric):
            if k not in as_lists:
                raw[:, k] = numeric_values(derived[spec.name] if spec.name in derived else column(rows, spec.name),
                                           spec.name, source)
        missing = ~np.isfinite(raw)  # (N, K)
        missing_per_feature = missing.sum(axis=0).tolist()
        for k, spec in enumerate(numeric):
            _check_missing_policy(spec, missing_per_feature[k], source)
            missing_counts[spec.name] = missing_per_feature[k]
            if missing_per_feature[k]:
                missing_rows[spec.name] = missing[:, k]
        plan = self._numeric_constants()
        raw, clipped_per_feature = self._guard_range(plan, raw, missing, source)
        clipped = {spec.name: clipped_per_feature[k] for k, spec in enumerate(numeric)}
        x = np.where(missing | np.isnan(raw), plan.fill, _transform_raw(plan.log, raw))  # (N, K)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is checked and named below
            dense[:, plan.value_cols] = (x - plan.mean) / plan.std
        dense[:, plan.indicator_cols] = missing[:, plan.indicator_of]
        if not np.isfinite(dense).all():  # e.g. a finite value whose standardised form overflows float32
            bad_col = spec_in.dense_features[int(np.flatnonzero(~np.isfinite(dense).all(axis=0))[0])]
            raise ValueError(f"{source}: numeric feature '{bad_col}' overflows float32 after scaling")
        return EncodedFeatures(cat, multi, dense, oov, missing_counts, clipped, missing_rows)

    def _numeric_constants(self) -> _NumericPlan:
        """The numeric features' guard and scaling constants as arrays (built once per fitted state and range rules:
        ``schema.clip`` may be changed on a fitted pipeline)."""
        specs = self.numeric_specs
        modes = tuple(spec.clip or self.schema.clip for spec in specs)
        if self._numeric_plan is not None and self._numeric_plan.modes == modes:
            return self._numeric_plan
        lo, hi, unbounded, error, log, value_cols, indicator_cols, indicator_of = [], [], [], [], [], [], [], []
        for k, (spec, mode) in enumerate(zip(specs, modes)):
            bounds = self.range_.get(spec.name)
            guarded = mode != "off" and bool(bounds)
            known = guarded and bounds.get("min") is not None
            lo.append(float(bounds["min"]) if known else -np.inf)
            hi.append(float(bounds["max"]) if known else np.inf)
            unbounded.append(guarded and not known)  # no training value at all: nothing bounds a value met now
            error.append(guarded and mode == "error")
            log.append(spec.transform == "log")
            value_cols.append(len(value_cols) + len(indicator_cols))
            if spec.missing_indicator:
                indicator_cols.append(value_cols[-1] + 1)
                indicator_of.append(k)
        names = [spec.name for spec in specs]
        self._numeric_plan = _NumericPlan(
            modes, np.array(lo), np.array(hi), np.array(unbounded, dtype=bool), np.array(error, dtype=bool),
            np.array(log, dtype=bool), np.array([self.fill_[n] for n in names]),
            np.array([self.mean_[n] for n in names]), np.array([self.std_[n] for n in names]),
            np.array(value_cols, dtype=np.int64), np.array(indicator_cols, dtype=np.int64),
            np.array(indicator_of, dtype=np.int64))
        return self._numeric_plan

    def _guard_range(self, plan: _NumericPlan, raw: np.ndarray, missing: np.ndarray, source: str
                     ) -> tuple[np.ndarray, list[int]]:
        """Apply each feature's range rule (``clip`` | ``error`` | ``off``) to the present values of (N, K) numeric
        columns (``numeric_specs`` order, constants in ``plan``); returns (values, clipped count per feature). A
        guarded feature without any training value turns every present value into NaN (imputed by the caller) and
        counts it.

        Raises:
            ValueError: ``clip: error`` and values outside the training range (names the feature, the range and
                examples).
        """
        outside = ~missing & ((raw < plan.lo) | (raw > plan.hi) | plan.unbounded)  # (N, K); NaN compares False
        counts = outside.sum(axis=0)  # (K,)
        if not counts.any():
            return raw, counts.tolist()
        for k in np.flatnonzero((counts > 0) & plan.error).tolist():
            spec, count = self.numeric_specs[k], int(counts[k])
            if plan.unbounded[k]:
                raise ValueError(f"{source}: numeric feature '{spec.name}' has {count} values but had none in the "
                                 f"training rows, so it has no training range; retrain with values, or set clip: clip")
            examples = np.unique(raw[outside[:, k], k])[:3].tolist()
            raise ValueError(f"{source}: numeric feature '{spec.name}' has {count} values outside its training range "
                             f"[{plan.lo[k]:.6g}, {plan.hi[k]:.6g}], e.g. {examples}; fix the values, or set "
                             f"clip: clip to clip and count them")
        guarded = np.where(plan.unbounded, np.nan, np.minimum(np.maximum(raw, plan.lo), plan.hi))  # (np.clip: slower)
        return np.where(outside, guarded, raw), counts.tolist()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: feature specs, vocabularies, numeric statistics, input layout."""
        spec_in = self._require_fitted()
        return {
            "hash": {"function": "pandas.util.hash_array", "key": HASH_KEY},
            "features": [f.model_dump(mode="json") for f in self.features],
            "vocab": self.vocab_,
            "mean": self.mean_,
            "std": self.std_,
            "fill": self.fill_,
            "range": self.range_,
            "prior_counts": self.prior_counts_,
            "input_spec": spec_in.to_dict(),
        }

    @classmethod
    def from_state(cls, schema: SchemaConfig, state: dict[str, Any]) -> FeatureEncoder:
        """Rebuild a fitted encoder; refuses a state whose features differ from ``schema``.

        Raises:
            ValueError: the saved features differ from the schema's (lists the changed features), or the table
                sizes recomputed from the vocabularies disagree with the saved input layout.
        """
        enc = cls(schema)
        saved = {f["name"]: FeatureSpec.model_validate(f).model_dump(mode="json") for f in state["features"]}
        current = {f.name: f.model_dump(mode="json") for f in schema.features}
        changed = sorted(n for n in set(saved) | set(current) if saved.get(n) != current.get(n))
        if changed:
            raise ValueError(f"encoder state does not match the schema: changed features {changed}")
        if state.get("hash", {}).get("key") != HASH_KEY:
            raise ValueError("encoder state was written with another hash key; hashed ids would differ")
        enc.vocab_ = {k: list(v) for k, v in state["vocab"].items()}
        enc.mean_ = {k: float(v) for k, v in state["mean"].items()}
        enc.std_ = {k: float(v) for k, v in state["std"].items()}
        enc.fill_ = {k: float(v) for k, v in state["fill"].items()}
        enc.range_ = {k: dict(v) for k, v in state.get("range", {}).items()}  # absent in artifacts before 0.2
        enc.prior_counts_ = {k: {str(a): int(b) for a, b in v.items()} for k, v in state.get("prior_counts", {}).items()}
        enc.input_spec_ = enc.build_input_spec()
        if enc.input_spec_.to_dict() != state["input_spec"]:
            raise ValueError(
                f"encoder state is inconsistent: table sizes from the vocabularies {enc.input_spec_.to_dict()} "
                f"differ from the saved layout {state['input_spec']}"
            )
        return enc


def extend_encoder(old: FeatureEncoder, new: FeatureEncoder, numeric: str = "keep") -> tuple[FeatureEncoder, dict[str, int]]:
    """The encoder of a warm start: ``old`` with its vocabularies extended by the values ``new`` (fitted on the new
    rows) knows and ``old`` does not. Known values keep their ids; new values get the next ids, most frequent first
    (``max_vocab`` still caps the table). Numeric statistics are ``old``'s (``numeric="keep"``: the model's input
    scale stays what its weights learned) or ``new``'s (``"update"``), with the training range widened to cover both.

    Returns:
        (the extended encoder, feature -> values added).

    Raises:
        ValueError: the two encoders describe different features, or ``numeric`` is not keep / update.
    """
    if numeric not in ("keep", "update"):
        raise ValueError(f"train.warm_start_numeric must be 'keep' or 'update', got '{numeric}'")
    old_names = [f.name for f in old.features]
    new_names = [f.name for f in new.features]
    if old_names != new_names or [f.model_dump() for f in old.features] != [f.model_dump() for f in new.features]:
        raise ValueError(f"warm start: the features of the config differ from the artifact's ({old_names} -> "
                         f"{new_names}, or their settings); a warm start keeps the feature set")
    out = FeatureEncoder(new.schema)
    added: dict[str, int] = {}
    for spec in out.features:
        if spec.name in old.vocab_:
            known = set(old.vocab_[spec.name])
            extra = [v for v in new.vocab_.get(spec.name, []) if v not in known]
            if spec.max_vocab is not None:
                extra = extra[: max(0, spec.max_vocab - len(old.vocab_[spec.name]))]
            out.vocab_[spec.name] = [*old.vocab_[spec.name], *extra]
            added[spec.name] = len(extra)
    source = old if numeric == "keep" else new
    out.mean_, out.std_, out.fill_ = dict(source.mean_), dict(source.std_), dict(source.fill_)
    for name in set(old.range_) | set(new.range_):
        a, b = old.range_.get(name, {}), new.range_.get(name, {})
        lows = [r["min"] for r in (a, b) if r.get("min") is not None]
        highs = [r["max"] for r in (a, b) if r.get("max") is not None]
        out.range_[name] = {"min": min(lows) if lows else None, "max": max(highs) if highs else None,
                            "quantiles": dict(b.get("quantiles") or a.get("quantiles") or {})}
    out.input_spec_ = out.build_input_spec()
    return out, added
