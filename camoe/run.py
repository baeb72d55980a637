"""End-to-end jobs used by the CLI and the Python API: open the data, split, train, evaluate, save.

The data of a run config is one row source (``camoe.data.sources``): the log read into memory, or, with
``data.streaming.enabled``, streamed from Parquet record batch by record batch. The split (``camoe.data.split``)
is the same rule for both, so the same log and config give the same rows in each split either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from camoe.config import RunConfig, resolve_path
from camoe.data.readers import read_table
from camoe.data.sources import FilteredSource, FrameSource, ParquetSource, RowSource
from camoe.data.split import SPLITS, SplitPlan, plan_split
from camoe.evaluation.run_report import write_run_report
from camoe.pipeline import CTRPipeline
from camoe.training.distributed import DistContext

__all__ = ["DataSplits", "data_splits", "load_splits", "open_rows", "read_for_config", "run_facts",
           "train_and_evaluate"]


def read_for_config(cfg: RunConfig, path: str | Path, reader: str | None = None) -> pd.DataFrame:
    """Read a file with the config's reader and options; categorical columns of CSV files are read as text."""
    text_columns = [f.name for f in cfg.schema.features if f.type != "numeric" and f.encoding != "identity"]
    text_columns.append(cfg.schema.format)
    return read_table(resolve_path(cfg, str(path)), reader or cfg.data.reader, text_columns=text_columns,
                      **cfg.data.reader_options)


def open_rows(cfg: RunConfig, path: str | Path, stream: bool, reader: str | None = None) -> RowSource:
    """The rows of ``path`` as a row source: streamed from Parquet when ``stream`` (and the files are Parquet read
    by the plain reader), else read into memory with the config's reader.

    Raises:
        FileNotFoundError: nothing matches ``path``.
        ValueError: unreadable files, or streaming asked for a non-Parquet log (naming the file).
    """
    reader = reader or cfg.data.reader
    resolved = resolve_path(cfg, str(path))
    if stream:
        if reader not in ("auto", "parquet"):
            raise ValueError(f"data.reader '{reader}': streaming reads Parquet files only")
        return ParquetSource(resolved, cfg.data.streaming.read_batch_rows, name=str(path))
    return FrameSource(read_for_config(cfg, path, reader), str(path))


@dataclass
class DataSplits:
    """The train / valid / test rows of a run config and the split that produced them.

    Attributes:
        train, valid, test: row sources (a split with no rows is None).
        plan: the cut points and rows per split of ``data.path`` (``camoe.data.split.SplitPlan``).
        names: how error messages name each split's rows.
    """

    train: RowSource
    valid: RowSource | None
    test: RowSource | None
    plan: SplitPlan
    names: dict[str, str]

    def get(self, split: str) -> RowSource | None:
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]


def data_splits(cfg: RunConfig, frame: pd.DataFrame | None = None, stream: bool | None = None) -> DataSplits:
    """Open ``cfg.data`` (or use ``frame``) and split it into train / valid / test row sources.

    Explicit ``valid_path`` / ``test_path`` files replace the corresponding split of ``path``. Rows in memory are
    split into one frame per split once; streamed rows stay on disk and each split is a filter.

    Raises:
        ValueError: no data path and no frame, or reader / split errors (naming the file).
    """
    data = cfg.data
    stream = data.streaming.enabled and frame is None if stream is None else stream
    if frame is not None:
        rows: RowSource = FrameSource(frame, "frame")
    elif data.path is None:
        raise ValueError("data.path is not set: give a CSV/Parquet file, folder or glob")
    else:
        rows = open_rows(cfg, data.path, stream)
    split = data.split
    plan = plan_split(rows, split, cfg.schema.timestamp if split.method == "temporal" else None,
                      valid_fraction=0.0 if data.valid_path else split.valid_fraction,
                      test_fraction=0.0 if data.test_path else split.test_fraction,
                      bins=data.streaming.histogram_bins)
    names = {s: f"{s} split of {data.path or 'the frame'}" for s in SPLITS}
    parts: dict[str, RowSource | None] = {}
    for s in SPLITS:
        if not plan.rows.get(s):
            parts[s] = None
        elif rows.in_memory:  # one frame per split, cut once
            parts[s] = FrameSource(next(rows.chunks(where=plan.where(s))).reset_index(drop=True), names[s])
        else:
            parts[s] = FilteredSource(rows, plan.where(s), names[s], plan.rows[s])
    for s, path in (("valid", data.valid_path), ("test", data.test_path)):
        if path:
            parts[s], names[s] = open_rows(cfg, path, stream), f"{s} ({path})"
    assert parts["train"] is not None
    return DataSplits(parts["train"], parts["valid"], parts["test"], plan, names)


