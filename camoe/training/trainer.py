"""Training: AdamW on the masked multi-task loss, early stopping on mean validation AUC-PR over tasks.

``Trainer`` runs any registered model (forward -> ``ModelOutput`` with (B, T) logits) in small named steps:

* ``build``            optimizer, schedule, loss constants (task weights, initial biases), wrappers (DDP, compile);
* ``restore``          continue from a ``Checkpoint`` (the result is bit-identical on CPU to an uninterrupted run);
* ``step``             one optimizer step on this rank's share of a global batch;
* ``evaluate``         read back the loss parts, validate (``validate(model)`` -> score, details), keep the best
                       weights, decide on early stopping;
* ``save_checkpoint``  everything a restart needs, written atomically.

In memory, streamed and data-parallel training differ only in the data (a ``TrainData``: the batches of an epoch)
and the distributed context: every rank reads the same global batches and trains on rows r::P of each, with each
task's loss normalised by its rows in the whole global batch, so P processes compute the gradient of one.

Every random source is seeded from ``TrainConfig.seed`` (the caller seeds init with ``torch.manual_seed``; the data
order uses its own generator; dropout uses the global generator seeded here), so the same seed on CPU gives
bit-identical weights and metrics.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim import swa_utils
from tqdm.auto import tqdm

from camoe.batch import Batch
from camoe.config import TrainConfig
from camoe.training.allocator import reuse_freed_memory
from camoe.training.checkpoint import Checkpoint, TrainState
from camoe.training.distributed import DistContext
from camoe.training.loss import masked_bce

__all__ = ["TrainData", "TrainResult", "Trainer"]

Validate = Callable[[nn.Module], tuple[float, dict[str, Any]]]


class TrainData(Protocol):
    """The training rows as global batches (``camoe.data.batches.BatchStream``).

    Attributes:
        num_rows: rows per epoch (sets the learning-rate schedule and the progress bar).
        format_rows: (K,) rows per ad format; format_clicks: (K,) clicks per ad format (task priors).
    """

    num_rows: int
    format_rows: np.ndarray
    format_clicks: np.ndarray

    def batches(self, generator: torch.Generator | None, skip: int = 0) -> Iterator[Batch]:
        """One epoch of global batches, shuffled from ``generator``, the first ``skip`` dropped."""
        ...


@dataclass
class TrainResult:
    """What training did.

    Attributes:
        history: one dict per evaluation: step, epoch, rows seen, mean loss parts since the previous evaluation
            (``loss/<task>`` is None when the task had no rows), validation score and details.
        best_step: step whose weights were kept (the model is left holding them).
        best_score: mean validation AUC-PR over tasks at ``best_step`` (NaN without validation data).
        steps: optimizer steps run.
        rows_per_s: training rows per second of wall time, evaluation excluded.
        resumed_from_step: the checkpoint step training resumed from (None when it started fresh).
        output_bias_shift: task -> logits added to its tower's bias by ``train.refit_output_bias`` (empty when off).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_step: int = 0
    best_score: float = float("nan")
    steps: int = 0
    rows_per_s: float = 0.0
    resumed_from_step: int | None = None
    output_bias_shift: dict[str, float] = field(default_factory=dict)


def _sigmoid_sums(z: torch.Tensor, b: float, chunk: int = 1 << 20) -> tuple[float, float]:
    """(sum of sigmoid(z + b), sum of its derivative p (1 − p)) over the (N,) float32 logits ``z``, in float64, one
    chunk of rows at a time (the temporaries are 8 bytes × ``chunk``, not 8 bytes × N)."""
    p_sum = curvature = 0.0
    for part in z.split(chunk):
        p = torch.sigmoid(part.double() + b)
        p_sum += float(p.sum())
        curvature += float((p * (1 - p)).sum())
    return p_sum, curvature


