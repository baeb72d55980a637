"""Typed run configuration: schema, formats, grouping, model, training and data.

Every block is a pydantic model with ``extra="forbid"``, so an unknown or misspelt key (say ``na_value`` instead of
``fill_value``) fails at load time with the list of accepted keys (case B13 in ``shared/cases``). Defaults are
commented where they are declared. Experiment YAML files may name a ``base:`` file and hold only what differs.

Example:
    >>> cfg = RunConfig.model_validate({"schema": {"features": [{"name": "device", "type": "categorical"}]}})
    >>> cfg.model.expert_type, cfg.grouping.strategy, cfg.train.loss_normalisation
    ('dcn', 'auto', 'per_task')
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "DataConfig",
    "FeatureSpec",
    "GroupingConfig",
    "ModelConfig",
    "RunConfig",
    "SchemaConfig",
    "SplitConfig",
    "StreamingConfig",
    "TrainConfig",
    "deep_merge",
    "demo_config_path",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration file or dict is invalid; the message lists what is valid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=(), allow_inf_nan=False)


def _yaml_switch(value: object) -> object:
    """YAML 1.1 reads a bare ``off`` as false (and ``on`` as true): read them back as the words the user wrote."""
    return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value


class FeatureSpec(_Strict):
    """One input column and how it is encoded.

    Reserved ids in every categorical table: 0 = missing value, 1 = out-of-vocabulary (unseen at fit time).
    Multi-valued features use 0 as padding too; an empty list pools to a zero vector.
    """

    name: str  # column name (or the name of a derived feature)
    # categorical (one value), multi_categorical (a list or separated values) or numeric
    type: Literal["categorical", "multi_categorical", "numeric"]
    # categorical and multi_categorical
    encoding: Literal["vocab", "hash", "identity"] = "vocab"  # vocab: fitted on train; hash: stable hash buckets
    min_count: int = Field(1, ge=1)  # vocab: values seen fewer times in train map to OOV
    max_vocab: int | None = Field(None, ge=1)  # vocab: keep only the most frequent values
    hash_buckets: int | None = Field(None, ge=1)  # hash: number of buckets (table size = buckets + 2)
    num_ids: int | None = Field(None, ge=1)  # identity: ids are pre-encoded integers in [0, num_ids)
    out_of_range: Literal["error", "oov"] = "error"  # identity: strict error, or map to OOV and count
    separator: str = Field("|", min_length=1)  # multi_categorical: value separator inside one cell
    max_len: int = Field(8, ge=1)  # multi_categorical: values kept per row (first max_len)
    pooling: Literal["mean", "sum"] = "mean"  # multi_categorical: how the row's value embeddings are pooled
    # numeric
    transform: Literal["standard", "log", "none"] = "standard"  # log = sign(x)·log1p(|x|), then standardise
    fill_value: float | None = None  # numeric missing value; None = training mean
    missing_indicator: bool = False  # numeric: add a 0/1 dense column "<name>_missing"
    # numeric values outside the training range [min, max] when scoring: clip to it and count (clip), refuse the rows
    # (error), or pass them through (off); None = schema.clip
    clip: Literal["clip", "error", "off"] | None = None
    _yaml_off = field_validator("clip", mode="before")(lambda v: _yaml_switch(v))
    # all types: "default" = missing token / imputation; "error" = refuse rows with missing values
    missing: Literal["default", "error"] = "default"
    # computed instead of read (camoe.data.derived): hour / day_of_week of schema.timestamp (categorical), count =
    # rows with the same `key` strictly before this row's timestamp (numeric; log transform suits it), or match =
    # "1" when the row's `key` value is among the values of its multi-valued `within` column, else "0" (categorical)
    derive: Literal["hour", "day_of_week", "count", "match"] | None = None
    key: str | None = None  # derive: count: the entity column counted (e.g. user_id); match: e.g. ad_category
    within: str | None = None  # derive: match: the multi-valued column searched (split by `separator`), e.g. interests

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if self.encoding == "hash" and self.hash_buckets is None:
            raise ValueError(f"feature '{self.name}': encoding 'hash' needs hash_buckets (e.g. 100000)")
        if self.encoding == "identity" and self.num_ids is None:
            raise ValueError(f"feature '{self.name}': encoding 'identity' needs num_ids (the table size)")
        if self.type == "multi_categorical" and self.encoding == "identity":
            raise ValueError(f"feature '{self.name}': multi_categorical supports encoding vocab or hash, not identity")
        if self.type == "numeric" and self.encoding != "vocab":
            raise ValueError(f"feature '{self.name}': numeric features take no encoding (got '{self.encoding}')")
        if self.type != "numeric" and self.clip is not None:
            raise ValueError(f"feature '{self.name}': clip applies to numeric features only")
        if self.derive == "count" and (self.type != "numeric" or not self.key):
            raise ValueError(f"feature '{self.name}': derive: count needs type: numeric and key: <entity column>")
        if self.derive in ("hour", "day_of_week") and (self.type != "categorical" or self.encoding == "identity"):
            raise ValueError(f"feature '{self.name}': derive: {self.derive} needs type: categorical (vocab or hash)")
        if self.derive == "match" and (self.type != "categorical" or self.encoding == "identity" or not self.key
                                       or not self.within):
            raise ValueError(f"feature '{self.name}': derive: match needs type: categorical (vocab or hash), key: "
                             f"<one-valued column> and within: <multi-valued column>")
        if self.key is not None and self.derive not in ("count", "match"):
            raise ValueError(f"feature '{self.name}': key is read by derive: count and derive: match only")
        if self.within is not None and self.derive != "match":
            raise ValueError(f"feature '{self.name}': within is read by derive: match only")
        return self

    @property
    def source_columns(self) -> list[str]:
        """The columns this feature is read or derived from (hour / day_of_week: none but schema.timestamp)."""
        if self.derive in ("hour", "day_of_week"):
            return []
        if self.derive == "count":
            return [str(self.key)]
        if self.derive == "match":
            return [str(self.key), str(self.within)]
        return [self.name]

    @property
    def timed(self) -> bool:
        """True when the feature is derived from schema.timestamp (hour, day_of_week, count)."""
        return self.derive in ("hour", "day_of_week", "count")


class SchemaConfig(_Strict):
    """Which columns are the label, the ad format, the timestamp and the features."""

    label: str = "click"  # 0/1 click label
    format: str = "format"  # ad format column; picks the task head through the grouping
    timestamp: str | None = "ts"  # used by the temporal split and derived time features; None for logs without time
    timestamp_unit: Literal["s", "ms", "us", "ns"] = "s"  # numeric timestamps: Unix time in this unit
    true_prob: str | None = None  # optional true click probability (synthetic logs) for the oracle AUC-PR
    user: str | None = None  # optional user id column: GAUC (per-user AUC) in the metrics
    # numeric values outside their training range at scoring time: clip (default, counted per feature) | error | off
    clip: Literal["clip", "error", "off"] = "clip"
    _yaml_off = field_validator("clip", mode="before")(lambda v: _yaml_switch(v))
    features: list[FeatureSpec] = Field(min_length=1)  # the model's input columns, one entry each

    @model_validator(mode="after")
    def _check(self) -> SchemaConfig:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schema.features: duplicate feature names {dupes}")
        reserved = {self.label} | ({self.true_prob} if self.true_prob else set())
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"schema.features: {clash} is the label or true_prob column and cannot be a feature")
        by_name = {f.name: f for f in self.features}
        for f in self.features:
            read = [c for c in (f.key, f.within) if c is not None]
            if set(read) & reserved:
                raise ValueError(f"feature '{f.name}': derived from {sorted(set(read) & reserved)}, the label or "
                                 f"true_prob column (the model would see the click it predicts)")
            for c in read:
                if c in by_name and by_name[c].derive is not None:
                    raise ValueError(f"feature '{f.name}': '{c}' is itself a derived feature; key and within name "
                                     f"columns of the data")
            if f.derive != "match":
                continue
            key, within = by_name.get(str(f.key)), by_name.get(str(f.within))
            if f.key == f.within:
                raise ValueError(f"feature '{f.name}': key and within are both '{f.key}'; key names a one-valued "
                                 f"column (e.g. ad_category), within a multi-valued one (e.g. interests)")
            if key is not None and key.type == "multi_categorical":
                raise ValueError(f"feature '{f.name}': key '{f.key}' is a multi_categorical feature; key names a "
                                 f"one-valued column")
            if within is not None and within.type == "multi_categorical" and within.separator != f.separator:
                raise ValueError(f"feature '{f.name}': splits '{f.within}' by separator '{f.separator}', but feature "
                                 f"'{f.within}' splits it by '{within.separator}'; give both the same separator")
        timed = [f.name for f in self.features if f.timed]
        if timed and self.timestamp is None:
            raise ValueError(f"schema.features: {timed} are derived from the timestamp; set schema.timestamp")
        return self


class GroupingConfig(_Strict):
    """How ad formats are grouped into tasks (one gate + one tower per task).

    ``auto`` (default) groups by ``modality`` when every format has a modality attribute (``RunConfig.formats``) and
    gives every format its own task otherwise; ``modality``, ``content`` and ``slot`` group by that attribute of each
    format; ``modality2`` is the deployed 2-head form (audio + display → ``audio``, video → ``video``); ``per_format``
    gives every format its own task; ``single`` one task; ``explicit`` takes ``task_map``.
    ``transfer`` adds entries to the format × task loss mask: ``{video_takeover: [audio]}`` lets video_takeover rows
    also train the audio head (directional transfer). A row is always scored by its own task's head.
    """

    # how ad formats become tasks (the strategies are described above)
    strategy: Literal["auto", "single", "modality", "modality2", "content", "slot", "per_format", "explicit"] = "auto"
    task_map: dict[str, str] | None = None  # explicit: format -> task
    transfer: dict[str, list[str]] = Field(default_factory=dict)  # format -> extra tasks its rows also train
    # soft transfer: every format's rows also train every other task's head with this loss weight (0 = hard masking);
    # a rare task's head then learns from its neighbours' rows while its own rows weigh 1 / transfer_weight times more
    transfer_weight: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> GroupingConfig:
        if self.strategy == "explicit" and not self.task_map:
            raise ValueError("grouping: strategy 'explicit' needs task_map (format -> task)")
        if self.strategy != "explicit" and self.task_map:
            raise ValueError(f"grouping: task_map is only read by strategy 'explicit', not '{self.strategy}'")
        return self


class ModelConfig(_Strict):
    """Network sizes. The paper publishes none of these; defaults are this project's choices."""

    name: Literal["camoe", "mmoe", "shared_bottom", "cgc", "dnn", "dcn_v2"] = "camoe"  # key in camoe.model.MODELS
    embedding_dim: int = Field(16, ge=1)  # D, shared by all categorical tables
    embedding_init_std: float = Field(0.05, gt=0)  # normal init of embedding rows
    pairwise_dot: bool = False  # append the dot products of every pair of field embeddings to x0 (DLRM-style)
    # add a first-order term to every task's logit: one learned weight per categorical value and numeric column (the
    # wide part of Wide & Deep; camoe.model.LinearTerm), so main effects are shared scalars learned from every format
    wide: bool = False
    # sparse embedding gradients: each step updates only the table rows its batch looked up (lazy Adam,
    # torch.optim.SparseAdam; no weight decay or gradient clipping on the tables), instead of a dense Adam step over
    # every row. Faster with large vocabularies; not with NCCL data parallelism.
    sparse_embeddings: bool = False
    num_experts: int = Field(4, ge=1)  # E (cgc: shared experts)
    task_experts: int = Field(1, ge=1)  # cgc only: experts owned by each task
    expert_type: Literal["dcn", "mlp"] = "dcn"  # dcn = CrossNetV2 then MLP; mlp = MLP only (MMoE)
    num_cross_layers: int = Field(2, ge=1)  # cross layers per DCN expert (paper: 2-3)
    low_rank: int | None = Field(None, ge=1)  # W = U V^T with this rank; ≈ in_dim / 4 keeps accuracy
    expert_hidden: list[int] = Field(default_factory=lambda: [128, 64])  # MLP after the cross layers; last = H
    tower_hidden: list[int] = Field(default_factory=lambda: [64])  # per-task tower before the logit
    # a shared gate and tower trained by every row, whose logit is added to every task's (logit_t = tower_t + shared):
    # a rare task's head learns the residual over what all formats learned (camoe.model.moe)
    shared_tower: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # dropout rate after each hidden layer of the experts and towers
    # normalisation between each hidden linear layer of experts and towers and its ReLU (camoe.model.GroupedNorm)
    norm: Literal["batch", "layer"] | None = None
    # (T, E) experts each task's gate may use (camoe / mmoe); written by `camoe prune`. None = every expert.
    gate_mask: list[list[bool]] | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.gate_mask is not None:
            widths = {len(row) for row in self.gate_mask}
            if not self.gate_mask or widths != {self.num_experts} or not all(any(row) for row in self.gate_mask):
                raise ValueError(
                    f"model.gate_mask must be a T x E table (E = num_experts = {self.num_experts}) with at least one "
                    f"true entry per task row; got row widths {sorted(widths)}"
                )
        if not self.expert_hidden or min(self.expert_hidden) < 1:
            raise ValueError("model.expert_hidden must list at least one positive width")
        if any(w < 1 for w in self.tower_hidden):
            raise ValueError("model.tower_hidden widths must be positive")
        return self


