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
from typing import Any

import numpy as np
import pandas as pd

from camoe.config import FeatureSpec, SchemaConfig
from camoe.schema import MISSING_ID, NUM_RESERVED, OOV_ID, InputSpec

__all__ = ["EncodedFeatures", "FeatureEncoder", "stable_hash"]

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


def _missing_mask(series: pd.Series) -> np.ndarray:
    mask = series.isna().to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        stripped = series.astype("string").str.strip()
        mask = mask | (stripped == "").fillna(True).to_numpy(dtype=bool)
    elif pd.api.types.is_float_dtype(series.dtype):
        mask = mask | ~np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return mask


def _as_category_strings(series: pd.Series) -> np.ndarray:
    """Values as strings; integral floats (3.0, from a CSV column with gaps) print as integers ("3")."""
    if pd.api.types.is_float_dtype(series.dtype):
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(arr)
        if finite.any() and np.all(arr[finite] == np.round(arr[finite])):
            out = np.full(arr.shape, "", dtype=object)
            out[finite] = arr[finite].astype(np.int64).astype(str)
            return out
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(str).to_numpy(dtype=object)
    return series.astype("string").fillna("").str.strip().to_numpy(dtype=object)


def _numeric_values(series: pd.Series, column: str, source: str) -> np.ndarray:
    """Cast a column to float64; text that is not a number raises naming the column and examples."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    text = series.astype("string").str.strip()
    converted = pd.to_numeric(text.replace("", pd.NA), errors="coerce")
    bad = converted.isna() & text.notna() & (text != "") & ~text.str.lower().isin(["nan", "inf", "-inf", "none", "null"])
    if bad.any():
        examples = text[bad].unique()[:5].tolist()
        raise ValueError(
            f"{source}: numeric column '{column}' (dtype {series.dtype}) holds non-numeric values {examples} "
            f"in {int(bad.sum())} rows; expected numbers, or empty / NaN for missing"
        )
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


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

    def check_columns(self, frame: pd.DataFrame, source: str) -> None:
        """Raise naming every feature column absent from ``frame`` (columns are matched by name only)."""
        missing = [f.name for f in self.features if f.name not in frame.columns]
        if missing:
            raise ValueError(
                f"{source}: missing feature column(s) {missing}; columns present: {list(map(str, frame.columns))}"
            )

    @staticmethod
    def _split_multi(series: pd.Series, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Explode a multi-valued column: (row index, position in row, value string), positions < max_len."""
        if series.dtype == object and series.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            # list cells (a DataFrame of lists, or a Parquet list column) -> the separator form
            series = series.map(
                lambda v: spec.separator.join(str(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else v
            )
        text = series.astype("string").fillna("")
        parts = text.str.split(spec.separator, regex=False)
        values = parts.explode().astype("string").str.strip()
        keep = (values != "").fillna(False).to_numpy(dtype=bool)
        rows = np.repeat(np.arange(len(series)), parts.str.len().to_numpy())
        rows, vals = rows[keep], values.to_numpy(dtype=object)[keep]
        # position of each value within its row, counting kept values only
        starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1] if len(rows) else np.zeros(0, dtype=np.int64)
        pos = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        inside = pos < spec.max_len
        return rows[inside], pos[inside], vals[inside]

    # ------------------------------------------------------------------ fit
    def fit(self, frame: pd.DataFrame, source: str = "train") -> FeatureEncoder:
        """Fit vocabularies and statistics on training rows only.

        Raises:
            ValueError: a feature column is missing, a numeric column holds text, or a feature with
                ``missing: error`` has missing values.
        """
        self.check_columns(frame, source)
        if len(frame) == 0:
            raise ValueError(f"{source}: no rows to fit the encoder on")
        for spec in self.features:
            series = frame[spec.name]
            self._check_missing_policy(spec, series, source)
            if spec.type == "numeric":
                x = self._transform_raw(spec, _numeric_values(series, spec.name, source))
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
                    _, _, vals = self._split_multi(series, spec)
                    counts = pd.Series(vals, dtype=object).value_counts(sort=False)
                else:
                    strs = _as_category_strings(series)[~_missing_mask(series)]
                    counts = pd.Series(strs, dtype=object).value_counts(sort=False)
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
    def _check_missing_policy(spec: FeatureSpec, series: pd.Series, source: str) -> None:
        if spec.missing != "error":
            return
        n_missing = int(_missing_mask(series).sum())
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
        codes = pd.Index(self.vocab_[spec.name], dtype=object).get_indexer(np.asarray(strs, dtype=object))
        return np.where(codes < 0, OOV_ID, codes + NUM_RESERVED)

    def _encode_identity(self, spec: FeatureSpec, series: pd.Series, missing: np.ndarray, source: str) -> np.ndarray:
        assert spec.num_ids is not None
        raw = _numeric_values(series, spec.name, source)
        ids = np.full(len(series), MISSING_ID, dtype=np.int64)
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

    def transform(self, frame: pd.DataFrame, source: str = "data") -> EncodedFeatures:
        """Encode rows with the fitted state.

        Args:
            frame: raw rows holding every feature column (extra columns are ignored).
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
        n = len(frame)
        cat = np.zeros((n, spec_in.num_cat), dtype=np.int64)
        multi = np.zeros((n, spec_in.num_multi, spec_in.max_len), dtype=np.int64)
        dense = np.zeros((n, spec_in.num_dense), dtype=np.float32)
        oov: dict[str, int] = {}
        missing_counts: dict[str, int] = {}
        for j, spec in enumerate(self.cat_specs):
            series = frame[spec.name]
            self._check_missing_policy(spec, series, source)
            missing = _missing_mask(series)
            if spec.encoding == "identity":
                ids = self._encode_identity(spec, series, missing, source)
            else:
                ids = np.full(n, MISSING_ID, dtype=np.int64)
                ids[~missing] = self._encode_strings(spec, _as_category_strings(series)[~missing])
            cat[:, j] = ids
            oov[spec.name] = int((ids == OOV_ID).sum())
            missing_counts[spec.name] = int(missing.sum())
        for j, spec in enumerate(self.multi_specs):
            series = frame[spec.name]
            self._check_missing_policy(spec, series, source)
            rows, pos, vals = self._split_multi(series, spec)
            ids = self._encode_strings(spec, vals) if len(vals) else np.zeros(0, dtype=np.int64)
            multi[rows, j, pos] = ids
            oov[spec.name] = int((ids == OOV_ID).sum())
            missing_counts[spec.name] = int(n - len(np.unique(rows)))
        col = 0
        for spec in self.numeric_specs:
            series = frame[spec.name]
            self._check_missing_policy(spec, series, source)
            x = self._transform_raw(spec, _numeric_values(series, spec.name, source))
            missing = ~np.isfinite(x)
            x = np.where(missing, self.fill_[spec.name], x)
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

