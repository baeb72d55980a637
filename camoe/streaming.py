"""Train, evaluate and score from Parquet in record batches (``data.streaming.enabled: true``).

The same ``CTRPipeline`` (encoder, task layout, model, artifact) as the in-memory path; only the data path differs:
the temporal split is a timestamp filter (``camoe.data.streaming.temporal_bounds``), the encoder is fitted in one
streaming pass over the train split, and training, validation, evaluation and scoring read record batches through
``ParquetBatchStream``. Under data parallelism (``torchrun``) rank 0 fits the encoder and broadcasts it; each rank
trains on its own record batches.

Memory: the shuffle buffer, one record batch, the model and the vocabularies while training; validation and
evaluation score one record batch at a time into per-format score histograms (``camoe.evaluation.binned``), so no
per-row array of a split is kept and memory does not grow with the number of rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from camoe.config import ConfigError, RunConfig, resolve_path
from camoe.data.readers import expand_paths
from camoe.data.streaming import (
    _SCAN_OPTIONS,
    ParquetBatchStream,
    StreamingFit,
    count_rows,
    open_dataset,
    split_filter,
    temporal_bounds,
)
from camoe.batch import Batch
from camoe.evaluation.binned import MANTISSA_BITS, BinnedMetrics
from camoe.evaluation.metrics import UndefinedMetricWarning, own_task_scores
from camoe.grouping import build_task_layout
from camoe.model import build_model
from camoe.pipeline import CTRPipeline, _format_names, _labels
from camoe.training.distributed import DistContext
from camoe.training.trainer import predict_logits, train_model

SCORE_BATCH_ROWS = 8192  # rows per forward pass when scoring a stream: bounds the activations (eval mode)

__all__ = ["StreamSplits", "evaluate_stream", "fit_stream", "predict_stream", "stream_splits"]


class StreamSplits:
    """The dataset(s) and Arrow filters of the train / valid / test splits of ``cfg.data``."""

    def __init__(self, cfg: RunConfig) -> None:
        data = cfg.data
        if data.path is None:
            raise ValueError("data.path is not set: give a Parquet file, folder or glob")
        if data.reader not in ("auto", "parquet"):
            raise ValueError(f"data.reader '{data.reader}': streaming reads Parquet files only")
        self.cfg = cfg
        self.dataset = open_dataset(expand_paths(resolve_path(cfg, data.path)))
        split = data.split
        valid_fraction = 0.0 if data.valid_path else split.valid_fraction
        test_fraction = 0.0 if data.test_path else split.test_fraction
        ts = cfg.schema.timestamp
        if valid_fraction + test_fraction == 0:
            bounds: dict[str, Any] = {"train": (None, None), "valid": None, "test": None}
        elif split.method != "temporal" or ts is None:
            raise ConfigError("streaming supports the temporal split only (split.method: temporal with "
                              "schema.timestamp), or explicit data.valid_path / data.test_path")
        else:
            bounds = temporal_bounds(self.dataset, ts, valid_fraction, test_fraction,
                                     data.streaming.histogram_bins, data.streaming.read_batch_rows, str(data.path))
        self.parts: dict[str, tuple[Any, Any]] = {
            name: (self.dataset, split_filter(self.dataset, ts, bounds[name])) for name in ("train", "valid", "test")
        }
        for name, path in (("valid", data.valid_path), ("test", data.test_path)):
            if path:
                self.parts[name] = (open_dataset(expand_paths(resolve_path(cfg, path))), None)

    def rows(self, split: str) -> int:
        dataset, flt = self.parts[split]
        return count_rows(dataset, flt)


def stream_splits(cfg: RunConfig) -> StreamSplits:
    return StreamSplits(cfg)


def _columns(cfg: RunConfig, dataset: Any, labels: bool = True) -> list[str]:
    schema = cfg.schema
    wanted = [f.name for f in schema.features] + [schema.format]
    if labels:
        wanted.append(schema.label)
    if schema.true_prob and schema.true_prob in dataset.schema.names:
        wanted.append(schema.true_prob)
    missing = [c for c in dict.fromkeys(wanted) if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{cfg.data.path}: missing column(s) {missing}; columns present: {dataset.schema.names}")
    return list(dict.fromkeys(wanted))


def _stream(pipe: CTRPipeline, splits: StreamSplits, split: str, batch_size: int, labels: bool = True,
            ctx: DistContext | None = None, stats: StreamingFit | None = None) -> ParquetBatchStream:
    dataset, flt = splits.parts[split]
    cfg = pipe.config
    source = f"{split} split of {cfg.data.path}"
    fmt_rows = fmt_clicks = None
    if stats is not None and pipe.layout_ is not None:
        fmt_rows = np.array([stats.format_rows_.get(f, 0) for f in pipe.layout_.formats], dtype=np.float64)
        fmt_clicks = np.array([stats.format_clicks_.get(f, 0.0) for f in pipe.layout_.formats], dtype=np.float64)
    ctx = ctx or DistContext()
    return ParquetBatchStream(
        dataset, flt, _columns(cfg, dataset, labels), lambda frame: pipe.encode(frame, source, labels=labels),
        batch_size, cfg.data.streaming, num_rows=stats.rows if stats is not None else splits.rows(split),
        format_rows=fmt_rows, format_clicks=fmt_clicks, rank=ctx.rank, world_size=ctx.world_size,
    )


def _fit_pass(cfg: RunConfig, splits: StreamSplits) -> StreamingFit:
    schema = cfg.schema
    dataset, flt = splits.parts["train"]
    stats = StreamingFit(schema, cfg.data.streaming.max_distinct_values)
    probe = ParquetBatchStream(dataset, flt, _columns(cfg, dataset), lambda f: f, 1, cfg.data.streaming, 0)
    source = f"train split of {cfg.data.path}"
    for frame in probe.frames():
        stats.add(frame, _format_names(frame, schema.format, source), _labels(frame, schema.label, source), source)
    if stats.rows == 0:
        raise ValueError(f"{source}: no rows")
    return stats


def fit_stream(
    cfg: RunConfig,
    splits: StreamSplits | None = None,
    progress: bool = False,
    log: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    dist_ctx: DistContext | None = None,
) -> CTRPipeline:
    """Fit a ``CTRPipeline`` on the train split streamed from ``cfg.data.path``; early-stop on the valid split.

    Returns:
        The fitted pipeline (save it with ``pipe.save``).

    Raises:
        ValueError / ConfigError: unreadable files, missing columns, bad labels or formats (naming the file / split).
    """
    ctx = dist_ctx or DistContext()
    splits = splits or StreamSplits(cfg)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    stats = ctx.broadcast(_fit_pass(cfg, splits) if ctx.is_main else None)
    pipe = CTRPipeline(cfg)
    pipe.format_attributes_ = pipe._resolve_formats(np.array([str(f) for f in sorted(stats.format_rows_)], dtype=object))
    try:
        pipe.layout_ = build_task_layout(cfg.grouping, pipe.format_attributes_)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    pipe.encoder_ = stats.encoder()
    if cfg.train.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be a multiple of the {ctx.world_size} ranks")
    train = _stream(pipe, splits, "train", cfg.train.batch_size // ctx.world_size, ctx=ctx, stats=stats)
    valid = _stream(pipe, splits, "valid", SCORE_BATCH_ROWS) if splits.rows("valid") else None
    score = None
    if valid is not None:
        task_of_format = np.asarray(pipe.layout_.format_task_index)

        def score(chunks: Iterator[tuple[Batch, np.ndarray]]) -> tuple[float, dict[str, Any]]:
            """Mean validation AUC-PR over tasks from score histograms (bounded memory, ``BinnedMetrics``)."""
            assert pipe.layout_ is not None
            acc = BinnedMetrics(pipe.layout_.formats, exact_max_rows=cfg.data.streaming.exact_metrics_max_rows)
            for batch, logits in chunks:
                assert batch.labels is not None
                fmt = batch.format_ids.numpy()
                acc.update(fmt, batch.labels.numpy(), own_task_scores(pipe._probabilities(logits), task_of_format[fmt]),
                           source="valid split")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)  # a task without clicks scores NaN
                per_task = {name: acc.metrics([f for f, t in pipe.layout_.format_to_task.items() if t == name],
                                              name, "valid")["auc_pr"] for name in pipe.layout_.tasks}
            finite = [v for v in per_task.values() if not np.isnan(v)]
            return (float(np.mean(finite)) if finite else float("nan")), {"auc_pr": per_task}

    torch.manual_seed(cfg.train.seed)
    assert pipe.encoder_.input_spec_ is not None
    pipe.model_ = build_model(cfg.model, pipe.encoder_.input_spec_, len(pipe.layout_.tasks))
    pipe.train_result_ = train_model(
        pipe.model_, train, pipe.layout_.mask, pipe.layout_.tasks, cfg.train, valid=valid, score_fn=score,
        progress=progress, log=log, checkpoint_path=Path(checkpoint_path) if checkpoint_path is not None else None,
        resume=resume, dist_ctx=ctx,
    )
    pipe.train_rows_ = stats.rows  # type: ignore[attr-defined]
    return pipe


def evaluate_stream(pipe: CTRPipeline, splits: StreamSplits, split: str) -> dict[str, Any]:
    """Per-format / per-task / per-modality metrics of one streamed split (the tables of ``CTRPipeline.evaluate``).

    Memory does not grow with the split: each record batch is scored and added to ``BinnedMetrics``
    (``camoe.evaluation.binned``), exact up to ``data.streaming.exact_metrics_max_rows`` rows; beyond that ranking
    metrics and ECE come from per-format pCTR histograms at a relative precision of 2^-12, while counts, CTR, mean
    pCTR, calibration ratio, log loss and NE stay exact.

    Returns:
        ``evaluate_groups`` output plus ``split``, ``oov`` (rows mapped to OOV per feature) and ``metric_precision``.

    Raises:
        ValueError: rows that fail validation, non-finite scores, or true probabilities outside [0, 1] (naming the
            split and file).
    """
    assert pipe.model_ is not None and pipe.layout_ is not None
    stream = _stream(pipe, splits, split, SCORE_BATCH_ROWS)
    source = f"{split} split of {pipe.config.data.path}"
    tp_col = pipe.config.schema.true_prob
    acc = BinnedMetrics(pipe.layout_.formats, with_true_prob=bool(tp_col and tp_col in stream.columns),
                        exact_max_rows=pipe.config.data.streaming.exact_metrics_max_rows)
    task_of_format = np.asarray(pipe.layout_.format_task_index)
    oov: dict[str, int] = {}
    for frame in stream.frames():
        batch = stream.encode(frame)
        assert batch.labels is not None
        for name, count in (pipe.last_encoding_.oov_counts if pipe.last_encoding_ is not None else {}).items():
            oov[name] = oov.get(name, 0) + int(count)
        fmt = batch.format_ids.numpy()
        logits = predict_logits(pipe.model_, batch, SCORE_BATCH_ROWS)  # (n, T)
        own = own_task_scores(pipe._probabilities(logits), task_of_format[fmt])  # (n,)
        pipe.check_finite_scores(own, batch, source)
        acc.update(fmt, batch.labels.numpy(), own, pipe._true_prob(frame, source) if acc.with_true_prob
                   else None, source=source)
    result = acc.evaluate(pipe.layout_.format_to_task, pipe.layout_.tasks, split,
                          group_attributes=pipe.format_attributes_)
    result["split"] = split
    result["oov"] = oov
    result["metric_precision"] = (f"score histograms, relative pCTR precision 2^-{MANTISSA_BITS}" if acc.binned
                                  else "exact (per row)")
    return result


def predict_stream(pipe: CTRPipeline, path: str | Path, output: str | Path, keep: list[str] | None = None,
                   read_batch_rows: int = 16384) -> tuple[int, dict[str, int]]:
    """Score a Parquet file / folder / glob record batch by record batch; write CSV or Parquet incrementally.

    Returns:
        (rows written, rows mapped to out-of-vocabulary per feature).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pipe.model_ is not None and pipe.layout_ is not None
    dataset = open_dataset(expand_paths(path))
    columns = list(dict.fromkeys(_columns(pipe.config, dataset, labels=False) + list(keep or [])))
    missing = [c for c in keep or [] if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{path}: --keep columns {missing} not found; columns: {dataset.schema.names}")
    task_of_format = torch.as_tensor(pipe.layout_.format_task_index)
    fmt_names = np.array(pipe.layout_.formats, dtype=object)
    out, written, writer = Path(output), 0, None
    oov: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for record_batch in dataset.to_batches(columns=columns, batch_size=read_batch_rows, batch_readahead=0,
                                               fragment_readahead=0, fragment_scan_options=_SCAN_OPTIONS):
            frame = record_batch.to_pandas()
            batch = pipe.encode(frame, str(path), labels=False)
            for name, count in (pipe.last_encoding_.oov_counts if pipe.last_encoding_ is not None else {}).items():
                oov[name] = oov.get(name, 0) + int(count)
            probs = pipe._probabilities(predict_logits(pipe.model_, batch, SCORE_BATCH_ROWS))  # (n, T)
            task = task_of_format[batch.format_ids].numpy()
            pipe.check_finite_scores(np.take_along_axis(probs, task[:, None], axis=1)[:, 0], batch, str(path))
            part = pd.DataFrame({"row": np.arange(written, written + len(frame)),
                                 "format": fmt_names[batch.format_ids.numpy()],
                                 "task": np.array(pipe.layout_.tasks, dtype=object)[task],
                                 "pctr": np.take_along_axis(probs, task[:, None], axis=1)[:, 0]})
            if out.suffix == ".parquet":  # kept columns straight from Arrow: their type does not vary by batch
                table = pa.Table.from_pandas(part, preserve_index=False)
                for col in keep or []:
                    table = table.append_column(col, record_batch.column(col))
                writer = writer or pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
            else:
                for col in keep or []:
                    part[col] = frame[col].to_numpy()
                part.to_csv(out, mode="a" if written else "w", header=not written, index=False)
            written += len(frame)
    finally:
        if writer is not None:
            writer.close()
    return written, oov
