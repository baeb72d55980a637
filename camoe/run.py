"""End-to-end jobs used by the CLI and the Python API: load data, split, train, evaluate, save."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from camoe.config import RunConfig, resolve_path
from camoe.data.readers import read_table
from camoe.data.split import split_frame
from camoe.pipeline import CTRPipeline
from camoe.training.distributed import DistContext

__all__ = ["load_splits", "read_for_config", "train_and_evaluate"]


def read_for_config(cfg: RunConfig, path: str | Path, reader: str | None = None) -> pd.DataFrame:
    """Read a file with the config's reader and options; categorical columns of CSV files are read as text."""
    text_columns = [f.name for f in cfg.schema.features if f.type != "numeric" and f.encoding != "identity"]
    text_columns.append(cfg.schema.format)
    return read_table(resolve_path(cfg, str(path)), reader or cfg.data.reader, text_columns=text_columns,
                      **cfg.data.reader_options)


def _source(cfg: RunConfig, split: str) -> str:
    path = {"test": cfg.data.test_path, "valid": cfg.data.valid_path}.get(split)
    return f"{split} ({path})" if path else f"{split} split of {cfg.data.path or 'the frame'}"


def _read(cfg: RunConfig, path: str) -> pd.DataFrame:
    return read_for_config(cfg, path)


def load_splits(cfg: RunConfig, frame: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Read ``cfg.data`` (or use ``frame``) and split it into train / valid / test.

    Explicit ``valid_path`` / ``test_path`` files replace the corresponding split of ``path``.

    Raises:
        ValueError: no data path and no frame, or reader / split errors (naming the file).
    """
    if frame is None:
        if cfg.data.path is None:
            raise ValueError("data.path is not set: give a CSV/Parquet file, folder or glob")
        frame = _read(cfg, cfg.data.path)
    split_cfg = cfg.data.split.model_copy()
    if cfg.data.test_path is not None:
        split_cfg.test_fraction = 0.0
    if cfg.data.valid_path is not None:
        split_cfg.valid_fraction = 0.0
    splits = split_frame(frame, split_cfg, cfg.schema.timestamp if split_cfg.method == "temporal" else None,
                         source=str(cfg.data.path or "frame"))
    if cfg.data.test_path is not None:
        splits["test"] = _read(cfg, cfg.data.test_path)
    if cfg.data.valid_path is not None:
        splits["valid"] = _read(cfg, cfg.data.valid_path)
    return splits


def train_and_evaluate(
    cfg: RunConfig,
    frame: pd.DataFrame | None = None,
    output_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    dist_ctx: DistContext | None = None,
) -> tuple[CTRPipeline, dict[str, Any]]:
    """Train on the train split, early-stop on valid, evaluate on test, save the artifact with ``metrics.json``.

    With ``cfg.data.streaming.enabled`` the data is streamed from Parquet (``camoe.streaming``). Under data
    parallelism (``dist_ctx`` with P ranks) every rank trains; only rank 0 evaluates on test and writes the artifact
    (the other ranks return empty metrics).

    Returns:
        (fitted pipeline, metrics with keys ``test`` and ``valid``; ``test`` also written to
        ``<output_dir>/metrics.json``).
    """
    ctx = dist_ctx or DistContext()
    out = Path(output_dir or cfg.output_dir)
    if cfg.data.streaming.enabled and frame is None:
        return _train_and_evaluate_streaming(cfg, out, progress, log, resume, ctx)
    splits = load_splits(cfg, frame)
    pipe = CTRPipeline(cfg)
    for name, rows in splits.items():  # fail on bad labels / formats in any split before training, not after
        pipe.check_rows(rows, _source(cfg, name))
    pipe = pipe.fit(splits["train"], splits["valid"], progress=progress, log=log,
                    checkpoint_path=out / "checkpoints" / "last.pt", resume=resume, dist_ctx=ctx,
                    sources={name: _source(cfg, name) for name in ("train", "valid")})
    if not ctx.is_main:
        return pipe, {}
    metrics: dict[str, Any] = {}
    for split in ("valid", "test"):
        if len(splits[split]):
            metrics[split] = pipe.evaluate(splits[split], split=split, source=_source(cfg, split))
    assert pipe.train_result_ is not None
    summary = {**metrics.get("test", {}), "gates": pipe.diagnostics_,
               "train": {"rows": len(splits["train"]), "best_step": pipe.train_result_.best_step,
                         "rows_per_s": pipe.train_result_.rows_per_s}}
    pipe.save(out, metrics=summary)
    return pipe, metrics


def _train_and_evaluate_streaming(
    cfg: RunConfig, out: Path, progress: bool, log: Callable[[dict[str, Any]], None] | None, resume: bool,
    ctx: DistContext,
) -> tuple[CTRPipeline, dict[str, Any]]:
    from camoe.streaming import StreamSplits, evaluate_stream, fit_stream

    splits = StreamSplits(cfg)
    pipe = fit_stream(cfg, splits, progress=progress, log=log, checkpoint_path=out / "checkpoints" / "last.pt",
                      resume=resume, dist_ctx=ctx)
    if not ctx.is_main:
        return pipe, {}
    metrics: dict[str, Any] = {}
    for split in ("valid", "test"):
        if splits.rows(split):
            try:
                metrics[split] = evaluate_stream(pipe, splits, split)
            except ValueError as err:  # bad rows in a split read only now: keep the trained model
                pipe.save(out)
                raise ValueError(f"{err}\n(the trained model was saved to {out} before this error; fix the rows and "
                                 f"run `camoe evaluate {out} --split {split}`)") from None
    assert pipe.train_result_ is not None
    summary = {**metrics.get("test", {}),
               "train": {"rows": getattr(pipe, "train_rows_", None), "best_step": pipe.train_result_.best_step,
                         "rows_per_s": pipe.train_result_.rows_per_s, "streaming": True}}
    pipe.save(out, metrics=summary)
    return pipe, metrics