class TrainConfig(_Strict):
    """Optimisation. Loss: masked BCE, per-task mean over the task's rows (see camoe.training.loss)."""

    batch_size: int = Field(2048, ge=1)  # rows per optimizer step (the global batch under data parallelism)
    epochs: int = Field(4, ge=1)  # passes over the training split (early stopping may end sooner)
    learning_rate: float = Field(2e-3, gt=0)  # AdamW learning rate (the peak of the schedule)
    embedding_learning_rate: float | None = Field(None, gt=0)  # of the embedding tables; null = learning_rate
    weight_decay: float = Field(0.0, ge=0)  # AdamW decoupled weight decay
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # cosine: decay to 0 over epochs × steps per epoch
    # validate, keep and export an exponential moving average of the weights (Polyak averaging; torch.optim.swa_utils)
    # with this decay per step, e.g. 0.999 (a window of ~1,000 steps; warmed up: after n updates the decay is at most
    # (1 + n) / (10 + n), so short runs average their own steps); null = the raw weights
    ema_decay: float | None = Field(None, gt=0, lt=1)
    _ema_off = field_validator("ema_decay", mode="before")(
        lambda v: None if v is False or (isinstance(v, str) and v.strip().lower() in ("off", "false", "none")) else v)
    # after training, shift each task's logit bias so its mean pCTR over the training rows equals its training CTR
    # (the maximum-likelihood intercept; one forward pass over the training rows): Adam leaves the intercept where its
    # last noisy steps put it (calibration 0.88-1.3 between checkpoints); rankings within a task are unchanged
    refit_output_bias: bool = False
    warmup_steps: int = Field(0, ge=0)  # linear learning-rate warm-up over the first steps, then lr_schedule
    l2_embedding: float = Field(0.0, ge=0)  # extra L2 on looked-up embeddings, logged as its own loss part
    patience: int = Field(2, ge=1)  # early stopping: evaluations without a better mean validation AUC-PR
    eval_every_steps: int | None = Field(None, ge=1)  # None = evaluate at each epoch end
    seed: int = 0  # seeds initialisation, shuffling and dropout (same seed on the CPU = identical metrics)
    shuffle: bool = True  # shuffle the training rows each epoch (False: file order)
    masking: bool = True  # False: every head trains on every row (other tasks' rows as-is), as peer libraries do
    loss_normalisation: Literal["per_task", "global"] = "per_task"  # per_task: mean over the task's rows
    task_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)  # lambda_t, default 1
    entropy_weighting: bool = True  # lambda_t ∝ 1 / H(train CTR of task t): each head's loss counts as its NE
    uncertainty_weighting: bool = False  # Kendall et al. 2018 learned task weights (off by default)
    grad_clip_norm: float | None = Field(None, gt=0)  # clip the gradient norm to this value; null = no clipping
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    checkpoint_every_steps: int | None = Field(None, ge=1)  # also at each epoch end; resume with --resume
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimizer steps (a time budget)
    negative_sampling_rate: float | None = Field(None, gt=0, le=1)  # w if negatives were kept at rate w
    fused_optimizer: bool = True  # AdamW's fused kernel (one pass over all parameters); False = foreach
    reuse_freed_memory: bool = True  # glibc keeps freed memory for the next step (no page faults per step; the
    # process keeps its peak memory): DCN-expert steps 25% faster on the reference network (training/allocator.py)
    compile: bool = False  # torch.compile the model for training (first steps compile; needs a C++ compiler on CPU)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: torch.autocast of the forward pass (loss and weights fp32)
    finite_check_every_steps: int = Field(32, ge=1)  # read loss parts back (and stop on NaN/inf) every N steps
    min_task_clicks: int = Field(10, ge=0)  # fewer clicks in a task's training rows: a warning naming the task
    min_valid_clicks: int = Field(200, ge=0)  # fewer validation clicks in a task: a warning (AUC-PR too noisy to
    #   choose epochs or settings on), saying how many a ±10% interval needs
    warm_start_numeric: Literal["keep", "update"] = "keep"  # --warm-start: numeric statistics of the old artifact
    #   (keep: the input scale its weights learned) or of the new rows (update)
    strict_data_checks: bool = False  # True: that warning (and a task without training rows) is an error
    balanced_sampling: bool = False  # draw each epoch with fixed shares per group (camoe.data.sampling)
    balance_by: str = "modality"  # format attribute that defines the groups, or "format"
    balance_shares: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)  # {} = equal


