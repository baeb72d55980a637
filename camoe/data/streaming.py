"""Streaming Parquet input: pyarrow datasets read in record batches, never loaded whole.

* ``open_dataset`` — a Parquet file, folder or glob as one ``pyarrow.dataset.Dataset`` (files checked like
  ``read_table`` does: empty or unreadable files and differing columns are refused, naming the file).
* ``temporal_bounds`` — the temporal split as timestamp filters. Cut points come from a fixed-width histogram of the
  timestamp column built in one streaming pass (bounded memory); each split holds its fraction of rows to within one
  histogram bin, and all rows of one timestamp fall in the same split.
* ``StreamingFit`` — one pass over the train split that fits a ``FeatureEncoder`` (vocabulary counts, numeric
  mean / variance merged per batch with Chan's formula) and counts rows and clicks per ad format. Hash and identity
  features need no counting, so features with huge vocabularies cost no memory with ``encoding: hash``.
* ``ParquetBatchStream`` — encoded ``Batch`` objects for training and scoring: record batches (optionally only this
  rank's share) go through a bounded shuffle buffer of ``shuffle_buffer_rows`` rows, in a fragment order drawn per
  epoch; memory is one buffer plus one decoded Parquet row group (Arrow decodes whole row groups; write files
  with row groups of ~100k rows, as ``camoe generate --shards`` does), whatever the number of rows.
"""

from __future__ import annotations

import ctypes
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import torch

from camoe.batch import Batch
from camoe.config import SchemaConfig, StreamingConfig
from camoe.data.encoders import EncoderFit, FeatureEncoder
from camoe.data.readers import check_parquet_files

__all__ = ["ParquetBatchStream", "StreamingFit", "count_rows", "open_dataset", "split_filter", "temporal_bounds",
           "timestamp_array"]

Bounds = tuple[float | None, float | None]  # [lo, hi) on the timestamp; None = unbounded side


def open_dataset(files: list[Path]) -> ds.Dataset:
    """Parquet files as one dataset; refuses empty / unreadable files and files whose columns differ.

    Raises:
        ValueError: naming the file.
    """
    for file in files:
        if not file.name.endswith((".parquet", ".pq")):
            raise ValueError(f"{file}: streaming reads Parquet only (data.streaming.enabled); convert CSV to Parquet")
    check_parquet_files(files)
    return ds.dataset([str(f) for f in files], format="parquet")


def timestamp_array(batch: pa.RecordBatch | pa.Table, column: str, source: str) -> np.ndarray:
    """A timestamp column as float64 numbers (Arrow timestamps -> their integer unit); refuses missing values."""
    col = batch.column(column)
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col.cast(pa.date32()).cast(pa.int32())
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise ValueError(f"{source}: timestamp column '{column}' has Arrow type {col.type}; streaming needs numbers "
                         f"or Arrow timestamps (convert date strings when writing the Parquet files)")
    values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{source}: timestamp column '{column}' has {int(bad.sum())} missing or non-finite values")
    return values


def _ts_expr(column: str, value: float, dtype: pa.DataType) -> Any:
    if pa.types.is_timestamp(dtype):
        return pa.scalar(int(value), pa.int64()).cast(dtype)
    if pa.types.is_integer(dtype):
        return int(math.ceil(value))
    return float(value)


def split_filter(dataset: ds.Dataset, column: str | None, bounds: Bounds | None) -> Any:
    """Arrow filter expression ``lo <= ts < hi``; None = whole dataset; bounds None = an empty split."""
    if bounds is None:
        return ds.scalar(False)
    if column is None or bounds == (None, None):
        return None
    dtype = dataset.schema.field(column).type
    expr = None
    lo, hi = bounds
    if lo is not None:
        expr = ds.field(column) >= _ts_expr(column, lo, dtype)
    if hi is not None:
        upper = ds.field(column) < _ts_expr(column, hi, dtype)
        expr = upper if expr is None else expr & upper
    return expr


