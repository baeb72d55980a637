"""Reading impression logs: CSV, Parquet (file, folder or glob), or a pandas DataFrame, plus the public logs'
own formats (``open_bandit``, ``ipinyou_fm``, see ``camoe.data.datasets``).

Errors name the file: a malformed CSV line gives its line number, an empty or corrupt Parquet file is refused.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

__all__ = ["expand_paths", "read_table"]

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
        files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.name.endswith(_PARQUET_SUFFIXES))
        if not files:
            files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.name.endswith(_CSV_SUFFIXES))
    elif Path(text).is_file():
        files = [Path(text)]
    else:
        raise FileNotFoundError(f"no such file or folder: {text}")
    if not files:
        raise FileNotFoundError(f"{text}: no CSV or Parquet files found")
    return files


def _read_csv(file: Path, options: dict[str, Any]) -> pd.DataFrame:
    opts = {"sep": "\t" if file.name.endswith(".tsv") else ",", **options}
    try:
        frame = pd.read_csv(file, **opts)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{file}: the CSV file is empty (no header, no rows)") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{file}: malformed CSV: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{file}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed and frame[unnamed].isna().all().all():
        frame = frame.drop(columns=unnamed)  # trailing commas
    return frame


def _read_parquet(files: list[Path], options: dict[str, Any]) -> pd.DataFrame:
    for file in files:
        if file.stat().st_size == 0:
            raise ValueError(f"{file}: the Parquet file is empty (0 bytes)")
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet")
        table = dataset.to_table(columns=options.get("columns"))
    except (pa.ArrowInvalid, OSError) as err:
        bad = _first_bad_parquet(files)
        raise ValueError(f"{bad or files[0]}: not a readable Parquet file ({err})") from None
    return table.to_pandas()


def _first_bad_parquet(files: list[Path]) -> Path | None:
    import pyarrow.parquet as pq

    for file in files:
        try:
            pq.ParquetFile(file).metadata  # noqa: B018 - reading the footer is the check
        except Exception:  # noqa: BLE001 - any failure marks this file as the corrupt one
            return file
    return None


def read_table(source: str | Path | pd.DataFrame, reader: str = "auto", **options: Any) -> pd.DataFrame:
    """Read an impression log into a DataFrame.

    Args:
        source: DataFrame (returned as a copy), CSV/Parquet file, folder of such files, or glob.
        reader: ``auto`` (by suffix), ``csv``, ``parquet``, ``open_bandit`` or ``ipinyou_fm``.
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
        frames = [_read_csv(f, options) for f in files]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    raise ValueError(f"unknown reader '{reader}'; choose auto, csv, parquet, open_bandit or ipinyou_fm")