class SplitConfig(_Strict):
    """The train / valid / test split of ``data.path`` (``camoe.data.split``): exact cut points on the timestamp
    (``temporal``; rows sharing a cut timestamp stay in the earlier split) or a seeded hash of the row position
    (``random``)."""

    method: Literal["temporal", "random"] = "temporal"  # temporal: by schema.timestamp
    valid_fraction: float = Field(0.1, ge=0, lt=1)  # share of the rows in the validation split (early stopping)
    test_fraction: float = Field(0.2, ge=0, lt=1)  # share of the rows in the test split (the reported metrics)
    seed: int = 0  # random split only

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(f"valid_fraction + test_fraction must be < 1 (the rest trains), got "
                             f"{self.valid_fraction} + {self.test_fraction}")
        return self


class StreamingConfig(_Strict):
    """Streaming input: Parquet read in record batches through pyarrow datasets, never whole (bounded memory).

    Encoders are fitted in one streaming pass over the train split (vocabulary counts, numeric moments); the
    temporal split is a timestamp filter with exact cut points found by narrowing timestamp histograms (every row of
    one timestamp lands in the same split, the earlier one). Memory grows with ``shuffle_buffer_rows``
    and vocabulary sizes, not with the number of rows; use ``encoding: hash`` for features with huge vocabularies.
    """

    enabled: bool = False  # True: train / evaluate / predict stream data.path (Parquet) instead of loading it
    shuffle_buffer_rows: int = Field(262_144, ge=1)  # rows mixed before batching; 1 = file order
    read_batch_rows: int = Field(16_384, ge=1)  # rows per Arrow record batch read (and converted to pandas)
    max_distinct_values: int = Field(2_000_000, ge=1)  # vocab features: refuse to count more distinct values
    histogram_bins: int = Field(1 << 20, ge=16)  # timestamp histogram for the temporal cut points
    exact_metrics_max_rows: int = Field(262_144, ge=0)  # larger validation / test splits: pCTR histograms