def load_splits(cfg: RunConfig, frame: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """``data_splits`` read into memory: {"train", "valid", "test"} DataFrames (empty where a split has no rows)."""
    splits = data_splits(cfg, frame, stream=False)
    out = {}
    for s in SPLITS:
        src = splits.get(s)
        out[s] = pd.concat(list(src.chunks()), ignore_index=True) if src is not None else pd.DataFrame(
            columns=splits.train.columns)
    return out


def train_and_evaluate(
    cfg: RunConfig,
    frame: pd.DataFrame | None = None,
    output_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    dist_ctx: DistContext | None = None,
    announce: Callable[[str], None] | None = None,
    allow_changes: tuple[str, ...] | list[str] = (),
    warm_start: str | Path | None = None,
) -> tuple[CTRPipeline, dict[str, Any]]:
    """Train on the train split, early-stop on valid, evaluate on test, save the artifact with ``metrics.json``.

    Under data parallelism (``dist_ctx`` with P ranks) every rank trains; only rank 0 evaluates and writes the
    artifact (the other ranks return empty metrics).

    Args:
        resume: continue from ``<output_dir>/checkpoints/last.pt`` (verified; see ``CTRPipeline.fit``).
        announce: receives one-line messages before training (the split's cut points, the resume step), e.g.
            ``print``.
        allow_changes: config keys that may differ from the checkpoint's on resume (e.g. ``train.epochs``).
        warm_start: an artifact to start from (yesterday's model; see ``CTRPipeline.fit``).

    Returns:
        (fitted pipeline, metrics with keys ``valid`` / ``test`` and ``split``; ``test`` also written to
        ``<output_dir>/metrics.json``).
    """
    ctx = dist_ctx or DistContext()
    out = Path(output_dir or cfg.output_dir)
    splits = data_splits(cfg, frame)
    if announce is not None and ctx.is_main:
        announce(splits.plan.describe())
    pipe = CTRPipeline(cfg)
    previous = CTRPipeline.load(warm_start) if warm_start is not None else None
    pipe.fit(splits.train, splits.valid, progress=progress, log=log, checkpoint_path=out / "checkpoints" / "last.pt",
             resume=resume, dist_ctx=ctx, sources=splits.names, allow_changes=allow_changes, announce=announce,
             also_check=[(splits.test, splits.names["test"])] if splits.test is not None else [], warm_start=previous)
    if pipe.warm_start_ is not None and announce is not None and ctx.is_main:
        added = {k: v for k, v in pipe.warm_start_["vocabulary_added"].items() if v}
        announce(f"warm start from {warm_start}: vocabulary values added {added or 'none'}; numeric statistics "
                 f"{pipe.warm_start_['numeric']}")
    if not ctx.is_main:
        return pipe, {}
    metrics: dict[str, Any] = {"split": splits.plan.to_dict()}
    for split in ("valid", "test"):
        rows = splits.get(split)
        if rows is None:
            continue
        try:
            metrics[split] = pipe.evaluate(rows, split=split, source=splits.names[split])
        except ValueError as err:  # bad feature values in a split read only now: keep the trained model
            pipe.save(out, manifest={"split": splits.plan.to_dict()})
            raise ValueError(f"{err}\n(the trained model was saved to {out} before this error; fix the rows and "
                             f"run `camoe evaluate {out} --split {split}`)") from None
    assert pipe.train_result_ is not None and pipe.format_counts_ is not None
    manifest = {"split": splits.plan.to_dict(),
                **({"warm_start": {"from": str(warm_start), **pipe.warm_start_}} if pipe.warm_start_ else {})}
    summary = {**metrics.get("test", {}), "split": splits.plan.to_dict(), "gates": pipe.diagnostics_,
               "train": {"rows": pipe.format_counts_.total, "best_step": pipe.train_result_.best_step,
                         "rows_per_s": pipe.train_result_.rows_per_s, "streaming": not splits.train.in_memory}}
    pipe.save(out, metrics=summary, manifest=manifest)
    shown = metrics.get("test") or metrics.get("valid")
    if shown is not None:
        write_run_report(out / "report.html", f"camoe train: {out}", shown, facts=run_facts(pipe, splits.plan.to_dict()),
                         history=pipe.train_result_.history, gates=pipe.diagnostics_)
    return pipe, metrics


def run_facts(pipe: CTRPipeline, split: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lines under a report's title: model, grouping, tasks, training and split sizes."""
    cfg = pipe.config
    facts: dict[str, Any] = {
        "model": f"{cfg.model.name} ({cfg.model.expert_type} experts, {cfg.model.num_experts} experts)",
        "grouping": f"{pipe.layout_.strategy if pipe.layout_ else cfg.grouping.strategy}: "
                    f"{dict(pipe.layout_.format_to_task) if pipe.layout_ else ''}",
    }
    result = pipe.train_result_
    if result is not None:
        facts["training"] = (f"{result.steps} steps, best step {result.best_step}, {result.rows_per_s:,.0f} rows/s, "
                             f"mean validation AUC-PR {result.best_score:.4f}")
    if split is not None:
        facts["split"] = f"{split['method']} by {split['key']}: rows {split['rows']}"
    return facts
