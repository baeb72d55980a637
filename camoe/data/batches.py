"""From rows to tensors: ``RowEncoder`` turns raw rows into a ``Batch``; ``BatchStream`` turns a row source into
batches for training (shuffled through a bounded buffer) or scoring (in file order).

Both the in-memory and the streamed path go through here; they differ only in the row source
(``camoe.data.sources``). A source that is already in memory is encoded once and its encoded rows are kept for the
next epochs; a streamed source is read and encoded again each epoch.

Shuffling: encoded chunks fill a buffer of ``shuffle_buffer_rows`` rows; when it is full its rows are drawn in a
random order (or with fixed shares per group of formats, ``balanced``) into batches, and the rows left over (fewer
than a batch) stay for the next fill. A chunk larger than the buffer (a frame in memory) is drawn whole, so rows in
memory get a full permutation each epoch. Files are read in a random order per epoch when the rows outnumber the
buffer.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from camoe.batch import Batch
from camoe.config import SchemaConfig
from camoe.data.columns import Rows, format_names, label_values
from camoe.data.encoders import FeatureEncoder, InputQuality
from camoe.data.sources import RowFilter, RowSource
from camoe.grouping import TaskLayout
from camoe.data.sampling import balanced_order

__all__ = ["BatchStream", "EncodedRows", "RowEncoder", "input_columns"]


@dataclass
class EncodedRows:
    """Encoded rows and what the encoder had to map on the way.

    Attributes:
        batch: the tensors.
        quality: out-of-vocabulary, missing and clipped counts per feature.
        missing_rows: feature -> (N,) bool, the rows whose value is missing (only features with a missing value).
    """

    batch: Batch
    quality: InputQuality
    missing_rows: dict[str, np.ndarray]


def input_columns(schema: SchemaConfig, labels: bool = True) -> list[str]:
    """The columns a model reads: its features (for a derived feature, the columns it is derived from), the ad
    format and, with ``labels``, the click."""
    cols = [name for f in schema.features for name in f.source_columns]
    if any(f.timed for f in schema.features) and schema.timestamp:
        cols.append(schema.timestamp)
    cols.append(schema.format)
    return list(dict.fromkeys(cols + ([schema.label] if labels else [])))


class RowEncoder:
    """Raw rows -> ``Batch``: features by the fitted encoder, the ad format's index in the task layout, the click.

    Args:
        encoder: fitted ``FeatureEncoder``.
        layout: the task layout (its formats give ``format_ids``).
        schema: label and format column names.

    Raises (on call):
        ValueError: missing columns, unknown formats (listing the known ones), labels outside {0, 1}, bad feature
            values; every message names ``source``.
    """

    def __init__(self, encoder: FeatureEncoder, layout: TaskLayout, schema: SchemaConfig) -> None:
        self.encoder, self.layout, self.schema = encoder, layout, schema

    def columns(self, labels: bool = True) -> list[str]:
        """Columns the encoder reads (``input_columns``)."""
        return input_columns(self.schema, labels)

    def __call__(self, rows: Rows, source: str = "data", labels: bool = True, history: bool = True) -> EncodedRows:
        """Encode ``rows``; ``history=False`` for the training rows themselves (derived count features count among
        them only, ``FeatureEncoder.transform``)."""
        schema = self.schema
        fmt = self.layout.format_index(format_names(rows, schema.format, source),
                                       where=f"{source} column '{schema.format}'")
        enc = self.encoder.transform(rows, source, history)
        batch = Batch(
            cat_ids=torch.from_numpy(enc.cat_ids),
            multi_ids=torch.from_numpy(enc.multi_ids),
            dense=torch.from_numpy(enc.dense),
            format_ids=torch.from_numpy(fmt),
            labels=torch.from_numpy(label_values(rows, schema.label, source)) if labels else None,
        )
        return EncodedRows(batch, enc.quality, enc.missing_rows)


class BatchStream:
    """Encoded batches of a row source.

    Args:
        source: where the rows come from.
        encode: chunk -> ``Batch`` (labels included for training).
        batch_size: rows per batch.
        columns: columns to read.
        where: the rows to keep (e.g. a split), or None.
        num_rows: rows after ``where`` (sets schedules and progress bars).
        shuffle_buffer_rows: rows mixed before batching when shuffling.
        format_rows, format_clicks: (K,) rows and clicks per ad format of the stream (task priors for training).
        balanced: (group of each format (K,) int64, target share per group (G,)); draws each buffer with those
            shares (``camoe.data.sampling.balanced_order``) instead of a permutation. None = permutation.

    Example:
        >>> from camoe.data.sources import FrameSource
        >>> def encode(frame):
        ...     x = torch.tensor(frame["x"].to_numpy(), dtype=torch.float32).view(-1, 1)
        ...     n = len(frame)
        ...     return Batch(torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0, 1, dtype=torch.long), x,
        ...                  torch.zeros(n, dtype=torch.long))
        >>> stream = BatchStream(FrameSource(pd.DataFrame({"x": np.arange(10.0)})), encode, 4, ["x"], num_rows=10)
        >>> [len(b) for b in stream.batches(None)]
        [4, 4, 2]
        >>> sorted(torch.cat([b.dense for b in stream.batches(torch.Generator().manual_seed(0))]).view(-1).tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    """

    def __init__(
        self,
        source: RowSource,
        encode: Callable[[pd.DataFrame], Batch],
        batch_size: int,
        columns: Sequence[str],
        where: RowFilter | None = None,
        num_rows: int | None = None,
        shuffle_buffer_rows: int = 262_144,
        format_rows: np.ndarray | None = None,
        format_clicks: np.ndarray | None = None,
        balanced: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.source, self.encode, self.batch_size = source, encode, batch_size
        self.columns, self.where = list(columns), where
        self.num_rows = source.count_rows() if num_rows is None else num_rows
        self.shuffle_buffer_rows = shuffle_buffer_rows
        self.format_rows = format_rows if format_rows is not None else np.zeros(0)
        self.format_clicks = format_clicks if format_clicks is not None else np.zeros(0)
        self.balanced = balanced
        self._cache: list[Batch] | None = None  # encoded chunks of an in-memory source

    def __len__(self) -> int:
        return self.num_rows

    def encoded_chunks(self, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """Every chunk encoded (kept after the first pass for an in-memory source)."""
        if self._cache is not None:
            yield from self._cache
            return
        keep: list[Batch] | None = [] if self.source.in_memory else None
        for frame in self.source.chunks(self.columns, self.where, rng):
            batch = self.encode(frame)
            del frame
            if keep is not None:
                keep.append(batch)
            yield batch
        if keep is not None:
            self._cache = keep

    def batches(self, generator: torch.Generator | None = None, skip: int = 0) -> Iterator[Batch]:
        """One epoch of batches; shuffled when ``generator`` is given (else in file order); the first ``skip``
        batches are dropped (resuming inside an epoch)."""
        if generator is None:
            yield from _skip(self._in_order(), skip)
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        yield from _skip(self._shuffled(np.random.default_rng(seed), torch.Generator().manual_seed(seed)), skip)

    def _in_order(self) -> Iterator[Batch]:
        pending: list[Batch] = []
        rows = 0
        for batch in self.encoded_chunks():
            pending.append(batch)
            rows += len(batch)
            if rows >= self.batch_size:
                joined = _concat(pending)
                cut = (rows // self.batch_size) * self.batch_size
                for start in range(0, cut, self.batch_size):
                    yield joined.select(slice(start, start + self.batch_size))
                pending, rows = ([joined.select(slice(cut, rows))] if cut < rows else []), rows - cut
        if rows:
            yield _concat(pending)

    def _order(self, store: Batch, held: int, generator: torch.Generator) -> torch.Tensor:
        """The order in which the buffer's ``held`` rows are drawn: a permutation, or a balanced draw."""
        if self.balanced is None:
            return torch.randperm(held, generator=generator)  # (held,)
        group_of_format, shares = self.balanced
        groups = torch.as_tensor(group_of_format)[store.format_ids[:held]]  # (held,)
        return balanced_order(groups, torch.as_tensor(shares), held, generator)

    def _shuffled(self, rng: np.random.Generator, generator: torch.Generator) -> Iterator[Batch]:
        # The buffer is allocated once (shuffle_buffer_rows + one chunk) and refilled in place, so memory stays flat
        # over any number of drains; a chunk at least as large as the buffer is drawn from directly (no copy).
        store: Batch | None = None
        held = 0
        # files in a random order only when the rows outnumber the buffer; otherwise the buffer mixes them all, and
        # reading in file order lets a streamed split draw exactly the batches of the same rows held in memory
        for chunk in self.encoded_chunks(rng if self.num_rows > self.shuffle_buffer_rows else None):
            if held == 0 and len(chunk) >= self.shuffle_buffer_rows:
                carry = yield from self._drain(chunk, len(chunk), generator)
            else:
                if store is None or held + len(chunk) > len(store):
                    grown = _allocate(chunk, max(self.shuffle_buffer_rows + len(chunk), held + len(chunk)))
                    if held:
                        _write(grown, 0, store.select(slice(0, held)))  # type: ignore[union-attr]
                    store = grown
                _write(store, held, chunk)
                held += len(chunk)
                if held < self.shuffle_buffer_rows:
                    continue
                carry = yield from self._drain(store, held, generator)
                held = 0
            _release_free_memory()
            if carry is not None:  # rows drawn but fewer than a batch: they wait for the next fill
                if store is None or len(carry) > len(store):
                    store = _allocate(carry, self.shuffle_buffer_rows + len(carry))
                _write(store, 0, carry)
                held = len(carry)
        if held:
            assert store is not None
            order = self._order(store, held, generator)
            for start in range(0, len(order), self.batch_size):
                yield store.select(order[start : start + self.batch_size])

    def _drain(self, store: Batch, held: int, generator: torch.Generator) -> Any:
        """Yield whole batches of the buffer's rows in a random order; return the rows left over (a copy) or None."""
        order = self._order(store, held, generator)
        whole = (len(order) // self.batch_size) * self.batch_size
        for start in range(0, whole, self.batch_size):
            yield store.select(order[start : start + self.batch_size])  # a copy
        return store.select(order[whole:]) if whole < len(order) else None


def _skip(batches: Iterator[Batch], skip: int) -> Iterator[Batch]:
    for i, batch in enumerate(batches):
        if i >= skip:
            yield batch


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


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Each buffer drain frees tensors and Arrow-decoded frames of varying sizes; glibc keeps such pages in its arenas,
    so without a trim the resident size creeps up over millions of rows although the live data stays bounded.
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
