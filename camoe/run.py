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
from camoe.data.sources import FilteredSource, FrameSource, ParquetSource, RowSource, ValueFilter
from camoe.data.split import SPLITS, SplitPlan, plan_split
from camoe.evaluation.run_report import write_run_report
from camoe.files import write_json
from camoe.scoring import evaluate_source
from camoe.pipeline import CTRPipeline
from camoe.training.distributed import DistContext

__all__ = ["BASELINES", "DataSplits", "baseline_config", "data_splits", "fit_per_format", "load_splits", "open_rows",
           "read_for_config", "run_facts", "separate_groups", "single_task_config", "train_and_evaluate",
           "train_per_format"]

BASELINES = ("pooled", "single_task", "per_task")


def read_for_config(cfg: RunConfig, path: str | Path, reader: str | None = None) -> pd.DataFrame:
    """Read a file with the config's reader and options; categorical columns of CSV files are read as text."""
    text_columns = [name for f in cfg.schema.features if f.type != "numeric" and f.encoding != "identity"
                    for name in f.source_columns]
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
                         "rows_per_s": pipe.train_result_.rows_per_s, "streaming": not splits.train.in_memory,
                         "output_bias_shift": pipe.train_result_.output_bias_shift}}
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


def baseline_config(cfg: RunConfig, baseline: str) -> RunConfig:
    """The config of a baseline: ``pooled`` = one DCN-v2 head over every format (grouping ``single``, the paper's
    "production baseline"); ``single_task`` / ``per_task`` = the single-task DCN-v2 that ``fit_per_format`` trains
    per format / per task of ``cfg``'s grouping.

    Raises:
        ValueError: unknown baseline.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {list(BASELINES)}, got '{baseline}'")
    single = single_task_config(cfg)
    single.model = single.model.model_copy(update={"name": "dcn_v2", "gate_mask": None})
    return single


def single_task_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with one task (grouping ``single``, no transfer): each model scores every row with its one head."""
    single = cfg.model_copy(deep=True)
    single.grouping = single.grouping.model_copy(update={"strategy": "single", "transfer": {}, "task_map": None})
    single._config_dir = cfg._config_dir
    return single


def separate_groups(cfg: RunConfig, formats: list[str], per: str) -> dict[str, list[str]]:
    """The formats each separate model trains on: ``per="format"``: one model per format; ``per="task"``: one per
    task of ``cfg``'s grouping (its formats together).

    Raises:
        ValueError: ``per`` is neither, or the grouping cannot be resolved over ``formats``.
    """
    if per == "format":
        return {f: [f] for f in sorted(formats)}
    if per != "task":
        raise ValueError(f"per must be 'format' or 'task', got '{per}'")
    from camoe.grouping import build_task_layout

    table = {f: dict((cfg.formats or {}).get(f, {})) for f in sorted(formats)}
    layout = build_task_layout(cfg.grouping, table)
    groups: dict[str, list[str]] = {}
    for fmt, task in layout.format_to_task.items():
        groups.setdefault(task, []).append(fmt)
    return groups


def fit_per_format(
    cfg: RunConfig, train: RowSource, valid: RowSource | None = None, names: dict[str, str] | None = None,
    progress: bool = False, log: Callable[[dict[str, Any]], None] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> dict[str, CTRPipeline]:
    """Separate single-task models (the paper's "one model per format" baseline): each fitted on the training and
    validation rows of its formats only, with ``cfg`` as it is (grouping ``single``; see ``baseline_config``).

    Args:
        groups: model name -> the formats it trains on (``separate_groups``); None = one model per format.

    Returns:
        model name -> fitted pipeline, for every group with training rows.
    """
    names = names or {"train": "train", "valid": "valid"}
    present = CTRPipeline(cfg).check_rows(train, names["train"]).rows
    groups = groups or {f: [f] for f in sorted(present)}
    out = {}
    for name, members in groups.items():
        if not set(members) & set(present):
            continue
        where = ValueFilter(cfg.schema.format, set(members))
        rows = FilteredSource(train, where, f"{names['train']} ({name} rows)")
        held = FilteredSource(valid, where, f"{names['valid']} ({name} rows)") if valid is not None else None
        out[name] = CTRPipeline(cfg).fit(rows, held if held is not None and held.count_rows() else None,
                                         progress=progress, log=log, sources={"train": rows.name,
                                                                              "valid": held.name if held else "valid"})
    return out


def train_per_format(
    cfg: RunConfig, output_dir: str | Path | None = None, progress: bool = False,
    log: Callable[[dict[str, Any]], None] | None = None, announce: Callable[[str], None] | None = None,
    per: str = "format",
) -> tuple[dict[str, CTRPipeline], dict[str, Any]]:
    """``camoe train --baseline single_task|per_task``: ``fit_per_format`` on the config's data (one model per format,
    or per task of the config's grouping with ``per="task"``), every model saved under
    ``<output_dir>/<formats|tasks>/<name>/``, and the test split scored row by row by its format's model into one
    table (``metrics.json`` and ``report.html`` in ``output_dir``).

    Raises:
        ValueError: test rows of a format without training rows (no model to score them).
    """
    out = Path(output_dir or cfg.output_dir)
    single = baseline_config(cfg, "single_task")
    splits = data_splits(single)
    if announce is not None:
        announce(splits.plan.describe())
    present = sorted(CTRPipeline(single).check_rows(splits.train, splits.names["train"]).rows)
    groups = separate_groups(cfg, present, per)
    models = fit_per_format(single, splits.train, splits.valid, splits.names, progress, log, groups)
    folder = out / f"{per}s"
    for name, pipe in models.items():
        pipe.save(folder / name)
    scorers = {f: models[name].scorer() for name, members in groups.items() if name in models for f in members}
    metrics: dict[str, Any] = {"split": splits.plan.to_dict()}
    for split in ("valid", "test"):
        rows = splits.get(split)
        if rows is None:
            continue
        unscored = sorted(set(CTRPipeline(single).check_rows(rows, splits.names[split]).rows) - set(scorers))
        if unscored:
            raise ValueError(f"{splits.names[split]}: formats {unscored} have rows but no training rows, so no "
                             f"single-task model")
        metrics[split] = evaluate_source(scorers, rows, split, attributes=single.formats or None,
                                         exact_max_rows=single.data.streaming.exact_metrics_max_rows,
                                         name=splits.names[split])
    baseline = "single_task" if per == "format" else "per_task"
    summary = {**metrics.get("test", {}), "split": splits.plan.to_dict(), "baseline": baseline,
               "models": {name: str(folder / name) for name in models},
               "model_formats": {name: groups[name] for name in models}}
    write_json(out / "metrics.json", summary)
    shown = metrics.get("test") or metrics.get("valid")
    if shown is not None:
        facts = {"baseline": f"one single-task {single.model.name} model per {per} ({len(models)} models, in "
                             f"{folder})", "split": splits.plan.describe().splitlines()[0]}
        write_run_report(out / "report.html", f"camoe train --baseline {baseline}: {out}", shown, facts=facts)
    return models, metrics
