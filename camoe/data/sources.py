"""Row sources: where rows come from, separated from what is done with them.

Fitting, training, evaluation, calibration and batch scoring all read rows through one small protocol,
``RowSource``: a source hands out its rows as a sequence of pandas chunks. There are two kinds:

* ``FrameSource`` — rows already in memory (a DataFrame, or a CSV read whole): one chunk. Consumers may keep what
  they derive from it (``in_memory``), e.g. the encoded training rows across epochs.
* ``ParquetSource`` — a Parquet file, folder or glob read record batch by record batch (``read_batch_rows`` rows),
  never whole: memory does not grow with the number of rows.

The in-memory path is the streamed path with one chunk; nothing downstream branches on the kind of source.

A ``RowFilter`` selects rows while a chunk is read (the train / valid / test split, ``camoe.data.split``); a
Parquet source applies it to the record batch before converting it to pandas, so rows outside the split cost only
their decoding. Every chunk knows the position of its first row in the source's file order, so filters that depend
on the row position (the random split) agree between a frame and the same rows read from Parquet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from camoe.data.readers import check_parquet_files, expand_paths

__all__ = ["FilteredSource", "FrameSource", "ParquetSource", "RowFilter", "RowSource", "ValueFilter", "is_parquet"]

# Read column pages as record batches need them instead of pre-buffering whole row groups: decoding memory follows
# ``read_batch_rows`` more than the row-group size the files were written with (scanning the demo log's 131k-row
# row groups in 16k-row batches peaked at 94 MB of Arrow memory pre-buffered, 56 MB streamed).
_SCAN_OPTIONS = ds.ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True, buffer_size=1 << 20)


@runtime_checkable
class RowFilter(Protocol):
    """Which rows of a chunk to keep.

    Attributes:
        column: the column the decision needs (read even when the consumer did not ask for it), or None when only
            row positions matter.
    """

    column: str | None

    def keep(self, values: pd.Series, start: int, source: str) -> np.ndarray:
        """(n,) bool for the n rows of a chunk whose first row sits at position ``start`` of the source.

        Args:
            values: the chunk's ``column`` (n values; n zeros when ``column`` is None).
            start: position of the chunk's first row in the source (file order).
            source: names the rows in errors.
        """
        ...


class ValueFilter:
    """Rows whose ``column`` holds one of ``values`` (categorical rule: ``camoe.data.columns.categorical_strings``),
    e.g. one ad format's rows for its single-task model.

    Example:
        >>> ValueFilter("format", {"audio"}).keep(pd.Series([" audio", "video"]), 0, "rows").tolist()
        [True, False]
    """

    def __init__(self, column: str, values: set[str]) -> None:
        self.column: str | None = column
        self.values = set(values)

    def keep(self, values: pd.Series, start: int, source: str) -> np.ndarray:
        from camoe.data.columns import categorical_strings

        strings, _ = categorical_strings(values if values.dtype != object else values.to_numpy(dtype=object),
                                         str(self.column), source)
        return np.isin(strings, list(self.values))


class RowSource(Protocol):
    """Rows handed out as pandas chunks.

    Attributes:
        name: what error messages call these rows (a file, a folder, "frame").
        in_memory: True when the rows are already held in memory (one chunk), so derived data may be kept.
    """

    name: str
    in_memory: bool

    @property
    def columns(self) -> list[str]:
        """Column names."""
        ...

    def count_rows(self) -> int:
        """Number of rows (before any filter)."""
        ...

    def chunks(
        self, columns: Sequence[str] | None = None, where: RowFilter | None = None,
        rng: np.random.Generator | None = None,
    ) -> Iterator[pd.DataFrame]:
        """The rows as DataFrames, in file order (or, with ``rng``, files in a random order), filtered by ``where``;
        only ``columns`` (all when None; ``where.column`` is added when needed). Empty chunks are skipped."""
        ...

    def arrow_type(self, column: str) -> pa.DataType | None:
        """The stored type of a column when the source has one (Parquet), else None."""
        ...


class FrameSource:
    """Rows of a DataFrame (one chunk).

    Args:
        frame: the rows; not copied (chunks are slices or filtered copies, never modified).
        name: names the rows in errors.

    Example:
        >>> src = FrameSource(pd.DataFrame({"ts": [3, 1, 2], "x": ["a", "b", "c"]}), "log.csv")
        >>> [len(c) for c in src.chunks(["x"])], src.count_rows()
        ([3], 3)
    """

    in_memory = True

    def __init__(self, frame: pd.DataFrame, name: str = "frame") -> None:
        self.frame = frame
        self.name = name

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def count_rows(self) -> int:
        return len(self.frame)

    def arrow_type(self, column: str) -> pa.DataType | None:
        return None

    def chunks(
        self, columns: Sequence[str] | None = None, where: RowFilter | None = None,
        rng: np.random.Generator | None = None,
    ) -> Iterator[pd.DataFrame]:
        frame = self.frame
        wanted = list(dict.fromkeys(columns)) if columns is not None else []
        missing = [c for c in wanted + ([where.column] if where is not None and where.column else [])
                   if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.name}: missing column(s) {sorted(set(missing))}; columns present: {self.columns}")
        if where is not None:
            values = frame[where.column] if where.column is not None else pd.Series(np.zeros(len(frame)))
            mask = where.keep(values, 0, self.name)
            if not mask.all():
                frame = frame.loc[mask]
        if columns is not None:
            frame = frame[wanted]
        if len(frame):
            yield frame


class ParquetSource:
    """Rows of Parquet files read in record batches (bounded memory).

    Args:
        path: a Parquet file, a folder of Parquet files, or a glob.
        read_batch_rows: rows per record batch (and per chunk).
        name: names the rows in errors (default: ``path``).

    Raises:
        FileNotFoundError: nothing matches ``path``.
        ValueError: a file is not Parquet, is empty or unreadable, or its columns differ from the first file's
            (naming the file).

    Memory: one decoded record batch (Arrow decodes whole row groups; files written with row groups of ~100k rows,
    as ``camoe generate --shards`` does, keep that small).
    """

    in_memory = False

    def __init__(self, path: str | Path, read_batch_rows: int = 16_384, name: str | None = None) -> None:
        files = expand_paths(path)
        for file in files:
            if not is_parquet(file):
                raise ValueError(f"{file}: not a Parquet file (.parquet / .pq); streaming reads Parquet only, convert "
                                 f"CSV to Parquet or read it into memory")
        check_parquet_files(files)
        self.files = files
        self.name = name or str(path)
        self.read_batch_rows = read_batch_rows
        self.dataset = ds.dataset([str(f) for f in files], format="parquet")
        self._fragments = list(self.dataset.get_fragments())
        sizes = [f.metadata.num_rows for f in self._fragments]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist() if sizes else []

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.schema.names)

    def count_rows(self) -> int:
        return int(self.dataset.count_rows())

    def arrow_type(self, column: str) -> pa.DataType | None:
        return self.dataset.schema.field(column).type

    def chunks(
        self, columns: Sequence[str] | None = None, where: RowFilter | None = None,
        rng: np.random.Generator | None = None,
    ) -> Iterator[pd.DataFrame]:
        wanted = list(dict.fromkeys(columns)) if columns is not None else self.columns
        missing = [c for c in wanted if c not in self.columns]
        if missing:
            raise ValueError(f"{self.name}: missing column(s) {missing}; columns present: {self.columns}")
        read = wanted + ([where.column] if where is not None and where.column and where.column not in wanted else [])
        order = range(len(self._fragments)) if rng is None else rng.permutation(len(self._fragments)).tolist()
        for i in order:
            scanner = ds.Scanner.from_fragment(
                self._fragments[i], columns=read, batch_size=self.read_batch_rows,
                batch_readahead=0, fragment_readahead=0,  # one record batch at a time (memory bound)
                fragment_scan_options=_SCAN_OPTIONS,
            )
            start = self._offsets[i]
            for record_batch in scanner.to_batches():
                n = record_batch.num_rows
                if n and where is not None:
                    values = (record_batch.column(where.column).to_pandas() if where.column is not None
                              else pd.Series(np.zeros(n)))
                    mask = where.keep(values, start, f"{self.name} ({self._fragments[i].path})")
                    if not mask.all():
                        record_batch = record_batch.filter(pa.array(mask))
                start += n
                if record_batch.num_rows:
                    frame = record_batch.to_pandas()
                    yield frame[wanted] if len(read) != len(wanted) else frame


class FilteredSource:
    """The rows of ``source`` that ``where`` keeps (e.g. one split of a Parquet log), itself a ``RowSource``.

    Args:
        source: the rows.
        where: the filter applied to every chunk.
        name: names these rows in errors, e.g. "valid split of logs/".
        num_rows: rows kept, when known (e.g. from the split plan); else counted by reading.
    """

    def __init__(self, source: RowSource, where: RowFilter, name: str, num_rows: int | None = None) -> None:
        self.source, self.where, self.name, self._rows = source, where, name, num_rows
        self.in_memory = source.in_memory

    @property
    def columns(self) -> list[str]:
        return self.source.columns

    def count_rows(self) -> int:
        if self._rows is None:
            self._rows = sum(len(c) for c in self.source.chunks([], self.where))
        return self._rows

    def arrow_type(self, column: str) -> pa.DataType | None:
        return self.source.arrow_type(column)

    def chunks(
        self, columns: Sequence[str] | None = None, where: RowFilter | None = None,
        rng: np.random.Generator | None = None,
    ) -> Iterator[pd.DataFrame]:
        if where is not None:
            raise ValueError(f"{self.name}: already filtered; filter the underlying source instead")
        return self.source.chunks(columns, self.where, rng)


def is_parquet(path: str | Path) -> bool:
    """Whether a file name ends in .parquet or .pq."""
    return str(path).endswith((".parquet", ".pq"))
