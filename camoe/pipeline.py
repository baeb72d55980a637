"""``CTRPipeline``: encoder + task layout + model, fitted and scored as one estimator.

Every method takes rows as a DataFrame or as a row source (``camoe.data.sources``: a Parquet log streamed in record
batches, or one split of it), and the two go through the same code: ``fit`` scans the training rows once (labels,
formats, the one encoder fit), trains with ``camoe.training.Trainer`` on a ``BatchStream``, and validates through
the one ``Scorer``; ``predict_proba``, ``evaluate`` and ``calibrate`` score through that ``Scorer`` too.

Example (the README's Python API):
    >>> import camoe
    >>> frame = camoe.generate_log(camoe.SyntheticConfig(rows=20_000, seed=0))
    >>> cfg = camoe.load_config(camoe.demo_config_path(), {"train": {"epochs": 1}})
    >>> splits = camoe.split_frame(frame, cfg.data.split, cfg.schema.timestamp)
    >>> pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"])
    >>> pctr = pipe.predict_proba(splits["test"])           # one pCTR per row, from the row's own task head
    >>> metrics = pipe.evaluate(splits["test"], split="test")
    >>> sorted(metrics["tasks"])
    ['audio', 'display', 'video']
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from camoe.artifact import ArtifactError, load_artifact, save_artifact
from camoe.batch import Batch
from camoe.calibration import PosthocCalibration
from camoe.config import ConfigError, RunConfig, load_config
from camoe.data.batches import BatchStream, RowEncoder, input_columns
from camoe.data.columns import FormatCounts, Rows, format_names, label_values
from camoe.data.encoders import EncoderFit, FeatureEncoder, extend_encoder
from camoe.data.sampling import format_groups
from camoe.data.sources import FrameSource, RowSource
from camoe.evaluation.binned import BinnedMetrics
from camoe.evaluation.diagnostics import gate_summary, gate_warnings, identical_pairs
from camoe.evaluation.metrics import UndefinedMetricWarning, too_few_clicks
from camoe.grouping import TaskLayout, build_task_layout
from camoe.model import build_model
from camoe.scoring import ScoreRangeError, Scorer, evaluate_source, export_onnx
from camoe.scoring.module import ScoringModule
from camoe.training.distributed import DistContext
from camoe.training.checkpoint import RESUME_SAFE_KEYS, Checkpoint, CheckpointError, fingerprint_diff
from camoe.training.trainer import Trainer, TrainResult

__all__ = ["CTRPipeline", "as_source", "gate_diagnostics", "resume_checkpoint", "run_fingerprint"]

SCORE_BATCH_ROWS = 16_384  # rows per forward pass when validating a stream (bounds eval activations)
GATE_DIAGNOSTIC_ROWS = 200_000  # validation rows the mean gate weights are computed on


def as_source(rows: pd.DataFrame | RowSource, name: str = "data") -> RowSource:
    """A DataFrame as a one-chunk ``FrameSource``; a row source as it is."""
    return FrameSource(rows, name) if isinstance(rows, pd.DataFrame) else rows


@torch.no_grad()
def gate_diagnostics(
    model: torch.nn.Module, layout: TaskLayout, batches: Iterable[Batch], max_rows: int = GATE_DIAGNOSTIC_ROWS
) -> dict[str, Any]:
    """Mean gate weight per task and expert over the rows each task scores (the first ``max_rows``), and warnings
    for identical experts, collapsed (> 95% on one expert) or exactly uniform gates (case B05).

    Returns:
        {"mean_gate_weight": task -> E weights, "identical_experts": [(i, j)], "warnings": [...]}; {} without rows.
    """
    tasks = layout.tasks
    model.eval()
    task_of_format = torch.tensor(layout.format_task_index)  # a copy: the layout's array is read-only
    sums = counts = None
    seen = 0
    for part in batches:
        part = part.select(slice(0, max_rows - seen))
        gates = model(part.cat_ids, part.multi_ids, part.dense).gate_weights  # (B, T, E)
        task = task_of_format[part.format_ids]  # (B,)
        own = gates[torch.arange(len(part)), task]  # (B, E)
        if sums is None:
            sums, counts = torch.zeros(len(tasks), own.shape[1]), torch.zeros(len(tasks))
        sums.index_add_(0, task, own.float())
        counts += torch.bincount(task, minlength=len(tasks)).float()
        seen += len(part)
        if seen >= max_rows:
            break
    if sums is None or counts is None:
        return {}
    summary = gate_summary(sums.numpy(), counts.numpy(), tasks)
    experts = getattr(model, "experts", None)
    pairs = identical_pairs([p.detach().numpy() for p in experts.parameters()]) if experts is not None else []
    allowed = getattr(model.gates, "allowed", None)
    issues = gate_warnings(summary, allowed=None if allowed is None else allowed.numpy())
    issues += [f"experts {i} and {j} have identical weights" for i, j in pairs]
    for issue in issues:
        warnings.warn(f"gate diagnostics: {issue}", stacklevel=3)
    return {"mean_gate_weight": summary, "identical_experts": pairs, "warnings": issues}


def run_fingerprint(cfg: RunConfig, encoder: FeatureEncoder, counts: FormatCounts) -> dict[str, Any]:
    """What a training checkpoint belongs to: the run config and a summary of the training rows (rows and clicks
    per format, numeric statistics, vocabulary sizes, a digest of the vocabularies and a content digest of every
    training row's input columns, so one changed cell is a different run)."""
    state = encoder.state_dict()
    vocab = hashlib.sha256(json.dumps(state["vocab"], sort_keys=True).encode()).hexdigest()[:16]
    config = cfg.to_dict()
    return {"config": config, "data": {
        "rows": counts.total, "formats": {f: [counts.rows[f], counts.clicks[f]] for f in sorted(counts.rows)},
        "numeric": {name: [state["mean"][name], state["std"][name]] for name in sorted(state["mean"])},
        "vocabulary_sizes": {name: len(v) for name, v in sorted(state["vocab"].items())}, "vocabularies": vocab,
        "content": f"{counts.digest:016x}"}}


def resume_checkpoint(
    path: Path, fingerprint: dict[str, Any], allow_changes: Sequence[str] = (),
    announce: Callable[[str], None] | None = None,
) -> Checkpoint | None:
    """The checkpoint to resume from, verified against this run; None (said through ``announce``) when there is none.

    Raises:
        CheckpointError: the file is damaged, or belongs to another run (the message lists each changed key).
    """
    if not path.is_file():
        if announce is not None:
            announce(f"--resume: no checkpoint at {path}; training starts from step 0")
        return None
    checkpoint = Checkpoint.load(path)
    saved = checkpoint.fingerprint
    try:  # a key added to the config since the checkpoint was written holds its default there: not a change
        saved = {**saved, "config": RunConfig.model_validate(saved["config"]).to_dict()}
    except (ValidationError, KeyError, TypeError):
        pass  # a key since removed or renamed: compared as saved, so the diff names it
    diff = fingerprint_diff(saved, fingerprint, tuple(allow_changes))
    if diff:
        safe = [line for line in diff if line.split(":")[0].removeprefix("config.") in RESUME_SAFE_KEYS]
        hint = (f"; if the change is intended, pass --allow-change "
                f"{' --allow-change '.join(line.split(':')[0].removeprefix('config.') for line in safe)}"
                if safe and len(safe) == len(diff) else "; resume with the original config and data, or delete the "
                                                        "checkpoint to start fresh")
        raise CheckpointError(f"{path}: --resume refused, the checkpoint belongs to a different run. What changed "
                              f"(checkpoint -> now):\n  " + "\n  ".join(diff) + hint)
    if announce is not None:
        st = checkpoint.state
        announce(f"resuming from {path}: step {st.step} (epoch {st.epoch}, batch {st.next_batch} of the epoch)")
    return checkpoint


class CTRPipeline:
    """Encoder + task layout + multi-task CTR model.

    Args:
        config: the run config (schema, formats, grouping, model, train).

    Fitted attributes: ``encoder_``, ``layout_``, ``model_``, ``train_result_``, ``format_attributes_``,
    ``format_counts_`` (rows and clicks per format of the training rows), ``diagnostics_`` (validation gate weights),
    ``calibration_`` (post-hoc map, after ``calibrate``), ``onnx_path_`` (the artifact's verified ``model.onnx``
    once saved or loaded; None until then).
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.encoder_: FeatureEncoder | None = None
        self.layout_: TaskLayout | None = None
        self.model_: torch.nn.Module | None = None
        self.train_result_: TrainResult | None = None
        self.format_attributes_: dict[str, dict[str, str]] = {}
        self.format_counts_: FormatCounts | None = None
        self.diagnostics_: dict[str, Any] = {}
        self.calibration_: PosthocCalibration | None = None
        self.onnx_path_: Path | None = None
        self.warm_start_: dict[str, Any] | None = None

    # ------------------------------------------------------------------ checks and the fit pass
    def check_rows(self, rows: pd.DataFrame | RowSource, source: str = "data") -> FormatCounts:
        """Read labels and formats only: refuse bad labels, empty or unknown formats before any training.

        Formats are checked against the config's ``formats`` table, or, once fitted, against the task layout.

        Returns:
            Rows and clicks per format.

        Raises:
            ValueError: names the rows (``source``), the column and the bad values or formats.
        """
        src = as_source(rows, source)
        schema, counts = self.config.schema, FormatCounts()
        for chunk in src.chunks([schema.label, schema.format]):
            counts.add(format_names(chunk, schema.format, source), label_values(chunk, schema.label, source))
        known = list(self.layout_.formats) if self.layout_ is not None else (
            list(self.config.formats) if self.config.formats is not None else None)
        unknown = sorted(set(counts.rows) - set(known)) if known is not None else []
        if unknown:
            where = "the config's formats table" if self.layout_ is None else "the training rows"
            raise ValueError(f"{source}: ad formats {unknown} are not in {where}; known formats: {known}")
        return counts

    def _scan(self, rows: RowSource, source: str) -> tuple[FeatureEncoder, FormatCounts]:
        """The fit pass: labels and formats checked and counted, the encoder fitted (``EncoderFit``), in one read."""
        cfg = self.config
        fit = EncoderFit(cfg.schema, cfg.data.streaming.max_distinct_values)
        counts = FormatCounts()
        columns = input_columns(cfg.schema)
        missing = [c for c in dict.fromkeys(columns) if c not in rows.columns]
        if missing:
            raise ValueError(f"{source}: missing column(s) {missing}; columns present: {rows.columns}")
        for chunk in rows.chunks(columns):
            counts.add(format_names(chunk, cfg.schema.format, source), label_values(chunk, cfg.schema.label, source))
            counts.add_digest(chunk)
            fit.add(chunk, source)
        if counts.total == 0:
            raise ValueError(f"{source}: no rows")
        return fit.encoder(source), counts

    def _resolve_formats(self, present: list[str]) -> dict[str, dict[str, str]]:
        table = self.config.formats
        if table is None:
            return {f: {} for f in sorted(present)}
        unknown = sorted(set(present) - set(table))
        if unknown:
            raise ValueError(f"train: ad formats {unknown} are not in the config's formats table; known formats: "
                             f"{list(table)}")
        return {f: dict(attrs) for f, attrs in table.items()}

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: pd.DataFrame | RowSource,
        valid: pd.DataFrame | RowSource | None = None,
        progress: bool = False,
        log: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_path: str | Path | None = None,
        resume: bool = False,
        dist_ctx: DistContext | None = None,
        sources: dict[str, str] | None = None,
        also_check: Sequence[tuple[RowSource, str]] = (),
        allow_changes: Sequence[str] = (),
        announce: Callable[[str], None] | None = None,
        warm_start: CTRPipeline | None = None,
    ) -> CTRPipeline:
        """Fit the encoder on ``train`` only, build the model from the encoder's table sizes, train.

        Args:
            train: training rows (DataFrame or row source).
            valid: validation rows for early stopping on mean task AUC-PR (optional).
            progress: show a progress bar.
            log: receives each evaluation's history entry.
            checkpoint_path: training checkpoint file (``camoe.training.Checkpoint``); None = no checkpoints.
            resume: continue from ``checkpoint_path`` when it exists. The checkpoint is verified (checksum) and its
                fingerprint (config and training-data summary) must match this run's, except for ``allow_changes``
                (keys of ``camoe.training.checkpoint.RESUME_SAFE_KEYS``); the encoder is refitted on the same rows,
                which gives the same state, so the checkpoint's weights fit.
            dist_ctx: data-parallel context (``camoe.training.distributed``); every rank reads the same global
                batches and trains on its share of each; rank 0 scans the data and validates.
            sources: how errors name the rows, e.g. {"train": "train split of log.csv", "valid": "valid.csv"}.
            also_check: further (rows, name) pairs (e.g. the test split) whose labels and formats are checked
                before training, so a bad row or an unknown format stops the run before it trains, not after.
            allow_changes: config keys that may differ from the checkpoint's on resume (e.g. ``train.epochs``).
            announce: receives one-line messages before training (where a resumed run restarts), e.g. ``print``.
            warm_start: a fitted pipeline (``CTRPipeline.load(yesterday)``) to start from: its vocabularies are
                extended with the new rows' values (``extend_encoder``; known values keep their ids and embedding
                rows), its task layout and model architecture must match (the error lists what differs), and the
                model starts from its weights. ``warm_start_`` records what was added.

        Returns:
            self.

        Raises:
            ValueError / ConfigError: bad rows, unknown formats or an invalid grouping (naming the rows and values).
            CheckpointError: ``resume`` with a damaged checkpoint or one of another run (lists what changed).
        """
        cfg = self.config
        self.onnx_path_ = None  # a refitted model no longer matches an exported file
        names = {"train": "train", "valid": "valid", **(sources or {})}
        ctx = dist_ctx or DistContext()
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        train_src = as_source(train, names["train"])
        valid_src = as_source(valid, names["valid"]) if valid is not None else None
        if cfg.train.batch_size % ctx.world_size:
            raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be a multiple of the {ctx.world_size} "
                              f"ranks")
        scanned = self._scan(train_src, names["train"]) if ctx.is_main else None
        added: dict[str, int] = {}
        if scanned is not None and warm_start is not None:
            old_encoder, _, _ = warm_start._require_fitted()
            encoder, added = extend_encoder(old_encoder, scanned[0], cfg.train.warm_start_numeric)
            scanned = (encoder, scanned[1])
        encoder_state, counts = ctx.broadcast((scanned[0].state_dict(), scanned[1]) if scanned else None)
        self.encoder_ = FeatureEncoder.from_state(cfg.schema, encoder_state)
        self.format_counts_ = counts
        self.format_attributes_ = self._resolve_formats(list(counts.rows))
        try:
            self.layout_ = build_task_layout(cfg.grouping, self.format_attributes_)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if warm_start is not None:
            self.layout_, self.format_attributes_ = self._warm_layout(warm_start, list(counts.rows))
            self.warm_start_ = {"vocabulary_added": added, "numeric": cfg.train.warm_start_numeric}
        layout = self.layout_
        if cfg.grouping.strategy == "auto" and announce is not None and ctx.is_main:
            why = ("every format has a modality attribute" if layout.strategy == "modality" else
                   "the formats have no modality attribute in the config's formats table")
            announce(f"grouping 'auto': {layout.strategy} ({why}), {len(layout.tasks)} tasks; set grouping.strategy "
                     f"to choose")
        if valid_src is not None and ctx.is_main:
            valid_counts = self.check_rows(valid_src, names["valid"])
            clicks = dict(zip(layout.tasks, layout.mask.T @ valid_counts.arrays(layout.formats)[1]))
            for message in too_few_clicks(clicks, cfg.train.min_valid_clicks):
                warnings.warn(message, stacklevel=2)
        for rows, name in also_check if ctx.is_main else ():
            self.check_rows(rows, name)
        format_rows, format_clicks = counts.arrays(layout.formats)
        self._check_task_data(layout, format_rows, format_clicks)
        torch.manual_seed(cfg.train.seed)
        assert self.encoder_.input_spec_ is not None
        self.model_ = build_model(cfg.model, self.encoder_.input_spec_, len(layout.tasks))
        if warm_start is not None:
            if warm_start.config.model != cfg.model:
                changed = sorted(k for k, v in cfg.model.model_dump().items() if warm_start.config.model.model_dump()[k] != v)
                raise ConfigError(f"warm start: model settings {changed} differ from the artifact's; a warm start keeps "
                                  f"the architecture")
            try:
                self.model_.warm_start_from(warm_start.model_)  # type: ignore[operator]
            except ValueError as err:
                raise ConfigError(str(err)) from None
        rows = RowEncoder(self.encoder_, layout, cfg.schema)
        streaming = cfg.data.streaming
        train_stream = BatchStream(  # training rows count among themselves only (derived count features)
            train_src, lambda f: rows(f, names["train"], history=False).batch, cfg.train.batch_size, rows.columns(),
            num_rows=counts.total, shuffle_buffer_rows=streaming.shuffle_buffer_rows, format_rows=format_rows,
            format_clicks=format_clicks, balanced=self._balanced(format_rows),
        )
        valid_stream = None
        if valid_src is not None:
            valid_stream = BatchStream(valid_src, lambda f: rows(f, names["valid"]).batch, SCORE_BATCH_ROWS,
                                       rows.columns())
        fingerprint = run_fingerprint(cfg, self.encoder_, counts)
        checkpoint = None
        if resume and checkpoint_path is not None:
            checkpoint = resume_checkpoint(Path(checkpoint_path), fingerprint, allow_changes,
                                           announce if ctx.is_main else None)
        trainer = Trainer(
            self.model_, layout.mask, layout.tasks, cfg.train, ctx=ctx, log=log, progress=progress,
            checkpoint_path=checkpoint_path, fingerprint=fingerprint, init_bias=warm_start is None,
            format_task=layout.format_task_index,
            validate=self._validator(valid_stream, names["valid"]) if valid_stream is not None else None,
        )
        self.train_result_ = trainer.fit(train_stream, checkpoint)
        if ctx.is_main:
            self.diagnostics_ = gate_diagnostics(self.model_, layout, (valid_stream or train_stream).batches(None))
        return self

    def _warm_layout(self, old: CTRPipeline, present: list[str]) -> tuple[TaskLayout, dict[str, dict[str, str]]]:
        """The warm-started model keeps ``old``'s task layout (its heads); the new rows must fit it.

        Raises:
            ConfigError: the grouping settings differ from the artifact's, or the new rows hold formats the old
                layout does not have (each message says what differs).
        """
        _, old_layout, _ = old._require_fitted()
        if old.config.grouping != self.config.grouping:
            changed = {k: (v, self.config.grouping.model_dump()[k])
                       for k, v in old.config.grouping.model_dump().items() if self.config.grouping.model_dump()[k] != v}
            raise ConfigError(f"warm start: grouping settings differ from the artifact's (artifact -> now): {changed}")
        unknown = sorted(set(present) - set(old_layout.formats))
        if unknown:
            raise ConfigError(f"warm start: the new rows hold ad formats {unknown} that the artifact's task layout "
                              f"does not have (formats {list(old_layout.formats)}); a new format needs a cold start")
        return old_layout, dict(old.format_attributes_)

    def _check_task_data(self, layout: TaskLayout, format_rows: np.ndarray, format_clicks: np.ndarray) -> None:
        """Warn (or, with ``train.strict_data_checks``, refuse) tasks without training rows or with fewer than
        ``train.min_task_clicks`` clicks: their heads cannot learn, and their pCTR stays near the prior."""
        cfg = self.config.train
        rows, clicks = layout.mask.T @ format_rows, layout.mask.T @ format_clicks  # (T,)
        problems = [f"task '{t}' has no training rows: its head stays untrained and scores at init"
                    for t, n in zip(layout.tasks, rows) if n == 0]
        problems += [f"task '{t}' has {int(c)} clicks in its {int(n):,} training rows (train.min_task_clicks = "
                     f"{cfg.min_task_clicks}): its head cannot learn to rank and its pCTR stays near the prior; add "
                     f"rows, group it with another task (grouping) or let other formats train it (grouping.transfer)"
                     for t, n, c in zip(layout.tasks, rows, clicks) if n > 0 and c < cfg.min_task_clicks]
        if problems and cfg.strict_data_checks:
            raise ValueError("train (train.strict_data_checks): " + "; ".join(problems))
        for problem in problems:
            warnings.warn(problem, stacklevel=3)

    def _balanced(self, format_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(group of each format, shares) for ``train.balanced_sampling``, else None."""
        train_cfg = self.config.train
        if not train_cfg.balanced_sampling:
            return None
        assert self.layout_ is not None
        try:
            group, shares, _ = format_groups(self.layout_.formats, self.format_attributes_, train_cfg.balance_by,
                                             train_cfg.balance_shares, present=format_rows > 0)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return group, shares

    def _validator(self, stream: BatchStream, source: str) -> Callable[[torch.nn.Module], tuple[float, dict]]:
        """model -> (mean validation AUC-PR over tasks, {"auc_pr": per task}), scored through the one ``Scorer``
        (uncalibrated) and reduced with ``BinnedMetrics`` (bounded memory)."""
        assert self.layout_ is not None and self.encoder_ is not None
        layout, encoder, cfg = self.layout_, self.encoder_, self.config

        def validate(model: torch.nn.Module) -> tuple[float, dict[str, Any]]:
            scorer = Scorer.torch(model, encoder, layout, cfg.schema, cfg.train.negative_sampling_rate)
            acc = BinnedMetrics(layout.formats, exact_max_rows=cfg.data.streaming.exact_metrics_max_rows)
            for batch in stream.batches(None):
                assert batch.labels is not None
                try:
                    pctr = scorer.score_batch(batch, source)
                except ScoreRangeError as err:  # on validation rows the usual cause is the model, not the inputs
                    raise FloatingPointError(f"validation: {err}. If those inputs are ordinary, training diverged: "
                                             f"lower train.learning_rate or the weight decay") from None
                acc.update(batch.format_ids.numpy(), batch.labels.numpy(), pctr, source=source)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)  # a task without clicks scores NaN
                per_task = {t: acc.metrics([f for f, ft in layout.format_to_task.items() if ft == t], t,
                                           "valid")["auc_pr"] for t in layout.tasks}
            finite = [v for v in per_task.values() if not np.isnan(v)]
            return (float(np.mean(finite)) if finite else float("nan")), {"auc_pr": per_task}

        return validate

    # ------------------------------------------------------------------ score
    def _require_fitted(self) -> tuple[FeatureEncoder, TaskLayout, torch.nn.Module]:
        if self.encoder_ is None or self.layout_ is None or self.model_ is None:
            raise RuntimeError("CTRPipeline is not fitted: call fit() or CTRPipeline.load()")
        return self.encoder_, self.layout_, self.model_

    def scorer(self, backend: str = "torch", threads: int | None = None, calibrated: bool = True) -> Scorer:
        """The ``Scorer`` of this model.

        Args:
            backend: ``torch`` (eager) or ``onnx`` (ONNX Runtime: the artifact's ``model.onnx``; a pipeline that was
                never saved is exported to a private temporary file, never into an artifact).
            threads: intra-op threads of a scoring call (ONNX Runtime session; for ``torch`` the process-wide
                ``torch.set_num_threads``); None = ONNX Runtime 1, torch unchanged.
            calibrated: apply the post-hoc calibration (when fitted).

        Raises:
            ValueError: unknown backend.
            RuntimeError: not fitted.
        """
        encoder, layout, model = self._require_fitted()
        calibration = self.calibration_ if calibrated else None
        rate = self.config.train.negative_sampling_rate
        if backend == "torch":
            if threads:
                torch.set_num_threads(threads)
            return Scorer.torch(model, encoder, layout, self.config.schema, rate, calibration)
        if backend != "onnx":
            raise ValueError(f"backend must be 'torch' or 'onnx', got '{backend}'")
        if self.onnx_path_ is not None:
            return Scorer.onnx(self.onnx_path_, encoder, layout, self.config.schema, calibration, threads)
        with tempfile.TemporaryDirectory() as tmp:  # ONNX Runtime reads the whole file when the session starts
            path = self._export_onnx(Path(tmp) / "model.onnx")
            return Scorer.onnx(path, encoder, layout, self.config.schema, calibration, threads)

    def _export_onnx(self, path: Path) -> Path:
        """Write the scoring head as ONNX (``camoe.scoring.onnx``) at ``path``."""
        encoder, layout, model = self._require_fitted()
        assert encoder.input_spec_ is not None
        module = ScoringModule(model, layout.format_task_index, self.config.train.negative_sampling_rate)
        return export_onnx(module, encoder.input_spec_, path)

    def encode(self, rows: Rows, source: str = "data", labels: bool = True) -> Batch:
        """Validate and encode rows into a ``Batch`` (features, format index, labels).

        Raises:
            ValueError: missing columns, unknown formats, labels outside {0, 1}, bad feature values (each message
                names the source, column and values).
        """
        encoder, layout, _ = self._require_fitted()
        return RowEncoder(encoder, layout, self.config.schema)(rows, source, labels).batch

    def predict_proba(self, rows: Rows, source: str = "data") -> np.ndarray:
        """One pCTR per row from the row's own task head: (N,)."""
        return self.scorer().score(rows, source).pctr

    def predict_task_proba(self, rows: Rows, source: str = "data") -> np.ndarray:
        """pCTR of every task head: (N, T), columns in ``layout_.tasks`` order."""
        return self.scorer().task_proba(rows, source)

    def evaluate(self, rows: pd.DataFrame | RowSource, split: str = "test", source: str | None = None) -> dict[str, Any]:
        """Per-format, per-task (and per-attribute, e.g. per-modality) metrics on labelled rows
        (``camoe.scoring.evaluate_source``: exact up to ``data.streaming.exact_metrics_max_rows`` rows, score
        histograms beyond).

        Returns:
            ``evaluate_groups``-shaped tables plus ``split``, ``oov``, ``input_quality`` and ``metric_precision``.
        """
        return evaluate_source(self.scorer(), as_source(rows, source or split), split,
                               attributes=self.format_attributes_,
                               exact_max_rows=self.config.data.streaming.exact_metrics_max_rows, name=source or split)

    def calibrate(self, rows: pd.DataFrame | RowSource, method: str = "platt", source: str = "valid") -> CTRPipeline:
        """Fit a post-hoc per-task calibration (``camoe.calibration``) on labelled rows, e.g. the validation split.

        It replaces any previous calibration, is saved with the artifact and applies to every later score.

        Raises:
            ValueError: unknown method, or rows that fail validation (named by ``source``).
        """
        scorer = self.scorer(calibrated=False)
        pctr, labels, tasks = [], [], []
        for chunk in as_source(rows, source).chunks(scorer.rows.columns(labels=True)):
            scores = scorer.score(chunk, source, labels=True)
            pctr.append(scores.pctr)
            labels.append(scores.labels)
            tasks.append(scores.task_ids)
        assert self.layout_ is not None
        join = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))  # noqa: E731
        self.calibration_ = PosthocCalibration.fit(method, join(pctr), join(labels), join(tasks), self.layout_.tasks)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None,
             manifest: dict[str, Any] | None = None) -> Path:
        """Write the artifact folder (see ``camoe.artifact``); ``manifest`` adds entries to its manifest (e.g. the
        split plan)."""
        encoder, layout, model = self._require_fitted()
        config = self.config.to_dict()
        config["_config_dir"] = self.config._config_dir
        tasks = {**layout.to_dict(), "format_attributes": self.format_attributes_}
        if self.calibration_ is not None:
            tasks["calibration"] = self.calibration_.to_dict()
        result = self.train_result_
        folder = save_artifact(
            folder, model.state_dict(), config, encoder.state_dict(), tasks, metrics,
            extra={"train": {"history": result.history if result else [],
                             "best_step": result.best_step if result else None,
                             "rows_per_s": result.rows_per_s if result else None,
                             "output_bias_shift": result.output_bias_shift if result else {},
                             "gates": self.diagnostics_}, **(manifest or {})},
            write_files={"model.onnx": self._export_onnx},
        )
        self.onnx_path_ = folder / "model.onnx"
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CTRPipeline:
        """Rebuild a fitted pipeline from an artifact folder; it scores exactly as the saved model did.

        Raises:
            ArtifactError: missing/altered files, or weights that do not fit the rebuilt model.
        """
        parts = load_artifact(folder)
        raw = dict(parts.config)
        config_dir = raw.pop("_config_dir", None)
        cfg = load_config(raw)
        cfg._config_dir = config_dir
        pipe = cls(cfg)
        try:
            pipe.encoder_ = FeatureEncoder.from_state(cfg.schema, parts.encoder)
            pipe.layout_ = TaskLayout.from_dict(parts.tasks)
            pipe.format_attributes_ = parts.tasks.get("format_attributes", {})
            if parts.tasks.get("calibration"):
                pipe.calibration_ = PosthocCalibration.from_dict(parts.tasks["calibration"])
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"{folder}: encoder or task state unreadable ({type(err).__name__}: {err})") from None
        assert pipe.encoder_.input_spec_ is not None
        pipe.model_ = build_model(cfg.model, pipe.encoder_.input_spec_, len(pipe.layout_.tasks))
        try:
            pipe.model_.load_state_dict(parts.weights, strict=True)
        except RuntimeError as err:
            raise ArtifactError(f"{folder}: weights do not fit the model built from its config: {err}") from None
        pipe.model_.eval()
        pipe.diagnostics_ = dict(parts.manifest.get("train", {}).get("gates") or {})  # validation gate weights
        if "model.onnx" in parts.manifest["files"]:  # verified with the rest; artifacts before 0.2 have none
            pipe.onnx_path_ = Path(folder) / "model.onnx"
        return pipe