def _ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """``AveragedModel`` update: average <- decay_n · average + (1 − decay_n) · weights after the n-th update, with
    decay_n = min(decay, (1 + n) / (10 + n)), so a short run (or a small per-task model) averages over its own steps
    instead of its initial weights (the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``)."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # the weight stays a 0-dim tensor on the averaged model's device: reading the count on the host would make
        # every step wait for the GPU. float64 like a Python float, then each tensor's dtype, as lerp_ does a scalar.
        n = num_averaged.to(torch.float64)
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        cast: dict[torch.dtype, torch.Tensor] = {}
        for avg, cur in zip(averaged, current):
            if avg.is_floating_point():
                avg.lerp_(cur, cast.setdefault(avg.dtype, weight.to(avg.dtype)))
            else:  # integer buffers (batch norm's step count): the latest value
                avg.copy_(cur)

    return update


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Trainer:
    """Trains ``model`` in place and leaves it holding the best validation weights (on the CPU, in eval mode).

    Loss parts are checked for NaN/inf every ``config.finite_check_every_steps`` steps and before every evaluation
    and checkpoint (reading them back every step would stall an accelerator), so training may run up to that many
    steps past the first bad step before it stops; the error names that first step and part.

    Args:
        model: registered model; forward(cat_ids, multi_ids, dense) -> ModelOutput with (B, T) logits.
        mask: (K, T) format × task loss mask.
        tasks: the T task names (for logs and task weights).
        config: optimisation settings.
        validate: model -> (score, details), higher is better (mean validation AUC-PR); None = no early stopping
            (every evaluation keeps the current weights). Under data parallelism rank 0 validates and broadcasts.
        ctx: data-parallel context (``camoe.training.distributed.init_distributed``); None = one process.
        log: called with each history entry (rank 0 only).
        progress: show a tqdm bar (rows/s, ETA).
        checkpoint_path: where to keep the training checkpoint, rewritten every ``config.checkpoint_every_steps``
            steps and at each epoch end (rank 0 writes).
        fingerprint: the run's config and data summary, stored in every checkpoint (``--resume`` compares it).
        init_bias: start each tower's logit bias at the logit of its task's training CTR (False for a warm start,
            whose towers already learned theirs).
        format_task: (K,) int index of the task head that scores each format (``TaskLayout.format_task_index``);
            the bias refit (``train.refit_output_bias``) calibrates each head on these rows. None: the first task
            whose mask entry is 1 (the same unless grouping.transfer or train.masking: false train other heads too).

    Raises (from ``fit``):
        FloatingPointError: a loss part is non-finite; names the step and the part (case B08).
        ValueError: task weights name unknown tasks.
    """

    def __init__(
        self, model: nn.Module, mask: np.ndarray, tasks: tuple[str, ...] | list[str], config: TrainConfig, *,
        validate: Validate | None = None, ctx: DistContext | None = None,
        log: Callable[[dict[str, Any]], None] | None = None, progress: bool = False,
        checkpoint_path: str | Path | None = None, fingerprint: dict[str, Any] | None = None,
        init_bias: bool = True, format_task: np.ndarray | None = None,
    ) -> None:
        unknown = sorted(set(config.task_weights) - set(tasks))
        if unknown:
            raise ValueError(f"train.task_weights: unknown tasks {unknown}; tasks are {list(tasks)}")
        self.model, self.tasks, self.config = model, tuple(tasks), config
        self.mask = torch.as_tensor(mask, dtype=torch.float32) if config.masking else torch.ones(np.shape(mask))
        self.validate, self.log, self.progress = validate, log, progress
        self.ctx = ctx or DistContext()
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.fingerprint = fingerprint or {}
        self.init_bias = init_bias
        own = np.argmax(np.asarray(mask) >= 1, axis=1) if format_task is None else np.array(format_task)  # a copy
        self.format_task = torch.tensor(own, dtype=torch.long)  # (K,)
        self.state = TrainState()
        self.result = TrainResult()
        self.best_model: dict[str, torch.Tensor] = {}
        self.averaged: swa_utils.AveragedModel | None = None  # train.ema_decay (built with the optimizer)
        self._pending: list[torch.Tensor] = []  # per step: [total, l2, task losses (T), task has rows (T)]
        self._pending_steps: list[tuple[int, int]] = []  # (step, epoch) of each pending entry
        self._has_l2 = False
        self._train_seconds = 0.0

    # ------------------------------------------------------------------ build
    def build(self, data: TrainData) -> None:
        """Loss constants from the data's per-format counts, optimizer, schedule and wrappers."""
        cfg, device = self.config, self.ctx.device
        own = (self.mask >= 1).double()  # (K, T) the formats each head scores (soft transfer weights left out)
        clicks = (own.T @ torch.as_tensor(data.format_clicks, dtype=torch.float64)).float()  # (T,)
        task_rows = (own.T @ torch.as_tensor(data.format_rows, dtype=torch.float64)).float()  # (T,)
        ctr = ((clicks + 0.5) / (task_rows + 1.0)).clamp(1e-6, 1 - 1e-6)  # (T,) smoothed; empty task -> 0.5
        weights = torch.tensor([cfg.task_weights.get(t, 1.0) for t in self.tasks], dtype=torch.float32)  # (T,)
        if cfg.entropy_weighting:
            inv_entropy = 1.0 / -(ctr * ctr.log() + (1 - ctr) * (1 - ctr).log())  # (T,)
            weights = weights * inv_entropy / inv_entropy.mean()
        init_bias = getattr(self.model, "init_output_bias", None)
        if callable(init_bias) and self.init_bias:
            init_bias(torch.log(ctr / (1 - ctr)))
        if cfg.reuse_freed_memory:
            reuse_freed_memory()
        self.model.to(device)
        self.mask, self.weights = self.mask.to(device), weights.to(device)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks), device=device)) if cfg.uncertainty_weighting else None
        tables = [m.weight for m in self.model.modules() if isinstance(m, nn.Embedding)]
        table_ids = {id(p) for p in tables}
        rest = [p for p in self.model.parameters() if id(p) not in table_ids]
        rest += [self.log_vars] if self.log_vars is not None else []
        table_lr = cfg.embedding_learning_rate or cfg.learning_rate
        sparse = [p for m in self.model.modules() if isinstance(m, nn.Embedding) and m.sparse for p in [m.weight]]
        dense_tables = [p for p in tables if id(p) not in {id(q) for q in sparse}]
        self.params = rest + dense_tables  # gradient clipping covers these (not sparse tables)
        groups = [{"params": rest}] + ([{"params": dense_tables, "lr": table_lr}] if dense_tables else [])
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(
            groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=cfg.fused_optimizer or None)]
        # sparse embedding gradients (model.sparse_embeddings): lazy Adam updates only the rows a batch looked up
        if sparse:
            if self.ctx.enabled and device.type == "cuda":
                raise ValueError("model.sparse_embeddings: NCCL data parallelism cannot all-reduce sparse gradients; "
                                 "set it to false for GPU training with several processes")
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=table_lr))
        self.steps_per_epoch = max(1, math.ceil(data.num_rows / cfg.batch_size))
        total = cfg.epochs * self.steps_per_epoch
        warmup = cfg.warmup_steps

        def lr_factor(step: int) -> float:  # linear warm-up, then constant or cosine decay to 0 over the rest
            if step < warmup:
                return (step + 1) / warmup
            if cfg.lr_schedule == "constant":
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor) for o in self.optimizers]
        net: nn.Module = self.model  # what the step calls: DDP and / or compiled wrappers around the model
        if self.ctx.enabled:
            net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None)
        self.net = torch.compile(net) if cfg.compile else net
        # Polyak averaging: evaluation, the best weights and the artifact use the average; the optimizer steps the raw
        # weights (Adam moves every weight by about the learning rate per step, so raw weights jitter around the
        # optimum; the logit biases' jitter shows as calibration that swings between evaluations)
        self.averaged = (swa_utils.AveragedModel(self.model, multi_avg_fn=_ema_with_warmup(cfg.ema_decay),
                                                 use_buffers=True) if cfg.ema_decay is not None else None)
        self.best_model = _state_copy(self.model)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, epoch_rng: torch.Tensor) -> Checkpoint:
        """The current state as a ``Checkpoint`` (loss parts read back first)."""
        self._flush()
        return Checkpoint(
            state=TrainState(**{**asdict(self.state), "history": list(self.state.history)}),
            model=self.model.state_dict(), best_model=self.best_model,
            optimizer={"optimizers": [o.state_dict() for o in self.optimizers]},
            scheduler={"schedulers": [sc.state_dict() for sc in self.schedulers]},
            log_vars=self.log_vars.detach().clone() if self.log_vars is not None else None,
            epoch_rng=epoch_rng, torch_rng=torch.get_rng_state(), fingerprint=self.fingerprint,
            averaged_model=self.averaged.state_dict() if self.averaged is not None else None,
        )

    def save_checkpoint(self, epoch_rng: torch.Tensor) -> None:
        """Write the checkpoint (rank 0; the other ranks only read back their loss parts)."""
        if self.checkpoint_path is None:
            return
        ck = self.checkpoint(epoch_rng)
        if self.ctx.is_main:
            ck.save(self.checkpoint_path)

    def restore(self, ck: Checkpoint) -> torch.Tensor:
        """Continue from ``ck``; returns the data-order generator state of the epoch to continue."""
        self.model.load_state_dict(ck.model)
        for optimizer, state in zip(self.optimizers, ck.optimizer["optimizers"]):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, (ck.scheduler or {}).get("schedulers", [])):
            # restores the step count; the schedule function is the current config's (a function is not saved), so
            # a changed epoch count (--allow-change train.epochs) re-plans the rest of the decay
            scheduler.load_state_dict(state)
        if self.log_vars is not None and ck.log_vars is not None:
            self.log_vars.data.copy_(ck.log_vars)
        if self.averaged is not None and ck.averaged_model is not None:
            self.averaged.load_state_dict(ck.averaged_model)
        self.state, self.best_model = ck.state, ck.best_model
        self.result.resumed_from_step = ck.state.step
        torch.set_rng_state(ck.torch_rng)
        return ck.epoch_rng

    # ------------------------------------------------------------------ steps
    def step(self, batch: Batch) -> int:
        """One optimizer step on this rank's share of a global batch; returns the global batch's rows."""
        cfg, ctx = self.config, self.ctx
        if ctx.enabled:
            rows = len(batch)
            norm_rows = self.mask[batch.format_ids.to(self.mask.device)].sum(0)  # (T,) task rows of the global batch
            batch = batch.select(torch.arange(ctx.rank, rows, ctx.world_size))
        else:
            rows, norm_rows = len(batch), None
        if ctx.device.type != "cpu":
            batch = batch.to(ctx.device)
        assert batch.labels is not None
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = self.net(batch.cat_ids, batch.multi_ids, batch.dense)
        row_mask = self.mask[batch.format_ids]  # (B, T)
        loss = masked_bce(out.logits.float(), batch.labels, row_mask, cfg.loss_normalisation, self.weights,
                          self.log_vars, norm_rows=norm_rows)
        l2 = torch.zeros((), device=ctx.device)
        if cfg.l2_embedding > 0 and out.embeddings is not None:
            l2 = cfg.l2_embedding * out.embeddings.pow(2).sum(dim=-1).mean()
            self._has_l2 = True
        total = loss.total + l2 if self._has_l2 else loss.total
        rows_now = loss.task_rows if norm_rows is None else norm_rows  # (T,)
        self._pending.append(torch.cat([total.detach().view(1), l2.detach().view(1), loss.task_losses,
                                        (rows_now > 0).to(loss.task_losses.dtype)]))
        self._pending_steps.append((self.state.step + 1, self.state.epoch))
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; each rank's loss is its rows' share of the global-batch loss
        (total * ctx.world_size if ctx.enabled else total).backward()
        if cfg.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.params, cfg.grad_clip_norm)
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            optimizer.step()
            scheduler.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        self.state.step += 1
        self.state.rows_seen += rows
        if len(self._pending) >= cfg.finite_check_every_steps:
            self._flush()
        return rows

    def _flush(self) -> None:
        """Read back the pending loss parts (summed over ranks), stop on NaN/inf, add them to the log sums."""
        if not self._pending:
            return
        ctx, tasks = self.ctx, self.tasks
        table = ctx.all_reduce_sum(torch.stack(self._pending).float())  # (S, 2 + 2T)
        if ctx.enabled:
            table[:, 1] /= ctx.world_size  # l2 is a per-rank mean
            table[:, 2 + len(tasks):] /= ctx.world_size  # "has rows" flags are the same on every rank
        for (at_step, at_epoch), row in zip(self._pending_steps, table.tolist()):
            values = {"total": row[0]}
            if self._has_l2:
                values["l2_embedding"] = row[1]
            for t, name in enumerate(tasks):
                if row[2 + len(tasks) + t] > 0:
                    values[f"loss/{name}"] = row[2 + t]
            for name, value in values.items():
                if not math.isfinite(value):
                    culprit = next((k for k, v in values.items() if k != "total" and not math.isfinite(v)), name)
                    raise FloatingPointError(
                        f"non-finite loss at step {at_step} (epoch {at_epoch}): part '{culprit}' = {values[culprit]}; "
                        f"lower train.learning_rate or the weight of that part (e.g. train.l2_embedding)"
                    )
            for name, value in values.items():
                self.state.part_sums[name] = self.state.part_sums.get(name, 0.0) + value
                self.state.part_counts[name] = self.state.part_counts.get(name, 0) + 1
        self._pending, self._pending_steps = [], []

    def evaluate(self) -> bool:
        """Record an evaluation (loss parts since the last one, validation score); return True to stop early."""
        self._flush()
        st = self.state
        entry: dict[str, Any] = {"step": st.step, "epoch": st.epoch, "rows": st.rows_seen}
        for name in ["total", *(f"loss/{t}" for t in self.tasks), "l2_embedding"]:
            count = st.part_counts.get(name, 0)
            entry[name] = st.part_sums[name] / count if count else None  # None = "no rows" for a task
        st.part_sums, st.part_counts = {}, {}
        stop = False
        scored = self.averaged.module if self.averaged is not None else self.model  # the weights kept and exported
        if self.validate is not None:
            verdict = self.validate(scored) if self.ctx.is_main else None
            score, details = self.ctx.broadcast(verdict)
            entry["valid_score"], entry["valid"] = score, details
            improved = not math.isnan(score) and (math.isnan(st.best_score) or score > st.best_score)
            if improved or (math.isnan(st.best_score) and st.best_step == 0):
                st.best_score, st.best_step = score, st.step
                self.best_model = _state_copy(scored)
                st.bad_evals = 0
            else:
                st.bad_evals += 1
                stop = st.bad_evals >= self.config.patience
        else:
            st.best_step = st.step
            self.best_model = _state_copy(scored)
        st.history.append(entry)
        if self.log is not None and self.ctx.is_main:
            self.log(entry)
        if self._bar is not None:
            self._bar.set_postfix(loss=entry["total"], valid_auc_pr=entry.get("valid_score"))
        self.model.train()
        return stop

    # ------------------------------------------------------------------ the loop
    def fit(self, data: TrainData, checkpoint: Checkpoint | None = None) -> TrainResult:
        """Train for ``config.epochs`` epochs (or until early stopping / ``config.max_steps``).

        Args:
            data: the training batches.
            checkpoint: continue from this checkpoint (``Checkpoint.load``; the caller checks its fingerprint).
        """
        cfg = self.config
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.build(data)
        resume_rng = self.restore(checkpoint) if checkpoint is not None else None
        st = self.state
        self._bar = tqdm(total=cfg.epochs * data.num_rows, unit="row", unit_scale=True,
                         disable=not self.progress or not self.ctx.is_main, desc="train")
        self._bar.update(st.rows_seen)
        self.model.train()
        stopped = self._stop_at_max_steps()  # resumed from a run that already stopped
        for epoch in range(st.epoch, cfg.epochs + 1):
            if stopped:
                break
            if resume_rng is not None:  # the restored epoch draws its batch order again
                generator.set_state(resume_rng)
                resume_rng = None
            st.epoch = epoch
            epoch_rng = generator.get_state()
            batches = data.batches(generator if cfg.shuffle else None, skip=st.next_batch)
            for i in itertools.count(st.next_batch):
                t0 = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                rows = self.step(batch)
                self._train_seconds += time.perf_counter() - t0
                st.next_batch = i + 1
                self._bar.update(rows)
                if cfg.eval_every_steps and st.step % cfg.eval_every_steps == 0 and i < self.steps_per_epoch - 1:
                    if self.evaluate():
                        stopped = True
                        break
                if cfg.checkpoint_every_steps and st.step % cfg.checkpoint_every_steps == 0:
                    self.save_checkpoint(epoch_rng)
                if self._stop_at_max_steps():
                    stopped = True
                    break
            if stopped or self.evaluate():
                break
            st.epoch, st.next_batch = epoch + 1, 0
            self.save_checkpoint(generator.get_state())
        return self._finish(data)

    def _stop_at_max_steps(self) -> bool:
        """Whether ``train.max_steps`` is reached. The weights reached are evaluated first unless the history already
        holds this step (a checkpoint is written before that evaluation), so the best kept are not the initial ones."""
        st = self.state
        if self.config.max_steps is None or st.step < self.config.max_steps:
            return False
        if not st.history or st.history[-1]["step"] != st.step:
            self.evaluate()
        return True

    @torch.no_grad()
    def _bias_refit(self, data: TrainData, newton_steps: int = 50) -> torch.Tensor:
        """(T,) logit shift per task that makes its mean pCTR over its own training rows equal their CTR.

        A task's own rows are those of the formats it scores (``format_task``; rows that grouping.transfer or
        train.masking: false also train on it are scored by their own head, so they do not count). The score equation
        of a logistic model's intercept (mean(sigmoid(z + b)) = mean(y) at the maximum likelihood), solved by damped
        Newton steps in float64 over one pass of the (unshuffled) training rows. A task without clicks, or with only
        clicks, keeps its bias (its solution is at infinity). Every data-parallel rank scores all rows, so all agree.

        Raises:
            FloatingPointError: a non-finite logit on a training row (names the task).
        """
        own = torch.nn.functional.one_hot(self.format_task, len(self.tasks)).bool()  # (K, T)
        logits: list[list[torch.Tensor]] = [[] for _ in self.tasks]
        clicks = torch.zeros(len(self.tasks), dtype=torch.float64)
        for batch in data.batches(None):
            assert batch.labels is not None
            if self.ctx.device.type != "cpu":
                batch = batch.to(self.ctx.device)
            z = self.model(batch.cat_ids, batch.multi_ids, batch.dense).logits.float().cpu()  # (B, T)
            rows = own[batch.format_ids.cpu()]  # (B, T) bool
            labels = batch.labels.cpu().double()
            for t in range(len(self.tasks)):
                logits[t].append(z[rows[:, t], t])  # float32 as the model computed them: 4 bytes per row
                clicks[t] += labels[rows[:, t]].sum()
        shift = torch.zeros(len(self.tasks), dtype=torch.float64)
        for t, parts in enumerate(logits):
            z = torch.cat(parts) if parts else torch.zeros(0)
            if not torch.isfinite(z).all():
                raise FloatingPointError(f"bias refit: task '{self.tasks[t]}' has {int((~torch.isfinite(z)).sum())} "
                                         f"non-finite logits on its training rows; training diverged (lower "
                                         f"train.learning_rate) or set train.refit_output_bias: false")
            if not 0 < clicks[t] < len(z):
                continue
            b = 0.0
            for _ in range(newton_steps):  # steps of at most one logit: no overshoot into sigmoid's flat tails
                p_sum, curvature = _sigmoid_sums(z, b)
                b -= max(-1.0, min(1.0, (p_sum - float(clicks[t])) / max(curvature, 1e-12)))
            p_sum, _ = _sigmoid_sums(z, b)
            if abs(p_sum / float(clicks[t]) - 1) > 1e-3:  # saturated logits: no shift reaches the CTR
                warnings.warn(f"bias refit: task '{self.tasks[t]}' reaches a mean pCTR of {p_sum / len(z):.3g} for a "
                              f"training CTR of {float(clicks[t]) / len(z):.3g} after a shift of {b:+.2f} logits; its "
                              f"logits are saturated", RuntimeWarning, stacklevel=2)
            shift[t] = b
        return shift.float().to(self.ctx.device)

    def _finish(self, data: TrainData) -> TrainResult:
        self._flush()
        self._bar.close()
        self.model.load_state_dict(self.best_model)
        self.model.eval()
        st, result = self.state, self.result
        if self.config.refit_output_bias and callable(getattr(self.model, "shift_output_bias", None)):
            shift = self._bias_refit(data)
            self.model.shift_output_bias(shift)  # type: ignore[operator]
            result.output_bias_shift = dict(zip(self.tasks, shift.tolist()))
        self.model.to("cpu")  # artifacts, scoring and export run on the CPU
        result.history, result.best_step, result.best_score = st.history, st.best_step, st.best_score
        result.steps = st.step
        result.rows_per_s = st.rows_seen / self._train_seconds if self._train_seconds > 0 else 0.0
        if self.log_vars is not None:
            result.history[-1]["log_vars"] = dict(zip(self.tasks, self.log_vars.detach().tolist()))
        return result

    _bar: Any = None