def temporal_bounds(
    dataset: ds.Dataset, column: str, valid_fraction: float, test_fraction: float, bins: int, read_rows: int,
    source: str = "data",
) -> dict[str, Bounds | None]:
    """Timestamp ranges of the train / valid / test splits (None = the split has no rows) (last ``test_fraction`` of rows in time is test).

    Two passes over the timestamp column only: min / max, then a histogram with ``bins`` equal-width bins (integer
    timestamps with a range under ``bins`` get one bin per value, so the cut is exact up to ties).

    Raises:
        ValueError: missing timestamp column, missing values, no rows, or no training rows left.
    """
    if column not in dataset.schema.names:
        raise ValueError(f"{source}: timestamp column '{column}' not found (schema.timestamp); columns: "
                         f"{dataset.schema.names}. Set schema.timestamp: null and split.method: random for logs "
                         f"without time (random splits are not supported when streaming)")
    lo, hi, n = math.inf, -math.inf, 0
    for batch in dataset.to_batches(columns=[column], batch_size=read_rows, batch_readahead=0, fragment_readahead=0):
        values = timestamp_array(batch, column, source)
        if len(values):
            lo, hi, n = min(lo, float(values.min())), max(hi, float(values.max())), n + len(values)
    if n == 0:
        raise ValueError(f"{source}: no rows")
    integer = pa.types.is_integer(dataset.schema.field(column).type) or pa.types.is_timestamp(
        dataset.schema.field(column).type)
    if integer and hi - lo + 1 <= bins:
        edges = np.arange(lo, hi + 2)  # one bin per integer value
    else:
        edges = np.linspace(lo, hi, bins + 1)
        edges[-1] = np.nextafter(hi, np.inf)
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for batch in dataset.to_batches(columns=[column], batch_size=read_rows, batch_readahead=0, fragment_readahead=0):
        counts += np.histogram(timestamp_array(batch, column, source), bins=edges)[0]
    cum = np.cumsum(counts)

    def cut(rows_before: int) -> float:
        """Smallest edge with at least ``rows_before`` rows below it."""
        return float(edges[int(np.searchsorted(cum, rows_before, side="left")) + 1]) if rows_before > 0 else lo

    n_test, n_valid = int(round(n * test_fraction)), int(round(n * valid_fraction))
    n_train = n - n_test - n_valid
    if n_train < 1:
        raise ValueError(f"{source}: {n} rows leave no training rows with the split fractions")
    if n_valid + n_test == 0:
        return {"train": (None, None), "valid": None, "test": None}
    train_end = cut(n_train)
    valid_end = cut(n_train + n_valid) if n_test else math.inf
    below = lambda edge: int(counts[edges[:-1] < edge].sum())  # noqa: E731  rows with timestamp < edge
    got = {"valid": below(valid_end) - below(train_end), "test": n - below(valid_end)}
    for name, wanted in (("valid", n_valid), ("test", n_test)):
        if wanted and not got[name]:
            warnings.warn(f"{source}: the temporal split leaves the {name} split empty (asked for {wanted} of {n} "
                          f"rows): rows of one timestamp stay together and only {int((counts > 0).sum())} distinct "
                          f"timestamp bins hold rows; give explicit data.valid_path / data.test_path", stacklevel=2)
    if n_test == 0:
        return {"train": (None, train_end), "valid": (train_end, None), "test": None}
    return {"train": (None, train_end), "valid": (train_end, valid_end) if n_valid else None,
            "test": (valid_end, None)}


class StreamingFit(EncoderFit):
    """Temporary: the one encoder fit plus per-format counts (replaced by the row-source fit pass)."""

    def __init__(self, schema: SchemaConfig, max_distinct_values: int = 2_000_000) -> None:
        super().__init__(schema, max_distinct_values)
        self.format_rows_: dict[str, int] = {}
        self.format_clicks_: dict[str, float] = {}

    def add(self, frame, formats, labels, source):  # type: ignore[override]
        super().add(frame, source)
        names, inverse = np.unique(formats.astype(str), return_inverse=True)
        for name, r, c in zip(names.tolist(), np.bincount(inverse, minlength=len(names)).tolist(),
                              np.bincount(inverse, weights=labels, minlength=len(names)).tolist()):
            self.format_rows_[name] = self.format_rows_.get(name, 0) + r
            self.format_clicks_[name] = self.format_clicks_.get(name, 0.0) + c


