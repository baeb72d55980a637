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

import warnings
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from camoe.config import FeatureSpec, SchemaConfig
from camoe.schema import MISSING_ID, NUM_RESERVED, OOV_ID, InputSpec

__all__ = ["EncodedFeatures", "FeatureEncoder", "stable_hash"]

_SMALL = 4096  # inputs up to this many values take the per-value lookups (scoring requests)
_HASH_KEY = "camoe-hash-v1.0."  # 16 bytes; changing it changes every hashed id


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
    hashed = pd.util.hash_array(np.asarray(values, dtype=object), hash_key=_HASH_KEY, categorize=True)
    return (hashed % np.uint64(buckets)).astype(np.int64)


def _column(frame: Any, name: str) -> pd.Series | np.ndarray:
    """Column ``name`` of a DataFrame or of a mapping {column: sequence of values}.

    Typed pandas columns stay Series (vectorised pandas / Arrow string kernels, fast on millions of rows); object
    columns and plain sequences (JSON values in the scoring service, list cells) become 1-D object arrays handled
    value by value with the same rules, which is fast on the few hundred rows of a scoring request.
    """
    col = frame[name]
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


def _num_rows(frame: Any) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if len(frame) else 0


def _columns_of(frame: Any) -> list[str]:
    return [str(c) for c in (frame.columns if isinstance(frame, pd.DataFrame) else frame.keys())]


def _category_value(v: Any) -> str:
    """One raw categorical value -> its normalised string; "" means missing (None, NaN, NA, inf, blank text).

    Raises:
        TypeError: a list, dict or array where one value is expected.
    """
    kind = type(v)
    if kind is str:
        return v.strip()
    if kind is int:
        return str(v)
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, _CONTAINERS):
        raise TypeError(f"expected one value per row, got a {type(v).__name__}")
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not np.isfinite(f):
            return ""
        return str(int(f)) if f.is_integer() and abs(f) < 2**63 else str(f)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v).strip()


