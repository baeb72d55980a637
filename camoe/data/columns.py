"""Column value rules: how one raw column of a DataFrame, a record batch or a JSON request becomes values.

Every path that reads rows (fitting, training, evaluation, batch scoring, the service, the split) uses these
functions, so a value means the same thing wherever it arrives. ``rows`` is a DataFrame or a mapping
{column: sequence of N values} (the service's form).

* categorical values (one rule for files and JSON): text is stripped; None / NaN / NA / blank text is missing;
  integral numbers print as integers, whatever their type (3, 3.0, "3.0" -> "3"; an integer column with gaps reads
  from CSV as floats); booleans are integers (True, "true", "TRUE" -> "1"; False -> "0");
* numeric values: float64; empty, NaN, None, null, NA, n/a (any case) are missing; ``inf``, text that is not a
  number, a list where one number is expected, or a number beyond float64 (``1e400``, which JSON and CSV parsers
  turn into inf) raise naming the column;
* labels: 0 or 1 only; ad formats: non-empty strings; timestamps: numbers, Arrow/pandas datetimes, or date strings
  (ISO 8601) as sortable integers.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FormatCounts",
    "Rows",
    "categorical_strings",
    "category_value",
    "category_values",
    "column",
    "multi_values",
    "columns_of",
    "format_names",
    "label_values",
    "num_rows",
    "numeric_values",
    "timestamp_values",
]

Rows = pd.DataFrame | Mapping[str, Sequence[Any]]

MISSING_TOKENS = ("nan", "none", "null", "na", "n/a")
_TRUE, _FALSE = ("true",), ("false",)
_INTEGRAL_TEXT = r"^([+-]?\d+)\.0+$"  # "3.0", "-12.000": an integer written as a float
CONTAINERS = (list, tuple, dict, set, np.ndarray)


def column(rows: Rows, name: str) -> pd.Series | np.ndarray:
    """Column ``name`` of a DataFrame or of a mapping {column: sequence of values}.

    Typed pandas columns stay Series (vectorised pandas / Arrow string kernels, fast on millions of rows); object
    columns and plain sequences (JSON values in the scoring service, list cells) become 1-D object arrays handled
    value by value with the same rules, which is fast on the few hundred rows of a scoring request.
    """
    col = rows[name]
    if isinstance(col, pd.Series):
        if col.dtype != object:
            return col
        col = col.to_numpy(dtype=object)
    if isinstance(col, np.ndarray) and col.dtype == object and col.ndim == 1:
        return col
    values = list(col)
    try:
        out = np.array(values, dtype=object)
        if out.shape == (len(values),):
            return out
    except ValueError:  # e.g. cells that are arrays of different shapes
        pass
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # element-wise: equal-length list cells must not become a 2-D array
        out[i] = v
    return out


def num_rows(rows: Rows) -> int:
    """Number of rows of a DataFrame or a {column: values} mapping."""
    if isinstance(rows, pd.DataFrame):
        return len(rows)
    return len(next(iter(rows.values()))) if len(rows) else 0


def columns_of(rows: Rows) -> list[str]:
    """Column names of a DataFrame or a {column: values} mapping."""
    return [str(c) for c in (rows.columns if isinstance(rows, pd.DataFrame) else rows.keys())]


def _text_value(text: str) -> str:
    """A stripped text cell under the categorical rule (booleans and integral floats written as text)."""
    text = text.strip()
    if not text or text[-1] not in "0eEuU":  # fast path: only "...0", "true" / "false" can change
        return text
    low = text.lower()
    if low in _TRUE:
        return "1"
    if low in _FALSE:
        return "0"
    match = re.match(_INTEGRAL_TEXT, text)
    return match.group(1).lstrip("+") if match else text


_SEEN: dict[Any, str] = {}  # normalised strings of recent scalar values (requests repeat devices, formats, ids)
_SEEN_MAX = 1 << 16
_MEMO_TYPES = frozenset({str, int, float})
MEMO_MAX_TEXT = 1024  # longer text is normalised every time: a memo entry must not hold a request-sized string
_EXACT = 2.0**53  # below this, an int and a float that compare equal normalise to the same string ("3" for 3 and 3.0)


def memoisable(v: Any) -> bool:
    """Whether a raw value's normalised result may be memoised under the value itself: text up to
    ``MEMO_MAX_TEXT`` characters, or an int / float / bool of magnitude below 2^53. Any other value that compares
    equal to such a key (e.g. 3.0 to 3, True to 1) normalises to the same string, so a memo hit is exact; beyond
    2^53 an int and a float can compare equal and print differently, and numpy scalars, ``Decimal`` or ``Fraction``
    are never keys (a memo lookup of them must check the type first)."""
    kind = type(v)
    if kind is str:
        return len(v) <= MEMO_MAX_TEXT
    return (kind is int or kind is float or kind is bool) and -_EXACT < v < _EXACT


def category_value(v: Any) -> str:
    """One raw categorical value -> its normalised string; "" means missing (None, NaN, NA, blank text).

    Results for hashable scalars are memoised (bounded), so the service's per-value path costs a dict lookup.

    Raises:
        TypeError: a list, dict or array where one value is expected.

    Example:
        >>> [category_value(v) for v in (" ios ", 3.0, "3.0", 2.5, None, float("nan"), True, "false")]
        ['ios', '3', '3', '2.5', '', '', '1', '0']
    """
    kind = type(v)
    if kind is str or kind is int or kind is float or kind is bool:
        hit = _SEEN.get(v) if kind is not bool else None  # True == 1 and 1.0 == 1 share one result; bool is cheap
        if hit is not None:
            return hit
        out = _text_value(v) if kind is str else _scalar_value(v)
        if memoisable(v):
            if len(_SEEN) >= _SEEN_MAX:
                _SEEN.clear()
            _SEEN[v] = out
        return out
    return _scalar_value(v)


def category_values(values: Iterable[Any]) -> list[str]:
    """``category_value`` of every value; a memoised value costs one dict lookup (the service's hot path).

    Raises:
        TypeError: a list, dict or array where one value is expected.
    """
    seen = _SEEN.get
    # "" (missing) is falsy, so it takes the full rule; only str / int / float are memoised (bool: True == 1)
    return [(type(v) in _MEMO_TYPES and seen(v)) or category_value(v) for v in values]


_SEEN_MULTI: dict[tuple[str, str], tuple[str, ...]] = {}  # recent multi-valued cells (a request's context repeats)


def multi_values(text: str, separator: str) -> tuple[str, ...]:
    """The values of one separator-joined multi-valued cell: each normalised as ``category_value``, blanks dropped
    ("a||b", " a|b " and "a|b" give ("a", "b")). Memoised (bounded): the service scores every candidate of a request
    with the same context cells."""
    key = (text, separator)
    hit = _SEEN_MULTI.get(key)
    if hit is not None:
        return hit
    whole = category_value(text)
    out = tuple(v for v in category_values(whole.split(separator)) if v) if separator in whole else (
        (whole,) if whole else ())
    if len(text) <= MEMO_MAX_TEXT:
        if len(_SEEN_MULTI) >= _SEEN_MAX:
            _SEEN_MULTI.clear()
        _SEEN_MULTI[key] = out
    return out


def _scalar_value(v: Any) -> str:
    if isinstance(v, str):
        return _text_value(v)
    if isinstance(v, CONTAINERS):
        raise TypeError(f"expected one value per row, got a {type(v).__name__}")
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not np.isfinite(f):
            return ""
        return str(int(f)) if f.is_integer() and abs(f) < 2**63 else str(f)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v).strip()


def categorical_strings(
    col: pd.Series | np.ndarray, name: str = "value", source: str = "data"
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised value strings and the missing mask of a categorical column (rules: ``category_value``).

    Returns:
        (N,) object array of strings ("" where missing), (N,) bool missing mask.

    Raises:
        ValueError: a list / dict / array where one value is expected (names ``name`` and ``source``).
    """
    if isinstance(col, np.ndarray):
        # text (the common case) is stripped inline; other values take the full rule
        try:
            strs = np.array(category_values(col), dtype=object)
        except TypeError as err:
            raise ValueError(f"{source}: feature '{name}': {err}") from None
        if not len(col):
            strs = np.zeros(0, dtype=object)
        return strs, strs == ""
    if pd.api.types.is_float_dtype(col.dtype):
        arr = col.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(arr)
        out = np.full(arr.shape, "", dtype=object)
        integral = finite & (arr == np.round(arr)) & (np.abs(arr) < 2**63)
        out[integral] = arr[integral].astype(np.int64).astype(str)
        other = finite & ~integral
        out[other] = [str(float(x)) for x in arr[other]]
        return out, ~finite
    if pd.api.types.is_bool_dtype(col.dtype):
        missing = col.isna().to_numpy()
        strs = np.where(col.fillna(False).to_numpy(dtype=bool), "1", "0").astype(object)
        strs[missing] = ""
        return strs, missing
    stripped = col.astype("string").str.strip()
    if not pd.api.types.is_integer_dtype(col.dtype):  # text: booleans and integral floats written as text
        low = stripped.str.lower()
        stripped = stripped.mask(low.isin(_TRUE), "1").mask(low.isin(_FALSE), "0")
        dotted = stripped.str.contains(".", regex=False).fillna(False)
        if dotted.any():
            stripped = stripped.mask(dotted, stripped[dotted].str.replace(_INTEGRAL_TEXT, r"\1", regex=True)
                                     .str.lstrip("+"))
    missing = (stripped.isna() | (stripped == "").fillna(True)).to_numpy(dtype=bool)
    return stripped.fillna("").to_numpy(dtype=object), missing


def numeric_values(col: pd.Series | np.ndarray, name: str, source: str) -> np.ndarray:
    """Cast a column to float64 (NaN where missing).

    Raises:
        ValueError: text that is not a number, a list where one number is expected, or a number beyond float64
            (e.g. "1e400", a 400-digit integer), naming the column and ``source``.
    """
    if isinstance(col, np.ndarray):
        types = set(map(type, col))
        kinds = sorted(t.__name__ for t in types if issubclass(t, CONTAINERS))
        if kinds:
            raise ValueError(f"{source}: numeric feature '{name}' holds {kinds} values; expected one number per row")
        if not any(issubclass(t, str) for t in types):
            try:  # Python numbers / booleans / None (a scoring request): one C-level conversion
                values = np.array(col.tolist(), dtype=np.float64).reshape(len(col))  # None -> NaN, True -> 1
            except OverflowError:
                raise ValueError(f"{source}: numeric feature '{name}' holds an integer beyond the float64 range"
                                 ) from None
            except (TypeError, ValueError):
                pass  # e.g. an object without a float value: the text rule below names it
            else:
                return _finite_or_missing(values, name, source)
        # text (or other objects): the file's rule, so "1_000" or "１" are refused here as in a CSV; booleans 1 / 0
        col = pd.Series([int(v) if type(v) is bool else v for v in col], dtype=object).astype("string")
    if pd.api.types.is_bool_dtype(col.dtype) or pd.api.types.is_numeric_dtype(col.dtype):
        return _finite_or_missing(col.to_numpy(dtype=np.float64, na_value=np.nan), name, source)
    text = col.astype("string").str.strip()
    converted = pd.to_numeric(text.replace("", pd.NA), errors="coerce")
    token = text.str.lower().isin(MISSING_TOKENS).fillna(False)
    bad = converted.isna() & text.notna() & (text != "") & ~token
    if bad.any():
        examples = text[bad].unique()[:5].tolist()
        raise ValueError(
            f"{source}: numeric column '{name}' (dtype {col.dtype}) holds non-numeric values {examples} "
            f"in {int(bad.sum())} rows; expected numbers, or empty / NaN for missing"
        )
    values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    overflow = np.isinf(values)
    if overflow.any():
        examples = text[overflow].unique()[:3].tolist()
        raise ValueError(
            f"{source}: numeric column '{name}' holds infinite values or values beyond the float64 range {examples} "
            f"in {int(overflow.sum())} rows; expected finite numbers, or empty / NaN for missing"
        )
    return values


_NUMBER_TYPES = frozenset({int, float, bool, type(None)})


def numeric_block(columns: Sequence[Sequence[Any]], names: Sequence[str], source: str) -> np.ndarray:
    """K numeric columns of N Python values each (a scoring request) as (N, K) float64, NaN where missing.

    One conversion for all K columns when they hold only Python numbers, booleans and None (missing), as
    ``numeric_values`` converts such a column; otherwise (text, other objects, a bad value) the columns go through
    ``numeric_values`` one by one, which applies the text rule and raises naming the column.

    Raises:
        ValueError: as ``numeric_values``.
    """
    n = len(columns[0]) if columns else 0
    block = None
    if _NUMBER_TYPES.issuperset(map(type, itertools.chain.from_iterable(columns))):  # no text: one conversion
        try:
            block = np.array(columns, dtype=np.float64)  # (K, N); None -> NaN, True -> 1
        except (TypeError, ValueError, OverflowError):
            block = None
    if block is None or block.shape != (len(columns), n) or np.isinf(block).any():
        block = np.array([numeric_values(column({name: c}, name), name, source)
                          for c, name in zip(columns, names)]).reshape(len(columns), n)
    return block.T


def _finite_or_missing(values: np.ndarray, name: str, source: str) -> np.ndarray:
    """Refuse +-inf (an explicit inf, or a number like 1e400 that the CSV / JSON parser overflowed); NaN is missing."""
    infinite = np.isinf(values)
    if infinite.any():
        raise ValueError(
            f"{source}: numeric column '{name}' holds infinite values or values beyond the float64 range (e.g. 1e400) "
            f"in {int(infinite.sum())} rows; expected finite numbers, or empty / NaN for missing"
        )
    return values


def label_values(rows: Rows, name: str, source: str) -> np.ndarray:
    """The click column as (N,) float32 in {0, 1}: 0 / 1 as numbers, numeric text ("1.0"), booleans or "true" /
    "false" text.

    Raises:
        ValueError: the column is missing, or holds values other than 0 / 1 (with counts of the bad values).
    """
    present = columns_of(rows)
    if name not in present:
        raise ValueError(f"{source}: label column '{name}' not found (schema.label); columns: {present}")
    raw = pd.Series(column(rows, name))
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    text = ~np.isin(values, (0.0, 1.0)) & raw.notna().to_numpy()
    if text.any():  # "true" / "false" text (any case) counts as 1 / 0, as booleans do in Parquet and JSON
        words = raw[text].astype(str).str.strip().str.lower()
        values[text] = words.map({"true": 1.0, "false": 0.0}).to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        counts = raw[bad].astype(object).where(raw[bad].notna(), "<missing>").astype(str).value_counts().head(5).to_dict()
        raise ValueError(
            f"{source}: label column '{name}' must hold 0 or 1; {int(bad.sum())} rows hold other values "
            f"(value: rows) {counts}"
        )
    return values.astype(np.float32)


def format_names(rows: Rows, name: str, source: str) -> np.ndarray:
    """The ad-format column as (N,) object array of stripped strings.

    Raises:
        ValueError: the column is missing or empty in some rows.
    """
    present = columns_of(rows)
    if name not in present:
        raise ValueError(f"{source}: format column '{name}' not found (schema.format); columns: {present}")
    names, missing = categorical_strings(column(rows, name), name, source)
    if missing.any():
        raise ValueError(f"{source}: format column '{name}' is empty in {int(missing.sum())} rows; every impression "
                         f"needs its ad format")
    return names


def timestamp_values(rows: Rows, name: str, source: str = "data") -> np.ndarray:
    """Timestamps as sortable numbers: integer columns as int64, float columns as float64, datetimes and date
    strings (ISO 8601, parsed in UTC) as int64 nanoseconds since the epoch.

    The same rule applies to a whole column and to any slice of it (a record batch), so a split computed from
    record batches agrees with one computed from the whole frame.

    Raises:
        ValueError: the column is missing or has missing / unparseable values (with counts and examples).
    """
    if name not in columns_of(rows):
        raise ValueError(
            f"{source}: timestamp column '{name}' not found (schema.timestamp); columns: {columns_of(rows)}. "
            f"Set schema.timestamp: null and split.method: random for logs without time."
        )
    series = rows[name] if isinstance(rows, pd.DataFrame) else pd.Series(list(rows[name]))
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise ValueError(f"{source}: timestamp column '{name}' holds booleans; expected times")
    if pd.api.types.is_integer_dtype(dtype):
        bad = series.isna().to_numpy()
        values = series.to_numpy(dtype=np.int64, na_value=0)
    elif pd.api.types.is_numeric_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
    else:
        if pd.api.types.is_datetime64_any_dtype(dtype):
            parsed = pd.to_datetime(series, utc=True)
        else:
            parsed = pd.to_datetime(series.astype("string").str.strip(), utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna().to_numpy()
        values = np.where(bad, 0, parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64))
    if bad.any():
        examples = series[bad].astype(str).unique()[:5].tolist()
        raise ValueError(
            f"{source}: timestamp column '{name}' has {int(bad.sum())} missing or unparseable values, e.g. {examples}; "
            f"use epoch numbers or one date format (ISO 8601) for every row"
        )
    return np.asarray(values)


@dataclass
class FormatCounts:
    """Rows and clicks per ad format, summed chunk by chunk (the task priors and the data checks before training).

    Example:
        >>> counts = FormatCounts()
        >>> counts.add(np.array(["audio", "video", "audio"], dtype=object), np.array([1.0, 0.0, 0.0]))
        >>> counts.rows, counts.clicks, counts.arrays(["video", "audio", "display"])[0].tolist()
        ({'audio': 2, 'video': 1}, {'audio': 1.0, 'video': 0.0}, [1.0, 2.0, 0.0])
    """

    rows: dict[str, int] = field(default_factory=dict)
    clicks: dict[str, float] = field(default_factory=dict)
    digest: int = 0  # sum of the counted rows' content hashes mod 2^64 (``add_digest``): any changed cell changes it

    def add_digest(self, frame: pd.DataFrame) -> None:
        """Fold the content of the counted rows into ``digest``: a 64-bit hash per row (every column's value), summed
        mod 2^64, so the result does not depend on how the rows were cut into chunks or in which order they came."""
        if len(frame):
            try:
                row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)
            except TypeError:  # list cells (a Parquet list column, a frame of lists): hash their text form
                listed = {c: frame[c].map(repr) for c in frame.columns if frame[c].dtype == object}
                row_hashes = pd.util.hash_pandas_object(frame.assign(**listed), index=False).to_numpy(np.uint64)
            with np.errstate(over="ignore"):
                self.digest = int((np.uint64(self.digest) + row_hashes.sum(dtype=np.uint64)) & np.uint64(2**64 - 1))

    def add(self, formats: np.ndarray, labels: np.ndarray) -> None:
        """Count (N,) format names and (N,) clicks."""
        names, inverse = np.unique(np.asarray(formats).astype(str), return_inverse=True)
        rows = np.bincount(inverse, minlength=len(names))
        clicks = np.bincount(inverse, weights=labels, minlength=len(names))
        for name, r, c in zip(names.tolist(), rows.tolist(), clicks.tolist()):
            self.rows[name] = self.rows.get(name, 0) + int(r)
            self.clicks[name] = self.clicks.get(name, 0.0) + float(c)

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def arrays(self, formats: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(K,) rows and (K,) clicks in ``formats`` order (0 for formats without rows)."""
        return (np.array([self.rows.get(f, 0) for f in formats], dtype=np.float64),
                np.array([self.clicks.get(f, 0.0) for f in formats], dtype=np.float64))