class ParquetBatchStream:
    """Encoded batches from a Parquet dataset split, with a bounded shuffle buffer.

    Args:
        dataset: the whole dataset (``open_dataset``).
        filter: Arrow expression selecting the split (``split_filter``), or None.
        columns: columns to read.
        encode: record-batch frame -> ``Batch`` (the pipeline's encoder; labels included for training).
        batch_size: rows per yielded batch (per rank under data parallelism).
        config: buffer and read sizes.
        num_rows: rows of the split over all ranks (counted once, for schedules and progress).
        format_rows: (K,) rows per format; format_clicks: (K,) clicks per format (training only).
        rank: this rank; world_size: ranks. Training streams read record batch k only on rank k mod P; scoring
            streams (``batches(None)``) read everything in file order.

    Example:
        >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
        >>> path = Path(tempfile.mkdtemp()) / "t.parquet"
        >>> pq.write_table(pa.table({"x": np.arange(10.0)}), path)
        >>> def encode(frame):
        ...     x = torch.tensor(frame["x"].to_numpy(), dtype=torch.float32).view(-1, 1)
        ...     n = len(frame)
        ...     return Batch(torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0, 1, dtype=torch.long), x,
        ...                  torch.zeros(n, dtype=torch.long))
        >>> stream = ParquetBatchStream(open_dataset([path]), None, ["x"], encode, 4,
        ...                             StreamingConfig(shuffle_buffer_rows=6, read_batch_rows=3), num_rows=10)
        >>> [len(b) for b in stream.batches(None)], sorted(torch.cat([b.dense for b in stream.batches(
        ...     torch.Generator().manual_seed(0))]).view(-1).tolist()) == list(np.arange(10.0))
        ([4, 4, 2], True)
    """

    def __init__(
        self,
        dataset: ds.Dataset,
        filter: Any,
        columns: list[str],
        encode: Callable[[pd.DataFrame], Batch],
        batch_size: int,
        config: StreamingConfig,
        num_rows: int,
        format_rows: np.ndarray | None = None,
        format_clicks: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset, self.filter, self.columns, self.encode = dataset, filter, columns, encode
        self.batch_size, self.config, self.num_rows = batch_size, config, num_rows
        self.format_rows = format_rows if format_rows is not None else np.zeros(0)
        self.format_clicks = format_clicks if format_clicks is not None else np.zeros(0)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.num_rows

    def frames(self, rng: np.random.Generator | None = None, shard: bool = False) -> Iterator[pd.DataFrame]:
        """Record batches of the split as DataFrames: fragments in ``rng`` order (file order without), and with
        ``shard`` only the record batches k with k mod world_size == rank."""
        fragments = list(self.dataset.get_fragments(filter=self.filter))
        if rng is not None:
            fragments = [fragments[i] for i in rng.permutation(len(fragments))]
        k = 0
        for fragment in fragments:
            scanner = ds.Scanner.from_fragment(
                fragment, columns=self.columns, filter=self.filter, batch_size=self.config.read_batch_rows,
                batch_readahead=0, fragment_readahead=0,  # one record batch at a time (memory bound)
                fragment_scan_options=_SCAN_OPTIONS,
            )
            for record_batch in scanner.to_batches():
                if record_batch.num_rows == 0:
                    continue
                mine = not shard or k % self.world_size == self.rank
                k += 1
                if mine:
                    yield record_batch.to_pandas()

    def batches(self, generator: torch.Generator | None, skip: int = 0) -> Iterator[Batch]:
        """One epoch of encoded batches; shuffled (and sharded by rank) when ``generator`` is given."""
        if generator is None:
            emitted = 0
            pending: list[Batch] = []
            rows = 0
            for frame in self.frames():
                pending.append(self.encode(frame))
                rows += len(pending[-1])
                if rows >= self.batch_size:
                    joined = _concat(pending)
                    cut = (rows // self.batch_size) * self.batch_size
                    for start in range(0, cut, self.batch_size):
                        if emitted >= skip:
                            yield joined.select(slice(start, start + self.batch_size))
                        emitted += 1
                    pending, rows = ([joined.select(slice(cut, rows))] if cut < rows else []), rows - cut
            if rows:
                if emitted >= skip:
                    yield _concat(pending)
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        perm_gen = torch.Generator().manual_seed(seed)
        # The shuffle buffer is allocated once (shuffle_buffer_rows + one record batch) and refilled in place, so
        # draining it makes no copy of the buffer and memory stays flat over any number of drains.
        store: Batch | None = None
        held = 0
        emitted = 0

        def drain(final: bool) -> Iterator[Batch]:
            nonlocal held, emitted
            assert store is not None
            order = torch.randperm(held, generator=perm_gen)  # (held,) the buffer's rows, shuffled
            keep = 0 if final else held % self.batch_size
            for start in range(0, held - keep, self.batch_size):
                if emitted >= skip:
                    yield store.select(order[start : min(start + self.batch_size, held - keep)])  # a copy
                emitted += 1
            if keep:  # the rows not emitted move to the front, in their shuffled order
                _write(store, 0, store.select(order[held - keep :]))
            held = keep

        for frame in self.frames(rng, shard=self.world_size > 1):
            batch = self.encode(frame)
            del frame
            if store is None:
                store = _allocate(batch, self.config.shuffle_buffer_rows + max(self.config.read_batch_rows, len(batch)))
            elif held + len(batch) > len(store):  # a record batch larger than read_batch_rows: grow once
                grown = _allocate(batch, held + len(batch))
                _write(grown, 0, store.select(slice(0, held)))
                store = grown
            _write(store, held, batch)
            held += len(batch)
            del batch
            if held >= self.config.shuffle_buffer_rows:
                yield from drain(final=False)
                _release_free_memory()
        if held:
            yield from drain(final=True)


def _allocate(like: Batch, rows: int) -> Batch:
    """An uninitialised batch of ``rows`` rows with the dtypes and trailing shapes of ``like``."""
    def empty(t: torch.Tensor) -> torch.Tensor:
        return torch.empty((rows, *t.shape[1:]), dtype=t.dtype)

    return Batch(cat_ids=empty(like.cat_ids), multi_ids=empty(like.multi_ids), dense=empty(like.dense),
                 format_ids=empty(like.format_ids), labels=None if like.labels is None else empty(like.labels))


def _write(store: Batch, at: int, part: Batch) -> None:
    """store[at : at + len(part)] = part, tensor by tensor."""
    end = at + len(part)
    store.cat_ids[at:end] = part.cat_ids
    store.multi_ids[at:end] = part.multi_ids
    store.dense[at:end] = part.dense
    store.format_ids[at:end] = part.format_ids
    if store.labels is not None:
        assert part.labels is not None
        store.labels[at:end] = part.labels


# Read column pages as record batches need them instead of pre-buffering whole row groups: decoding memory follows
# ``read_batch_rows`` more than the row-group size the files were written with (scanning the demo log's 131k-row
# row groups in 16k-row batches peaked at 94 MB of Arrow memory pre-buffered, 56 MB streamed).
_SCAN_OPTIONS = ds.ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True, buffer_size=1 << 20)


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Each shuffle-buffer drain frees a few hundred MB of tensors and Arrow-decoded frames of varying sizes; glibc keeps
    such pages in its arenas, so without a trim the resident size creeps up over millions of rows although the live
    data stays bounded.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    labels = None if parts[0].labels is None else torch.cat([p.labels for p in parts])  # type: ignore[misc]
    return Batch(
        cat_ids=torch.cat([p.cat_ids for p in parts]),
        multi_ids=torch.cat([p.multi_ids for p in parts]),
        dense=torch.cat([p.dense for p in parts]),
        format_ids=torch.cat([p.format_ids for p in parts]),
        labels=labels,
    )


def count_rows(dataset: ds.Dataset, filter: Any) -> int:
    """Rows of a split (from Parquet metadata when unfiltered)."""
    return int(dataset.count_rows(filter=filter))