class DataConfig(_Strict):
    """Where the log is. ``path`` is a CSV/Parquet file, a folder of them, or a glob; relative paths are resolved
    against the working directory, then against the config file's folder."""

    path: str | None = None  # the log: a CSV / Parquet file, a folder of them, or a glob
    # how files are read: auto (by suffix), csv, parquet, or a public log's reader (open_bandit, ipinyou_fm)
    reader: Literal["auto", "csv", "parquet", "open_bandit", "ipinyou_fm"] = "auto"
    valid_path: str | None = None  # explicit validation file (then no split for validation)
    test_path: str | None = None  # explicit test file (then no split for test)
    split: SplitConfig = Field(default_factory=SplitConfig)  # how the rows are split into train / valid / test
    reader_options: dict[str, Any] = Field(default_factory=dict)  # passed to the named reader
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)


class RunConfig(_Strict):
    """A whole run. ``formats`` maps each ad format to its attributes (modality, content, slot, ...)."""

    data: DataConfig = Field(default_factory=DataConfig)
    schema_: SchemaConfig = Field(alias="schema")
    formats: dict[str, dict[str, str]] | None = None  # None: formats are taken from the training data
    grouping: GroupingConfig = Field(default_factory=GroupingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str = "runs/latest"  # artifact folder written by camoe train (--output overrides it)
    _config_dir: str | None = PrivateAttr(None)  # folder of the YAML file, for relative data paths

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=(), allow_inf_nan=False)

    @property
    def schema(self) -> SchemaConfig:  # type: ignore[override]
        return self.schema_

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, with ``schema`` under its public name."""
        return self.model_dump(by_alias=True, mode="json")


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path}: 'base' chain loops back to itself")
    try:
        with path.open() as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping at top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return deep_merge(_read_yaml(path.parent / base, seen + (path.resolve(),)), raw)


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """Turn a pydantic error into one message naming each bad key, the value given and what is accepted there, in
    plain words (no "Input should be ..." or "Value error, ..." wording).

    Example:
        >>> try:
        ...     RunConfig.model_validate({"schema": {"features": [{"name": "a", "type": "numerc"}]}})
        ... except ValidationError as err:
        ...     print(format_validation_error(err, RunConfig, "my.yaml"))
        invalid config my.yaml:
          schema.features[0].type: 'numerc' is not accepted; expected one of 'categorical', 'multi_categorical', 'numeric'
    """
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        loc = _loc_text(item["loc"])
        lines.append(f"  {loc}: {_plain_message(item, model)}" if loc else f"  {_plain_message(item, model)}")
    return "\n".join(lines)


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _plain_message(item: Any, model: type[BaseModel]) -> str:
    kind, ctx, given = item["type"], item.get("ctx") or {}, item.get("input")
    shown = repr(given) if isinstance(given, (str, int, float, bool)) or given is None else type(given).__name__
    if kind == "extra_forbidden":
        parent = _model_at(model, item["loc"][:-1])
        valid = sorted(_public_fields(parent)) if parent is not None else []
        return f"unknown key; accepted keys here: {', '.join(valid)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{shown} is not accepted; expected one of {ctx.get('expected', '')}".replace(" or ", ", ")
    if kind == "value_error":
        return str(ctx.get("error", item["msg"])).removeprefix("Value error, ")
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    for name, op in bounds.items():
        if kind == name:
            limit = next(iter(ctx.values()), "")
            return f"must be {op} {limit}, got {shown}"
    expected = {"int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
                "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
                "bool_type": "true or false", "string_type": "text", "list_type": "a list", "dict_type": "a mapping",
                "model_type": "a mapping of keys", "finite_number": "a finite number", "too_short": "more entries"}
    if kind in expected:
        return f"expected {expected[kind]}, got {shown}"
    return f"{item['msg']} (got {shown})"


def _public_fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or n): f for n, f in current.model_fields.items()}
        if part not in fields:
            return None
        ann = fields[part].annotation
        args = getattr(ann, "__args__", None)
        candidates = [a for a in (args or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        current = candidates[0]
    return current if isinstance(current, type) else None


def load_config(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a run config.

    Args:
        source: YAML path (may name a ``base:`` file it extends) or an already-parsed dict.
        overrides: nested dict merged on top (e.g. ``{"train": {"epochs": 1}}``).

    Returns:
        The validated ``RunConfig``. A YAML source also records its folder in ``RunConfig.data`` path resolution.

    Raises:
        ConfigError: file missing, unknown keys (listing accepted ones), wrong types or impossible values.
    """
    if isinstance(source, dict):
        raw, name = copy.deepcopy(source), "<dict>"
    else:
        path = Path(source)
        raw, name = _read_yaml(path), str(path)
        raw.setdefault("_config_dir", str(path.resolve().parent))
    if overrides:
        raw = deep_merge(raw, overrides)
    config_dir = raw.pop("_config_dir", None)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, RunConfig, name)) from None
    if config_dir is not None:
        cfg._config_dir = config_dir
    return cfg


def resolve_path(cfg: RunConfig, path: str) -> Path:
    """Resolve a data path: as given if it exists (or is a glob), else relative to the config file's folder."""
    p = Path(path)
    if p.is_absolute() or p.exists() or any(ch in path for ch in "*?["):
        return p
    config_dir = cfg._config_dir
    if config_dir is not None and (Path(config_dir) / p).exists():
        return Path(config_dir) / p
    return p


def demo_config_path() -> Path:
    """Path of the packaged demo config (``camoe/configs/synthetic.yaml``)."""
    return Path(str(resources.files("camoe") / "configs" / "synthetic.yaml"))
