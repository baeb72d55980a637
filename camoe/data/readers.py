"""Reading impression logs: CSV, Parquet (file, folder or glob), or a pandas DataFrame, plus the public logs'
own formats (``open_bandit``, ``ipinyou_fm``, see ``camoe.data.datasets``).

Errors name the file: a malformed CSV line gives its line number, an empty or corrupt Parquet file is refused.
"""

from __future__ import annotations

import glob
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

__all__ = ["check_parquet_files", "expand_paths", "read_table"]

_CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def expand_paths(path: str | Path) -> list[Path]:
    """A file, a folder (its Parquet or CSV files) or a glob -> sorted list of files.

    Raises:
        FileNotFoundError: nothing matches.
    """
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    elif Path(text).is_dir():
        suffixes = _PARQUET_SUFFIXES + _CSV_SUFFIXES
        files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.name.endswith(suffixes))
    elif Path(text).is_file():
        files = [Path(text)]
    else:
        raise FileNotFoundError(f"no such file or folder: {text}")
    if not files:
        raise FileNotFoundError(f"{text}: no CSV or Parquet files found")
    return files


def _check_field_counts(file: Path, sep: str, width: int) -> None:
    """Refuse rows with fewer (or more) fields than the header, which pandas would pad with NaN silently.

    One pass with pyarrow's CSV parser (only the first column is converted and kept); quoted values may hold
    newlines. Files pyarrow cannot parse (e.g. not UTF-8) are left to pandas and its errors.

    Raises:
        ValueError: names the file, the count of bad rows, and the first ones with their line number (the header is
            line 1; a quoted value holding a newline counts as one line) and field counts.
    """
    import pyarrow.csv as pacsv

    bad: list[Any] = []

    def on_bad_row(row: Any) -> str:
        bad.append(row)
        return "skip"

    try:
        names = [f"c{i}" for i in range(width)]  # own names: pandas and Arrow name blank header cells differently
        pacsv.read_csv(  # not open_csv: its read-ahead thread can abort the interpreter at exit after a bad row
            file, read_options=pacsv.ReadOptions(use_threads=False, column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True, invalid_row_handler=on_bad_row),
            convert_options=pacsv.ConvertOptions(include_columns=names[:1], column_types={names[0]: pa.string()}),
        )
    except (pa.ArrowException, UnicodeDecodeError, OSError):
        return  # pandas reads the file next and reports what it finds
    if bad:
        rows = [(r.number, r.actual_columns, r.expected_columns, r.text) for r in bad[:3]]
        count = len(bad)
        bad.clear()  # drop the pyarrow row objects before raising
        first = "; ".join(f"line {number}: {actual} fields, expected {expected} ({text[:60]!r})"
                          for number, actual, expected, text in rows)
        raise ValueError(f"{file}: malformed CSV: {count} rows do not have one field per header column; {first}")


