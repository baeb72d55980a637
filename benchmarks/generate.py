"""Synthetic log generation speed: rows per minute, and Parquet write time, for a few sizes.

Run: .venv/bin/python benchmarks/generate.py [--rows 1000000 4000000]
Prints one line per size; the target is >= 1M rows per minute on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from camoe.data.synthetic import SyntheticConfig, generate_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            t0 = time.perf_counter()
            frame = generate_log(SyntheticConfig(rows=rows, seed=0))
            t1 = time.perf_counter()
            frame.to_parquet(Path(tmp) / "log.parquet", index=False)
            t2 = time.perf_counter()
            print(f"rows={rows:,} generate={t1 - t0:.1f}s ({rows / (t1 - t0) * 60:,.0f} rows/min) "
                  f"parquet_write={t2 - t1:.1f}s total={rows / (t2 - t0) * 60:,.0f} rows/min", flush=True)


if __name__ == "__main__":
    main()