def _categorical_strings(
    col: pd.Series | np.ndarray, column: str = "value", source: str = "data"
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised value strings and the missing mask of a categorical column.

    Rules (the same for typed columns and Python values): text is stripped; None / NaN / NA / inf / blank text is
    missing; integral floats print as integers (3.0 -> "3", as a CSV integer column with gaps reads); bools print
    as "True" / "False".

    Returns:
        (N,) object array of strings ("" where missing), (N,) bool missing mask.

    Raises:
        ValueError: a list / dict / array where one value is expected (names ``column`` and ``source``).
    """
    if isinstance(col, np.ndarray):
        # text (the common case) is stripped inline; other values take the full rule
        try:
            strs = np.array([v.strip() if type(v) is str else _category_value(v) for v in col], dtype=object)
        except TypeError as err:
            raise ValueError(f"{source}: feature '{column}': {err}") from None
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
        strs = col.astype(str).to_numpy(dtype=object)
        strs[missing] = ""
        return strs, missing
    stripped = col.astype("string").str.strip()
    missing = (stripped.isna() | (stripped == "").fillna(True)).to_numpy(dtype=bool)
    return stripped.fillna("").to_numpy(dtype=object), missing


_MISSING_TOKENS = ["nan", "inf", "-inf", "+inf", "infinity", "-infinity", "none", "null", "na", "n/a"]
_CONTAINERS = (list, tuple, dict, set, np.ndarray)


def _numeric_values(col: pd.Series | np.ndarray, column: str, source: str) -> np.ndarray:
    """Cast a column to float64 (NaN where missing); text that is not a number, a list where one number is
    expected, or a number beyond float64 (e.g. "1e400", a 400-digit integer) raises naming the column.

    Explicit missing tokens (empty, NaN, inf, None, null, NA, n/a; any case) are missing values.
    """
    if isinstance(col, np.ndarray):
        kinds = sorted(t.__name__ for t in set(map(type, col)) if issubclass(t, _CONTAINERS))
        if kinds:
            raise ValueError(f"{source}: numeric feature '{column}' holds {kinds} values; expected one number per row")
        try:  # Python numbers / None (a scoring request): one C-level conversion
            return np.array([np.nan if v is None else v for v in col], dtype=np.float64).reshape(len(col))
        except OverflowError:
            raise ValueError(
                f"{source}: numeric feature '{column}' holds an integer beyond the float64 range"
            ) from None
        except (TypeError, ValueError):
            col = pd.Series(col, dtype=object).astype("string")  # text: the vectorised rules and error below
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    text = col.astype("string").str.strip()
    converted = pd.to_numeric(text.replace("", pd.NA), errors="coerce")
    token = text.str.lower().isin(_MISSING_TOKENS).fillna(False)
    bad = converted.isna() & text.notna() & (text != "") & ~token
    if bad.any():
        examples = text[bad].unique()[:5].tolist()
        raise ValueError(
            f"{source}: numeric column '{column}' (dtype {col.dtype}) holds non-numeric values {examples} "
            f"in {int(bad.sum())} rows; expected numbers, or empty / NaN for missing"
        )
    values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    overflow = np.isinf(values) & ~token.to_numpy(dtype=bool)
    if overflow.any():
        examples = text[overflow].unique()[:3].tolist()
        raise ValueError(
            f"{source}: numeric column '{column}' holds values beyond the float64 range {examples} in "
            f"{int(overflow.sum())} rows"
        )
    return values


@dataclass
class EncodedFeatures:
    """Encoded features of N rows plus what the encoder had to map.

    Attributes:
        cat_ids: (N, F) int64.
        multi_ids: (N, M, L) int64, 0 = padding.
        dense: (N, N_dense) float32, finite.
        oov_counts: feature -> rows (or values, for multi-valued) mapped to OOV.
        missing_counts: feature -> rows with a missing value.
    """

    cat_ids: np.ndarray
    multi_ids: np.ndarray
    dense: np.ndarray
    oov_counts: dict[str, int] = field(default_factory=dict)
    missing_counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cat_ids.shape[0])


class FeatureEncoder:
    """Fits vocabularies and numeric statistics on training rows; encodes any rows the same way.

    Args:
        schema: the features to encode (``SchemaConfig.features``).

    Fitted attributes (after ``fit``): ``vocab_`` (feature -> list of values, id = position + 2),
    ``mean_`` / ``std_`` / ``fill_`` (numeric feature -> float, in transformed units), ``input_spec_``.
    """

    def __init__(self, schema: SchemaConfig) -> None:
        self.schema = schema
        self.features: list[FeatureSpec] = list(schema.features)
        self.vocab_: dict[str, list[str]] = {}
        self.mean_: dict[str, float] = {}
        self.std_: dict[str, float] = {}
        self.fill_: dict[str, float] = {}
        self.input_spec_: InputSpec | None = None
        self._index_cache: dict[str, pd.Index] = {}  # feature -> vocabulary index, built on first transform
        self._id_cache: dict[str, dict[str, int]] = {}  # feature -> {value: id}, for small inputs

    # ------------------------------------------------------------------ helpers
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

    def check_columns(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]], source: str) -> None:
        """Raise naming every feature column absent from ``frame`` (columns are matched by name only)."""
        present = _columns_of(frame)
        missing = [f.name for f in self.features if f.name not in present]
        if missing:
            raise ValueError(f"{source}: missing feature column(s) {missing}; columns present: {present}")

    @staticmethod
    def _split_multi(col: pd.Series | np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Explode a multi-valued column: (row index, position in row, value string), positions < max_len.

        A cell is a separator-joined string or a list of values (a JSON list, a Parquet list column); values are
        stripped as categorical values are (``_category_value``) and blank values dropped, so "a||b", ["a", "", "b"]
        and "a|b" hold the same two values.
        """
        if isinstance(col, np.ndarray):
            rows: list[int] = []
            pos: list[int] = []
            vals: list[str] = []
            for i, cell in enumerate(col):
                items = cell if isinstance(cell, (list, tuple, np.ndarray)) else _category_value(cell).split(spec.separator)
                k = 0
                for item in items:
                    try:
                        value = item.strip() if type(item) is str else _category_value(item)
                    except TypeError as err:
                        raise ValueError(f"multi-valued feature '{spec.name}', row {i}: nested value ({err})") from None
                    if value and k < spec.max_len:
                        rows.append(i)
                        pos.append(k)
                        vals.append(value)
                        k += 1
            return np.array(rows, dtype=np.int64), np.array(pos, dtype=np.int64), np.array(vals, dtype=object)
        text = col.astype("string").fillna("")
        parts = text.str.split(spec.separator, regex=False)
        values = parts.explode().astype("string").str.strip()
        keep = (values != "").fillna(False).to_numpy(dtype=bool)
        row_ids = np.repeat(np.arange(len(col)), parts.str.len().to_numpy())
        row_ids, value_arr = row_ids[keep], values.to_numpy(dtype=object)[keep]
        # position of each value within its row, counting kept values only
        starts = np.r_[0, np.flatnonzero(np.diff(row_ids)) + 1] if len(row_ids) else np.zeros(0, dtype=np.int64)
        position = np.arange(len(row_ids)) - np.repeat(starts, np.diff(np.r_[starts, len(row_ids)]))
        inside = position < spec.max_len
        return row_ids[inside], position[inside], value_arr[inside]

    # ------------------------------------------------------------------ fit
    def fit(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]], source: str = "train") -> FeatureEncoder:
        """Fit vocabularies and statistics on training rows only.

        Raises:
            ValueError: a feature column is missing, a numeric column holds text, or a feature with
                ``missing: error`` has missing values.
        """
        self.check_columns(frame, source)
        if _num_rows(frame) == 0:
            raise ValueError(f"{source}: no rows to fit the encoder on")
        self._index_cache, self._id_cache = {}, {}
        for spec in self.features:
            col = _column(frame, spec.name)
            if spec.type == "numeric":
                x = self._transform_raw(spec, _numeric_values(col, spec.name, source))
                self._check_missing_policy(spec, int((~np.isfinite(x)).sum()), source)
                finite = np.isfinite(x)
                with np.errstate(over="ignore", invalid="ignore"):
                    mean = float(x[finite].mean()) if finite.any() else 0.0
                    std = float(x[finite].std()) if finite.sum() > 1 else 1.0
                if not (np.isfinite(mean) and np.isfinite(std)):
                    raise ValueError(
                        f"{source}: numeric feature '{spec.name}' reaches |x| = {np.abs(x[finite]).max():.3g}; its "
                        f"mean / std overflow float64. Use transform: log, or fix the values"
                    )
                self.mean_[spec.name] = mean
                self.std_[spec.name] = std if std > 1e-12 else 1.0
                if spec.fill_value is not None:
                    self.fill_[spec.name] = float(self._transform_raw(spec, np.array([spec.fill_value]))[0])
                else:
                    self.fill_[spec.name] = mean
                if spec.transform == "none" and finite.any() and np.abs(x[finite]).max() > 1e3:
                    warnings.warn(
                        f"numeric feature '{spec.name}' is not scaled (transform: none) and reaches "
                        f"|x| = {np.abs(x[finite]).max():.3g}; large inputs saturate the network. "
                        f"Use transform: standard or log.",
                        stacklevel=2,
                    )
            elif spec.encoding == "vocab":
                if spec.type == "multi_categorical":
                    rows, _, vals = self._split_multi(col, spec)
                    self._check_missing_policy(spec, _num_rows(frame) - len(np.unique(rows)), source)
                    counts = pd.Series(vals, dtype=object).value_counts(sort=False)
                else:
                    strs, missing = _categorical_strings(col, spec.name, source)
                    self._check_missing_policy(spec, int(missing.sum()), source)
                    counts = pd.Series(strs[~missing], dtype=object).value_counts(sort=False)
                counts = counts[counts >= spec.min_count]
                order = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
                if spec.max_vocab is not None:
                    order = order[: spec.max_vocab]
                self.vocab_[spec.name] = [str(v) for v, _ in order]
        self.input_spec_ = self._build_input_spec()
        return self

    def _build_input_spec(self) -> InputSpec:
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

    @staticmethod
    def _transform_raw(spec: FeatureSpec, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isfinite(x), x, np.nan)
        if spec.transform == "log":
            return np.sign(x) * np.log1p(np.abs(x))
        return x

    @staticmethod
    def _check_missing_policy(spec: FeatureSpec, n_missing: int, source: str) -> None:
        """Raise when a ``missing: error`` feature has missing values (a multi-valued cell with no values, e.g.
        only separators, counts as missing)."""
        if spec.missing != "error":
            return
        if n_missing:
            raise ValueError(
                f"{source}: feature '{spec.name}' has {n_missing} missing values (NaN/empty) and its schema says "
                f"missing: error"
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

    def _encode_identity(
        self, spec: FeatureSpec, col: pd.Series | np.ndarray, missing: np.ndarray, source: str
    ) -> np.ndarray:
        assert spec.num_ids is not None
        raw = _numeric_values(col, spec.name, source)
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

    def transform(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]], source: str = "data") -> EncodedFeatures:
        """Encode rows with the fitted state.

        Args:
            frame: raw rows holding every feature column (extra columns are ignored): a DataFrame, or a mapping
                {column: sequence of N Python values} (the scoring service's form; no DataFrame is built). Both
                follow the same value rules, so a row scores the same from a file or from a JSON request.
            source: file or split name used in errors.

        Returns:
            ``EncodedFeatures`` with (N, F) ids, (N, M, L) multi-valued ids and (N, N_dense) float32 values.

        Raises:
            ValueError: a feature column is missing, a numeric column holds text, an identity id is out of range
                (strict), or a ``missing: error`` feature has missing values.
            RuntimeError: the encoder is not fitted.
        """
        spec_in = self._require_fitted()
        self.check_columns(frame, source)
        n = _num_rows(frame)
        cat = np.zeros((n, spec_in.num_cat), dtype=np.int64)
        multi = np.zeros((n, spec_in.num_multi, spec_in.max_len), dtype=np.int64)
        dense = np.zeros((n, spec_in.num_dense), dtype=np.float32)
        oov: dict[str, int] = {}
        missing_counts: dict[str, int] = {}
        for j, spec in enumerate(self.cat_specs):
            col = _column(frame, spec.name)
            strs, missing = _categorical_strings(col, spec.name, source)
            self._check_missing_policy(spec, int(missing.sum()), source)
            if spec.encoding == "identity":
                ids = self._encode_identity(spec, col, missing, source)
            else:
                ids = np.full(n, MISSING_ID, dtype=np.int64)
                ids[~missing] = self._encode_strings(spec, strs[~missing])
            cat[:, j] = ids
            oov[spec.name] = int((ids == OOV_ID).sum())
            missing_counts[spec.name] = int(missing.sum())
        for j, spec in enumerate(self.multi_specs):
            rows, pos, vals = self._split_multi(_column(frame, spec.name), spec)
            self._check_missing_policy(spec, n - len(np.unique(rows)), source)
            ids = self._encode_strings(spec, vals) if len(vals) else np.zeros(0, dtype=np.int64)
            multi[rows, j, pos] = ids
            oov[spec.name] = int((ids == OOV_ID).sum())
            missing_counts[spec.name] = int(n - len(np.unique(rows)))
        col = 0
        for spec in self.numeric_specs:
            x = self._transform_raw(spec, _numeric_values(_column(frame, spec.name), spec.name, source))
            missing = ~np.isfinite(x)
            self._check_missing_policy(spec, int(missing.sum()), source)
            x = np.where(missing, self.fill_[spec.name], x)
            with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is checked and named below
                dense[:, col] = (x - self.mean_[spec.name]) / self.std_[spec.name]
            missing_counts[spec.name] = int(missing.sum())
            col += 1
            if spec.missing_indicator:
                dense[:, col] = missing.astype(np.float32)
                col += 1
        if not np.isfinite(dense).all():  # e.g. a finite value whose standardised form overflows float32
            bad_col = spec_in.dense_features[int(np.flatnonzero(~np.isfinite(dense).all(axis=0))[0])]
            raise ValueError(f"{source}: numeric feature '{bad_col}' overflows float32 after scaling")
        return EncodedFeatures(cat, multi, dense, oov, missing_counts)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: feature specs, vocabularies, numeric statistics, input layout."""
        spec_in = self._require_fitted()
        return {
            "hash": {"function": "pandas.util.hash_array", "key": _HASH_KEY},
            "features": [f.model_dump(mode="json") for f in self.features],
            "vocab": self.vocab_,
            "mean": self.mean_,
            "std": self.std_,
            "fill": self.fill_,
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
        saved = {f["name"]: f for f in state["features"]}
        current = {f.name: f.model_dump(mode="json") for f in schema.features}
        changed = sorted(n for n in set(saved) | set(current) if saved.get(n) != current.get(n))
        if changed:
            raise ValueError(f"encoder state does not match the schema: changed features {changed}")
        if state.get("hash", {}).get("key") != _HASH_KEY:
            raise ValueError("encoder state was written with another hash key; hashed ids would differ")
        enc.vocab_ = {k: list(v) for k, v in state["vocab"].items()}
        enc.mean_ = {k: float(v) for k, v in state["mean"].items()}
        enc.std_ = {k: float(v) for k, v in state["std"].items()}
        enc.fill_ = {k: float(v) for k, v in state["fill"].items()}
        enc.input_spec_ = enc._build_input_spec()
        if enc.input_spec_.to_dict() != state["input_spec"]:
            raise ValueError(
                f"encoder state is inconsistent: table sizes from the vocabularies {enc.input_spec_.to_dict()} "
                f"differ from the saved layout {state['input_spec']}"
            )
        return enc