@contextmanager
def _csv_errors(file: Path) -> Iterator[None]:
    """Turn pandas / codec / IO failures while reading ``file`` into ValueError naming the file."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise ValueError(f"{file}: the CSV file is empty (no header, no rows)") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{file}: malformed CSV: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{file}: not UTF-8 text ({err.reason}); save it as UTF-8 or pass reader_options "
                         f"{{encoding: latin-1}}") from None
    except TypeError as err:
        raise ValueError(f"{file}: invalid CSV reader option ({err}); see pandas.read_csv") from None
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{file}: cannot read ({type(err).__name__}: {err})") from None


def _read_csv(file: Path, options: dict[str, Any], text_columns: list[str]) -> pd.DataFrame:
    # Only empty cells are missing: "NA", "null", "None" stay literal category values. Columns in text_columns
    # (categorical features) are read as text so "007" stays "007" and large integer ids keep every digit.
    opts = {"sep": "\t" if file.name.endswith(".tsv") else ",", "keep_default_na": False, "na_values": [""], **options}
    probe = {k: v for k, v in opts.items() if k in ("sep", "encoding", "compression", "quotechar", "delimiter")}
    with _csv_errors(file):
        names = pd.read_csv(file, nrows=1, header=None, dtype=str, keep_default_na=False, **probe).iloc[0].tolist()
        duplicated = sorted({n for n in names if n and names.count(n) > 1})
        if duplicated and "names" not in options:
            raise ValueError(f"{file}: the header repeats column(s) {duplicated}; columns are matched by name, so "
                             f"each must appear once")
        if text_columns and "dtype" not in options:
            opts["dtype"] = {c: str for c in text_columns if c in names}
        if set(options) <= {"sep"} and len(opts["sep"]) == 1:
            _check_field_counts(file, opts["sep"], len(names))  # names: the header's cells, read once above
        frame = pd.read_csv(file, **opts)
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed and frame[unnamed].isna().all().all():
        frame = frame.drop(columns=unnamed)  # trailing commas
    return frame


def check_parquet_files(files: list[Path]) -> list[str]:
    """Refuse empty or unreadable Parquet files and files whose columns differ from the first one's.

    Returns:
        The column names of the first file.

    Raises:
        ValueError: naming the file (and the missing / extra columns).
    """
    import pyarrow.parquet as pq

    names: list[str] | None = None
    first = files[0] if files else None
    for file in files:
        if file.stat().st_size == 0:
            raise ValueError(f"{file}: the Parquet file is empty (0 bytes)")
        try:
            file_names = pq.read_schema(file).names
        except Exception as err:  # noqa: BLE001 - any failure means the footer is unreadable
            raise ValueError(f"{file}: not a readable Parquet file ({err})") from None
        if names is None:
            names, first = file_names, file
        elif set(file_names) != set(names):
            raise ValueError(f"{file}: columns differ from {first}: missing {sorted(set(names) - set(file_names))}, "
                             f"extra {sorted(set(file_names) - set(names))}")
    return names or []


def _read_parquet(files: list[Path], options: dict[str, Any]) -> pd.DataFrame:
    unknown = sorted(set(options) - {"columns"})
    if unknown:
        raise ValueError(f"Parquet reader options {unknown} are not supported; accepted: ['columns']")
    check_parquet_files(files)
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet")
        table = dataset.to_table(columns=options.get("columns"))
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{files[0].parent}: cannot read the Parquet files ({str(err).splitlines()[0]})") from None
    return table.to_pandas()


def read_table(
    source: str | Path | pd.DataFrame, reader: str = "auto", text_columns: list[str] | None = None, **options: Any
) -> pd.DataFrame:
    """Read an impression log into a DataFrame.

    Args:
        source: DataFrame (returned as a copy), CSV/Parquet file, folder of such files, or glob.
        reader: ``auto`` (by suffix), ``csv``, ``parquet``, ``open_bandit`` or ``ipinyou_fm``.
        text_columns: CSV columns to read as text (the schema's categorical features).
        options: passed to the reader (``pandas.read_csv`` keywords for CSV; ``columns`` for Parquet).

    Returns:
        All rows of all matched files, columns by name.

    Raises:
        FileNotFoundError: no file matches.
        ValueError: empty file, malformed CSV line (with its line number), corrupt Parquet, unknown reader.
    """
    if isinstance(source, pd.DataFrame):
        return source.copy()
    if reader in ("open_bandit", "ipinyou_fm"):
        from camoe.data.datasets import READERS

        return READERS[reader](source, **options)
    files = expand_paths(source)
    if reader == "auto":
        kinds = {"parquet" if f.name.endswith(_PARQUET_SUFFIXES) else "csv" for f in files}
        if len(kinds) > 1:
            raise ValueError(f"{source}: mixes CSV and Parquet files; point at one kind or set data.reader")
        reader = kinds.pop()
    if reader == "parquet":
        return _read_parquet(files, options)
    if reader == "csv":
        frames = [_read_csv(f, options, text_columns or []) for f in files]
        for f, frame in zip(files[1:], frames[1:]):
            if set(frame.columns) != set(frames[0].columns):
                raise ValueError(f"{f}: columns differ from {files[0]}: missing "
                                 f"{sorted(set(frames[0].columns) - set(frame.columns))}, extra "
                                 f"{sorted(set(frame.columns) - set(frames[0].columns))}")
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    raise ValueError(f"unknown reader '{reader}'; choose auto, csv, parquet, open_bandit or ipinyou_fm")
