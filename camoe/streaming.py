"""Train, evaluate and score from Parquet in record batches (``data.streaming.enabled: true``).

The same ``CTRPipeline`` (encoder, task layout, model, artifact) as the in-memory path; only the data path differs:
the temporal split is a timestamp filter (``camoe.data.streaming.temporal_bounds``), the encoder is fitted in one
streaming pass over the train split, and training, validation, evaluation and scoring read record batches through
``ParquetBatchStream``. Under data parallelism (``torchrun``) rank 0 fits the encoder and broadcasts it; each rank
trains on its own record batches.

Memory: the shuffle buffer, one record batch, the model and the vocabularies while training; validation keeps
(N_valid, T) logits, labels and task ids (a few bytes per row); the final ``evaluate`` keeps per-row arrays of the
evaluated split (its per-format tables need them), so its memory grows with the size of that split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from camoe.config import ConfigError, RunConfig, resolve_path
from camoe.data.readers import expand_paths
from camoe.data.streaming import (
    ParquetBatchStream,
    StreamingFit,
    count_rows,
    open_dataset,
    split_filter,
    temporal_bounds,
)
from camoe.evaluation.metrics import binary_metrics, evaluate_groups
from camoe.grouping import build_task_layout
from camoe.model import build_model
from camoe.pipeline import CTRPipeline, _format_names, _labels
from camoe.training.distributed import DistContext
from camoe.training.trainer import predict_logits, train_model

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
    pipe.format_attributes_ = pipe._resolve_formats(np.array(sorted(stats.format_rows_)))
    try:
        pipe.layout_ = build_task_layout(cfg.grouping, pipe.format_attributes_)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    pipe.encoder_ = stats.encoder()
    if cfg.train.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be a multiple of the {ctx.world_size} ranks")
    train = _stream(pipe, splits, "train", cfg.train.batch_size // ctx.world_size, ctx=ctx, stats=stats)
    valid = _stream(pipe, splits, "valid", 65536) if splits.rows("valid") else None
    score = None
    if valid is not None:
        labels, task_ids = _labels_and_tasks(pipe, valid)

        def score(logits: np.ndarray) -> tuple[float, dict[str, Any]]:
            per_task = {}
            for t, name in enumerate(pipe.layout_.tasks):
                rows = task_ids == t
                per_task[name] = binary_metrics(labels[rows], pipe._probabilities(logits[rows, t]),
                                                name=name, split="valid")["auc_pr"] if rows.any() else float("nan")
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


def _labels_and_tasks(pipe: CTRPipeline, stream: ParquetBatchStream) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels and (N,) task index of every row of a scoring stream, in its file order."""
    assert pipe.layout_ is not None
    task_of_format = torch.as_tensor(pipe.layout_.format_task_index)
    labels, tasks = [], []
    for batch in stream.batches(None):
        assert batch.labels is not None
        labels.append(batch.labels.numpy())
        tasks.append(task_of_format[batch.format_ids].numpy().astype(np.int16))
    return np.concatenate(labels), np.concatenate(tasks)


def evaluate_stream(pipe: CTRPipeline, splits: StreamSplits, split: str) -> dict[str, Any]:
    """Per-format / per-task / per-modality metrics of one streamed split (as ``CTRPipeline.evaluate``).

    Keeps per row only the (T,) logits, the label, a short format code and the true probability: format names are
    replaced by their index for the metric tables and mapped back in the result (full names would cost ~100 bytes
    per row as a NumPy string array).
    """
    assert pipe.model_ is not None and pipe.layout_ is not None
    stream = _stream(pipe, splits, split, 65536)
    logits = predict_logits(pipe.model_, stream)
    labels, codes, true_prob = [], [], []
    tp_col = pipe.config.schema.true_prob
    for frame in stream.frames():
        labels.append(_labels(frame, pipe.config.schema.label, split))
        codes.append(pipe.layout_.format_index(_format_names(frame, pipe.config.schema.format, split)).astype(np.int16))
        if tp_col and tp_col in frame.columns:
            true_prob.append(pd.to_numeric(frame[tp_col], errors="coerce").to_numpy(np.float64))
    names = list(pipe.layout_.formats)
    code_of = {name: str(i) for i, name in enumerate(names)}
    layout, attrs = pipe.layout_, pipe.format_attributes_
    # warnings about a format's slice name its index in ``layout_.formats``
    result = evaluate_groups(
        np.concatenate(labels), pipe._probabilities(logits), np.concatenate(codes).astype(str),
        {code_of[f]: t for f, t in layout.format_to_task.items()}, layout.tasks,
        true_prob=np.concatenate(true_prob) if true_prob else None, split=split,
        group_attributes={code_of[f]: a for f, a in attrs.items() if f in code_of},
    )
    result["formats"] = {names[int(code)]: m for code, m in result["formats"].items()}
    result["split"] = split
    return result


def predict_stream(pipe: CTRPipeline, path: str | Path, output: str | Path, keep: list[str] | None = None,
                   read_batch_rows: int = 65536) -> tuple[int, dict[str, int]]:
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
        for record_batch in dataset.to_batches(columns=columns, batch_size=read_batch_rows):
            frame = record_batch.to_pandas()
            batch = pipe.encode(frame, str(path), labels=False)
            for name, count in (pipe.last_encoding_.oov_counts if pipe.last_encoding_ is not None else {}).items():
                oov[name] = oov.get(name, 0) + int(count)
            probs = pipe._probabilities(predict_logits(pipe.model_, batch))  # (n, T)
            task = task_of_format[batch.format_ids].numpy()
            pipe.check_finite_scores(np.take_along_axis(probs, task[:, None], axis=1)[:, 0], batch, str(path))
            part = pd.DataFrame({"row": np.arange(written, written + len(frame)),
                                 "format": fmt_names[batch.format_ids.numpy()],
                                 "task": np.array(pipe.layout_.tasks, dtype=object)[task],
                                 "pctr": np.take_along_axis(probs, task[:, None], axis=1)[:, 0]})
            for col in keep or []:
                part[col] = frame[col].to_numpy()
            if out.suffix == ".parquet":
                table = pa.Table.from_pandas(part, preserve_index=False)
                writer = writer or pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
            else:
                part.to_csv(out, mode="a" if written else "w", header=not written, index=False)
            written += len(frame)
    finally:
        if writer is not None:
            writer.close()
    return written, oov
