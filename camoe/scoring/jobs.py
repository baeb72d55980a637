"""Batch jobs over a row source through the one ``Scorer``: evaluation tables and prediction files.

Both read the source chunk by chunk (one chunk for rows in memory, record batches for Parquet), so memory does not
grow with the rows: evaluation accumulates into ``BinnedMetrics`` (exact metrics up to ``exact_max_rows`` rows,
score histograms beyond), predictions are appended to the output file chunk by chunk.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from camoe.data.encoders import InputQuality
from camoe.data.sources import RowFilter, RowSource, ValueFilter
from camoe.evaluation.binned import MANTISSA_BITS, BinnedMetrics
from camoe.scoring.scorer import Scorer

__all__ = ["NEAR_CONSTANT_SPREAD", "evaluate_source", "true_probabilities", "write_predictions"]

# a task whose pCTR spread (p99 - p1) / p50 over its rows is below this is flagged as a near-constant model
NEAR_CONSTANT_SPREAD = 0.01


def true_probabilities(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """(N,) float64 true click probabilities of a synthetic log.

    Raises:
        ValueError: values outside [0, 1] or missing (naming the column and ``source``).
    """
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((values >= 0) & (values <= 1))
    if bad.any():
        raise ValueError(f"{source}: true_prob column '{column}' must hold probabilities in [0, 1]; "
                         f"{int(bad.sum())} rows do not (e.g. {frame[column][bad].astype(str).head(3).tolist()})")
    return values


def evaluate_source(
    scorer: Scorer | Mapping[str, Scorer],
    source: RowSource,
    split: str,
    where: RowFilter | None = None,
    attributes: dict[str, dict[str, str]] | None = None,
    exact_max_rows: int = 262_144,
    name: str | None = None,
) -> dict[str, Any]:
    """Per-format, per-task, per-attribute (e.g. per-modality) and macro metrics of labelled rows.

    Args:
        scorer: the model's scorer; or, for one model per format, format -> that format's scorer (each scores
            only its format's rows; the tasks are the formats).
        source: labelled rows; ``where`` selects a split of them (one model only).
        split: split name used in warnings and the result.
        attributes: format -> attributes; one section per attribute.
        exact_max_rows: rows kept for exact metrics before switching to score histograms (``BinnedMetrics``).
        name: names the rows in errors (default ``"<split> split of <source>"`` when filtered, else the source).

    Returns:
        ``evaluate_groups``-shaped tables plus ``split``, ``oov`` (rows mapped to out-of-vocabulary per feature),
        ``input_quality`` (rows, out-of-vocabulary, missing and clipped counts), ``metric_precision``,
        ``pctr_quantiles`` and ``warnings`` (near-constant tasks) per task, and ``plots`` (reliability points per
        task, pCTR histograms per format: the data of ``report.html``).

    Raises:
        ValueError: rows that fail validation, non-finite scores, true probabilities outside [0, 1] (naming the
            rows).
    """
    if isinstance(scorer, Mapping):  # one model per format: each scores its format's rows, a task per format
        if where is not None:
            raise ValueError("evaluate_source: per-format scorers take a source already cut to the split")
        schema = next(iter(scorer.values())).schema
        parts = [(s, ValueFilter(schema.format, {f})) for f, s in scorer.items()]
        formats = tuple(scorer)
        format_to_task, tasks = {f: f for f in formats}, formats
    else:
        schema, parts = scorer.schema, [(scorer, where)]
        formats, format_to_task, tasks = scorer.layout.formats, scorer.layout.format_to_task, scorer.layout.tasks
    label = name or (f"{split} split of {source.name}" if where is not None else source.name)
    tp = schema.true_prob
    with_tp = bool(tp) and tp in source.columns
    if tp and not with_tp:
        warnings.warn(f"{label}: true_prob column '{tp}' (schema.true_prob) not found; no oracle metrics",
                      stacklevel=2)
    user = schema.user
    if user and user not in source.columns:
        raise ValueError(f"{label}: user column '{user}' (schema.user, for GAUC) not found; columns: {source.columns}")
    acc = BinnedMetrics(formats, with_true_prob=with_tp, exact_max_rows=exact_max_rows, with_groups=bool(user))
    quality = InputQuality()
    for part, part_where in parts:
        to_global = np.array([formats.index(f) if f in formats else -1 for f in part.layout.formats])
        columns = list(dict.fromkeys(part.rows.columns(labels=True) + ([tp] if with_tp else []) + ([user] if user else [])))
        for chunk in source.chunks(columns, part_where):
            scores = part.score(chunk, label, labels=True)
            assert scores.labels is not None
            acc.update(to_global[scores.format_ids], scores.labels, scores.pctr,
                       true_probabilities(chunk, tp, label) if with_tp else None, source=label,
                       groups=chunk[user].to_numpy(dtype=object) if user else None)
            quality.add(scores.quality)
    result = acc.evaluate(format_to_task, tasks, split, group_attributes=attributes)
    result["pctr_quantiles"], result["warnings"] = {}, []
    for task in tasks:
        p1, p50, p99 = acc.quantiles([f for f, t in format_to_task.items() if t == task], (0.01, 0.5, 0.99))
        if np.isnan(p50):
            continue
        result["pctr_quantiles"][task] = {"p1": p1, "p50": p50, "p99": p99}
        spread = (p99 - p1) / p50 if p50 > 0 else 0.0
        if result["tasks"][task]["rows"] >= 100 and spread < NEAR_CONSTANT_SPREAD:
            message = (f"{label}: task '{task}' scores a near-constant pCTR (p1 {p1:.4g}, p99 {p99:.4g}: a spread of "
                       f"{spread:.2%} of the median): the model does not rank its rows; check train.weight_decay, "
                       f"train.learning_rate and the training log")
            result["warnings"].append(message)
            warnings.warn(message, stacklevel=2)
    edges = np.geomspace(1e-5, 1.0, 41)
    result["plots"] = {
        "reliability": {task: acc.reliability([f for f, t in format_to_task.items() if t == task])
                        for task in tasks if task in result["pctr_quantiles"]},
        "pctr_histogram": {fmt: [edges.tolist(), *acc.histogram([fmt], edges)] for fmt in result["formats"]},
    }
    result["split"] = split
    result["oov"] = dict(quality.out_of_vocabulary)
    result["input_quality"] = quality.to_dict(nonzero=True)
    result["metric_precision"] = (f"score histograms, relative pCTR precision 2^-{MANTISSA_BITS}" if acc.binned
                                  else "exact (per row)")
    return result


def write_predictions(
    scorer: Scorer, source: RowSource, output: str | Path, keep: list[str] | None = None,
) -> tuple[int, InputQuality]:
    """Score every row and write ``row, format, task, pctr`` (plus ``keep`` columns) to CSV or Parquet, chunk by
    chunk.

    Kept columns take their stored type from a Parquet source, so a column whose pandas type varies between record
    batches (an integer column with gaps) is written with one type.

    Returns:
        (rows written, input-quality counts).

    Raises:
        ValueError: a ``keep`` column is missing, or rows fail validation (naming the source).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    keep = list(keep or [])
    missing = [c for c in keep if c not in source.columns]
    if missing:
        raise ValueError(f"{source.name}: --keep columns {missing} not found; columns: {source.columns}")
    layout = scorer.layout
    formats, tasks = np.array(layout.formats, dtype=object), np.array(layout.tasks, dtype=object)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    written, writer, quality = 0, None, InputQuality()
    kept_types = {c: source.arrow_type(c) for c in keep}
    try:
        for chunk in source.chunks(list(dict.fromkeys(scorer.rows.columns(labels=False) + keep))):
            scores = scorer.score(chunk, source.name)
            quality.add(scores.quality)
            part = pd.DataFrame({"row": np.arange(written, written + len(chunk)), "format": formats[scores.format_ids],
                                 "task": tasks[scores.task_ids], "pctr": scores.pctr})
            if out.suffix == ".parquet":
                table = pa.Table.from_pandas(part, preserve_index=False)
                for col in keep:
                    table = table.append_column(col, pa.array(chunk[col], type=kept_types[col], from_pandas=True))
                writer = writer or pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
            else:
                for col in keep:
                    part[col] = chunk[col].to_numpy()
                part.to_csv(out, mode="a" if written else "w", header=not written, index=False)
            written += len(chunk)
    finally:
        if writer is not None:
            writer.close()
    if written == 0:  # no rows: an empty file with the header, as a reader expects
        empty = pd.DataFrame(columns=["row", "format", "task", "pctr", *keep])
        empty.to_parquet(out, index=False) if out.suffix == ".parquet" else empty.to_csv(out, index=False)
    return written, quality
