"""``CTRPipeline``: encoder + task layout + model, fitted and scored as one estimator.

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

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import warnings

import numpy as np
import pandas as pd
import torch

from camoe.artifact import ArtifactError, load_artifact, save_artifact
from camoe.batch import Batch
from camoe.calibration import PosthocCalibration
from camoe.config import ConfigError, RunConfig
from camoe.data.columns import format_names as _format_names, label_values as _labels
from camoe.data.encoders import EncodedFeatures, FeatureEncoder
from camoe.evaluation.diagnostics import gate_summary, gate_warnings, identical_pairs
from camoe.evaluation.metrics import evaluate_groups
from camoe.grouping import TaskLayout, build_task_layout
from camoe.model import build_model
from camoe.training.sampling import row_groups
from camoe.training.distributed import DistContext
from camoe.training.trainer import TrainResult, predict_logits, train_model

__all__ = ["CTRPipeline", "correct_downsampling"]


def correct_downsampling(p: np.ndarray, rate: float) -> np.ndarray:
    """Undo negative downsampling: q = p / (p + (1 − p) / w) (He et al. 2014, Sec. 6.2 re-calibration).

    Args:
        p: pCTR of a model trained on data whose negatives were kept with probability ``rate`` = w.
        rate: w in (0, 1].

    Example:
        >>> round(float(correct_downsampling(np.array([0.5]), 0.1)[0]), 4)
        0.0909
    """
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate must be in (0, 1], got {rate}")
    p = np.asarray(p, dtype=np.float64)
    return p / (p + (1.0 - p) / rate)


class CTRPipeline:
    """Encoder + task layout + multi-task CTR model.

    Args:
        config: the run config (schema, formats, grouping, model, train).

    Fitted attributes: ``encoder_``, ``layout_``, ``model_``, ``train_result_``, ``format_attributes_``.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.encoder_: FeatureEncoder | None = None
        self.layout_: TaskLayout | None = None
        self.model_: torch.nn.Module | None = None
        self.train_result_: TrainResult | None = None
        self.format_attributes_: dict[str, dict[str, str]] = {}
        self.last_encoding_: EncodedFeatures | None = None
        self.diagnostics_: dict[str, Any] = {}
        self.calibration_: PosthocCalibration | None = None  # post-hoc per-task map (``calibrate``), saved with it

    # ------------------------------------------------------------------ data
    def _resolve_formats(self, formats: np.ndarray) -> dict[str, dict[str, str]]:
        table = self.config.formats
        present = sorted(set(formats))
        if table is None:
            return {f: {} for f in present}
        unknown = [f for f in present if f not in table]
        if unknown:
            raise ValueError(
                f"train: ad formats {unknown} are not in the config's formats table; known formats: {list(table)}"
            )
        return {f: dict(attrs) for f, attrs in table.items()}

    def encode(
        self, frame: pd.DataFrame | Mapping[str, Sequence[Any]], source: str = "data", labels: bool = True
    ) -> Batch:
        """Validate and encode rows into a ``Batch`` (features, format index, labels).

        ``frame`` is a DataFrame or a mapping {column: N values} (see ``FeatureEncoder.transform``).

        Raises:
            ValueError: missing columns, unknown formats, labels outside {0, 1}, bad feature values (each message
                names the source, column and values).
        """
        if self.encoder_ is None or self.layout_ is None:
            raise RuntimeError("CTRPipeline is not fitted: call fit() or CTRPipeline.load()")
        schema = self.config.schema
        fmt = self.layout_.format_index(_format_names(frame, schema.format, source), where=f"{source} column '{schema.format}'")
        enc = self.encoder_.transform(frame, source)
        self.last_encoding_ = enc
        return Batch(
            cat_ids=torch.from_numpy(enc.cat_ids),
            multi_ids=torch.from_numpy(enc.multi_ids),
            dense=torch.from_numpy(enc.dense),
            format_ids=torch.from_numpy(fmt),
            labels=torch.from_numpy(_labels(frame, schema.label, source)) if labels else None,
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        progress: bool = False,
        log: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_path: str | Path | None = None,
        resume: bool = False,
        dist_ctx: DistContext | None = None,
        sources: dict[str, str] | None = None,
    ) -> CTRPipeline:
        """Fit the encoder on ``train`` only, build the model from the encoder's table sizes, train.

        Args:
            train: training rows.
            valid: validation rows for early stopping on mean task AUC-PR (optional).
            progress: show a progress bar.
            log: receives each evaluation's history entry.
            checkpoint_path: training checkpoint file (see ``train_model``); None = no checkpoints.
            resume: continue from ``checkpoint_path``. The encoder is refitted on the same rows, which gives the
                same state, so the checkpoint's weights fit.
            dist_ctx: data-parallel context (``camoe.training.distributed``); every rank holds all rows and trains
                on its share of each global batch.
            sources: how errors name the rows, e.g. {"train": "train split of log.csv", "valid": "valid.csv"}.

        Returns:
            self.
        """
        cfg = self.config
        sources = sources or {}
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        if len(train) == 0:
            raise ValueError("train: no rows")
        formats = _format_names(train, cfg.schema.format, "train")
        self.format_attributes_ = self._resolve_formats(formats)
        try:
            self.layout_ = build_task_layout(cfg.grouping, self.format_attributes_)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.encoder_ = FeatureEncoder(cfg.schema).fit(train, "train")
        train_batch = self.encode(train, sources.get("train", "train"))
        valid_batch = self.encode(valid, sources.get("valid", "valid")) if valid is not None and len(valid) else None
        torch.manual_seed(cfg.train.seed)
        assert self.encoder_.input_spec_ is not None
        self.model_ = build_model(cfg.model, self.encoder_.input_spec_, len(self.layout_.tasks))
        valid_formats = valid_batch.format_ids.numpy() if valid_batch is not None else None

        def score(logits: np.ndarray) -> tuple[float, dict[str, Any]]:
            assert valid_batch is not None and valid_batch.labels is not None and self.layout_ is not None
            result = self._metrics(logits, valid_batch.labels.numpy(), np.array(self.layout_.formats)[valid_formats],
                                   None, "valid", quiet=True)
            per_task = {t: m["auc_pr"] for t, m in result["tasks"].items()}
            return result["macro"]["auc_pr"], {"auc_pr": per_task}

        empty = [t for t, n in zip(self.layout_.tasks, (self.layout_.mask[train_batch.format_ids.numpy()]).sum(0)) if n == 0]
        if empty:
            warnings.warn(f"tasks {empty} have no training rows: their heads stay untrained and score at init",
                          stacklevel=2)
        self.train_result_ = train_model(
            self.model_, train_batch, self.layout_.mask, self.layout_.tasks, cfg.train,
            valid=valid_batch, score_fn=score if valid_batch is not None else None, progress=progress, log=log,
            checkpoint_path=Path(checkpoint_path) if checkpoint_path is not None else None, resume=resume,
            balanced_groups=self._balanced_groups(train_batch), dist_ctx=dist_ctx,
        )
        self.diagnostics_ = self._gate_diagnostics(valid_batch if valid_batch is not None else train_batch)
        return self

    def _balanced_groups(self, batch: Batch) -> tuple[np.ndarray, np.ndarray] | None:
        """(row groups, shares) for ``train.balanced_sampling`` (groups by ``train.balance_by``), else None."""
        train_cfg = self.config.train
        if not train_cfg.balanced_sampling:
            return None
        assert self.layout_ is not None
        try:
            groups, shares, _ = row_groups(batch.format_ids.numpy(), self.layout_.formats, self.format_attributes_,
                                           train_cfg.balance_by, train_cfg.balance_shares)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return groups, shares

    @torch.no_grad()
    def _gate_diagnostics(self, batch: Batch, max_rows: int = 200_000) -> dict[str, Any]:
        """Mean gate weight per task and expert over the rows each task scores; warns on identical experts,
        collapsed (> 95% on one expert) or exactly uniform gates (case B05)."""
        assert self.model_ is not None and self.layout_ is not None
        model, tasks = self.model_, self.layout_.tasks
        task_of_format = torch.as_tensor(self.layout_.format_task_index)
        sums = counts = None
        for start in range(0, min(len(batch), max_rows), 65536):
            part = batch.select(slice(start, min(start + 65536, max_rows)))
            gates = model(part.cat_ids, part.multi_ids, part.dense).gate_weights  # (B, T, E)
            task = task_of_format[part.format_ids]  # (B,)
            own = gates[torch.arange(len(part)), task]  # (B, E)
            if sums is None:
                sums, counts = torch.zeros(len(tasks), own.shape[1]), torch.zeros(len(tasks))
            sums.index_add_(0, task, own.float())
            counts += torch.bincount(task, minlength=len(tasks)).float()
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

    # ------------------------------------------------------------------ score
    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, T) logits -> pCTR: sigmoid, negative-downsampling correction once, then the post-hoc calibration."""
        p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        rate = self.config.train.negative_sampling_rate
        p = correct_downsampling(p, rate) if rate is not None else p
        if self.calibration_ is not None and self.layout_ is not None:
            p = self.calibration_.apply_matrix(p, self.layout_.tasks)
        return p

    def calibrate(self, frame: pd.DataFrame, method: str = "platt", source: str = "valid") -> CTRPipeline:
        """Fit a post-hoc per-task calibration (``camoe.calibration``) on labelled rows, e.g. the validation split.

        It replaces any previous calibration, is saved with the artifact and applies to every later score
        (``predict_proba``, ``evaluate``, ONNX scoring, the service).

        Raises:
            ValueError: unknown method, or rows that fail validation (named by ``source``).
        """
        if self.model_ is None or self.layout_ is None:
            raise RuntimeError("CTRPipeline is not fitted")
        self.calibration_ = None
        batch = self.encode(frame, source)
        assert batch.labels is not None
        probs = self._probabilities(predict_logits(self.model_, batch))  # (N, T), uncalibrated
        task = np.asarray(self.layout_.format_task_index)[batch.format_ids.numpy()]  # (N,)
        own = np.take_along_axis(probs, task[:, None], axis=1)[:, 0]
        self.calibration_ = PosthocCalibration.fit(method, own, batch.labels.numpy(), task, self.layout_.tasks)
        return self

    def check_finite_scores(self, pctr: np.ndarray, batch: Batch, source: str) -> None:
        """Refuse non-finite scores instead of returning them.

        A finite input far outside the training range (e.g. 1e39 seconds) can overflow inside the network in float32;
        the error names the rows' numeric features with the largest standardised values.

        Raises:
            ValueError: ``pctr`` (N,) or (N, T) holds NaN / inf.
        """
        bad = ~np.isfinite(pctr)
        if bad.ndim == 2:
            bad = bad.any(axis=1)
        if not bad.any():
            return
        dense = batch.dense.numpy()[bad]  # (n_bad, N_dense) standardised values
        names = self.encoder_.input_spec_.dense_features if self.encoder_ and self.encoder_.input_spec_ else ()
        worst = ""
        if dense.size:
            col = int(np.abs(dense).max(axis=0).argmax())
            worst = (f"; numeric feature '{names[col]}' reaches {float(np.abs(dense[:, col]).max()):.3g} training "
                     f"standard deviations from its mean in those rows")
        raise ValueError(f"{source}: {int(bad.sum())} rows give a non-finite pCTR (the inputs overflow the model)"
                         f"{worst}; fix or clip those values")

    def predict_task_proba(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]], source: str = "data") -> np.ndarray:
        """pCTR of every task head: (N, T), columns in ``layout_.tasks`` order (downsampling corrected once)."""
        if self.model_ is None:
            raise RuntimeError("CTRPipeline is not fitted")
        batch = self.encode(frame, source, labels=False)
        probs = self._probabilities(predict_logits(self.model_, batch))
        self.check_finite_scores(probs, batch, source)
        return probs

    def predict_proba(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]], source: str = "data") -> np.ndarray:
        """One pCTR per row from the row's own task head: (N,)."""
        if self.model_ is None or self.layout_ is None:
            raise RuntimeError("CTRPipeline is not fitted")
        batch = self.encode(frame, source, labels=False)
        probs = self._probabilities(predict_logits(self.model_, batch))  # (N, T)
        task = torch.as_tensor(self.layout_.format_task_index)[batch.format_ids].numpy()  # (N,)
        own = np.take_along_axis(probs, task[:, None], axis=1)[:, 0]
        self.check_finite_scores(own, batch, source)
        return own

    def _metrics(
        self, logits: np.ndarray, labels: np.ndarray, formats: np.ndarray, true_prob: np.ndarray | None, split: str,
        quiet: bool = False,
    ) -> dict[str, Any]:
        assert self.layout_ is not None
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            return evaluate_groups(
                labels, self._probabilities(logits), formats, self.layout_.format_to_task, self.layout_.tasks,
                true_prob=true_prob, split=split, group_attributes=self.format_attributes_,
            )

    def evaluate(self, frame: pd.DataFrame, split: str = "test", source: str | None = None) -> dict[str, Any]:
        """Per-format, per-task (and per-attribute, e.g. per-modality) metrics on labelled rows.

        Returns:
            ``evaluate_groups`` output plus ``split`` and ``oov`` (rows mapped to OOV per feature).
        """
        if self.model_ is None:
            raise RuntimeError("CTRPipeline is not fitted")
        batch = self.encode(frame, source or split)  # errors name ``source`` (e.g. the file), else the split
        assert batch.labels is not None and self.layout_ is not None and self.last_encoding_ is not None
        true_prob = self._true_prob(frame, split)
        formats = np.array(self.layout_.formats)[batch.format_ids.numpy()]
        result = self._metrics(predict_logits(self.model_, batch), batch.labels.numpy(), formats, true_prob, split)
        result["split"] = split
        result["oov"] = dict(self.last_encoding_.oov_counts)
        return result

    def _true_prob(self, frame: pd.DataFrame, split: str) -> np.ndarray | None:
        column = self.config.schema.true_prob
        if column is None:
            return None
        if column not in frame.columns:
            warnings.warn(f"{split}: true_prob column '{column}' (schema.true_prob) not found; no oracle metrics",
                          stacklevel=3)
            return None
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~((values >= 0) & (values <= 1))
        if bad.any():
            raise ValueError(f"{split}: true_prob column '{column}' must hold probabilities in [0, 1]; "
                             f"{int(bad.sum())} rows do not (e.g. {frame[column][bad].astype(str).head(3).tolist()})")
        return values

    def check_rows(self, frame: pd.DataFrame, source: str) -> None:
        """Cheap checks that need no fitted state: label and format columns (used before training)."""
        _labels(frame, self.config.schema.label, source)
        formats = _format_names(frame, self.config.schema.format, source)
        table = self.config.formats
        if table is not None:
            unknown = sorted(set(formats) - set(table))
            if unknown:
                raise ValueError(f"{source}: ad formats {unknown} are not in the config's formats table; "
                                 f"known formats: {list(table)}")

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the artifact folder (see ``camoe.artifact``)."""
        if self.model_ is None or self.encoder_ is None or self.layout_ is None:
            raise RuntimeError("CTRPipeline is not fitted")
        config = self.config.to_dict()
        config["_config_dir"] = self.config._config_dir
        tasks = {**self.layout_.to_dict(), "format_attributes": self.format_attributes_}
        if self.calibration_ is not None:
            tasks["calibration"] = self.calibration_.to_dict()
        history = self.train_result_.history if self.train_result_ is not None else []
        return save_artifact(
            folder, self.model_.state_dict(), config, self.encoder_.state_dict(), tasks, metrics,
            extra={"train": {"history": history, "best_step": getattr(self.train_result_, "best_step", None),
                             "rows_per_s": getattr(self.train_result_, "rows_per_s", None),
                             "gates": self.diagnostics_}},
        )

    @classmethod
    def load(cls, folder: str | Path) -> CTRPipeline:
        """Rebuild a fitted pipeline from an artifact folder; it scores exactly as the saved model did.

        Raises:
            ArtifactError: missing/altered files, or weights that do not fit the rebuilt model.
        """
        from camoe.config import load_config

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
        return pipe

