"""Training loop: AdamW on the masked multi-task loss, early stopping on mean validation AUC-PR over tasks.

The loop is model-agnostic: any registered model returning ``ModelOutput`` trains here. Every random source is seeded
from ``TrainConfig.seed`` (the caller seeds init with ``torch.manual_seed``; shuffling uses its own generator; dropout
uses the global generator seeded here), so the same seed on CPU gives bit-identical weights and metrics.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from camoe.batch import Batch
from camoe.config import TrainConfig
from camoe.training.distributed import DistContext
from camoe.training.loss import masked_bce
from camoe.training.sampling import balanced_order

__all__ = ["BatchStream", "TrainResult", "predict_logits", "stream_logits", "train_model"]

ScoreFn = Callable[[Any], tuple[float, dict[str, Any]]]  # (N, T) logits, or (batch, logits) pairs of a stream


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
        resumed_from_step: the checkpoint step training resumed from (None when it started fresh); the work
            repeated after a crash is the steps between that checkpoint and the crash, at most
            ``checkpoint_every_steps``.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_step: int = 0
    best_score: float = float("nan")
    steps: int = 0
    rows_per_s: float = 0.0
    resumed_from_step: int | None = None


@torch.no_grad()
def predict_logits(model: nn.Module, batch: Batch | BatchStream, batch_size: int = 65536) -> np.ndarray:
    """Logits of every head for every row, in eval mode.

    Args:
        model: a registered model.
        batch: encoded rows (labels unused), or a stream scored in file order.
        batch_size: rows per forward pass.

    Returns:
        (N, T) float32 logits.
    """
    was_training = model.training
    device = _device_of(model)
    model.eval()
    chunks = []
    parts = (
        (batch.select(slice(start, start + batch_size)) for start in range(0, len(batch), batch_size))
        if isinstance(batch, Batch) else batch.batches(None)
    )
    for part in parts:
        part = part if device.type == "cpu" else part.to(device)
        chunks.append(model(part.cat_ids, part.multi_ids, part.dense).logits.float().cpu())
    model.train(was_training)
    if not chunks:
        return np.zeros((0, getattr(model, "num_tasks", 1)), dtype=np.float32)
    return torch.cat(chunks).numpy()


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


class BatchStream(Protocol):
    """Training or validation rows that arrive as a stream of ``Batch`` objects (``camoe.data.streaming``).

    Attributes:
        num_rows: rows over all ranks (sets the learning-rate schedule and the progress bar).
        format_rows: (K,) rows per ad format in the whole stream, counted in its first pass.
        format_clicks: (K,) clicks per ad format.
    """

    num_rows: int
    format_rows: np.ndarray
    format_clicks: np.ndarray

    def __len__(self) -> int: ...

    def batches(self, generator: torch.Generator | None, skip: int = 0) -> Iterator[Batch]:
        """This rank's batches of one epoch, shuffled from ``generator`` (None = file order), first ``skip`` dropped."""
        ...


def _epoch_batches(
    train: Batch | BatchStream, order: torch.Tensor | None, batch_size: int, start: int, steps: int,
    ctx: DistContext, generator: torch.Generator,
) -> Iterator[Batch]:
    """This rank's batches of one epoch from ``start``: in memory, rank r takes rows r::P of each global batch."""
    if isinstance(train, Batch):
        assert order is not None
        for i in range(start, steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield train.select(idx[ctx.rank :: ctx.world_size] if ctx.enabled else idx)
    else:
        yield from train.batches(generator, skip=start)


def stream_logits(model: nn.Module, stream: BatchStream) -> Iterator[tuple[Batch, np.ndarray]]:
    """Each batch of a scoring stream (file order) with its (n, T) float32 logits, in eval mode.

    Only one batch and its logits are alive at a time, so a consumer that reduces them (e.g. into
    ``camoe.evaluation.binned.BinnedMetrics``) needs memory independent of the stream's length.
    """
    was_training = model.training
    device = _device_of(model)
    model.eval()
    try:
        for part in stream.batches(None):
            on_device = part if device.type == "cpu" else part.to(device)
            with torch.no_grad():
                logits = model(on_device.cat_ids, on_device.multi_ids, on_device.dense).logits.float().cpu().numpy()
            yield part, logits
    finally:
        model.train(was_training)


def _valid_logits(model: nn.Module, valid: Batch, ctx: DistContext) -> np.ndarray:
    """(N, T) validation logits on every rank; in memory each rank scores rows r::P and the parts are gathered."""
    if not ctx.enabled:
        return predict_logits(model, valid)
    n = len(valid)
    local = predict_logits(model, valid.select(torch.arange(n)[ctx.rank :: ctx.world_size]))
    gathered = ctx.gather_rows(local)  # rank-major
    out = np.empty_like(gathered)
    out[np.concatenate([np.arange(n)[r :: ctx.world_size] for r in range(ctx.world_size)])] = gathered
    return out


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_model(
    model: nn.Module,
    train: Batch | BatchStream,
    mask: np.ndarray,
    tasks: tuple[str, ...],
    config: TrainConfig,
    valid: Batch | BatchStream | None = None,
    score_fn: ScoreFn | None = None,
    progress: bool = False,
    log: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    dist_ctx: DistContext | None = None,
    balanced_groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it holding the best validation weights.

    Loss parts are checked for NaN/inf every ``config.finite_check_every_steps`` steps and before every evaluation
    and checkpoint (reading them back every step would stall an accelerator), so training may run up to that many
    steps past the first bad step before it stops; the error names that first step and part.

    Args:
        model: registered model; forward(cat_ids, multi_ids, dense) -> ModelOutput with (B, T) logits.
        train: encoded training rows with labels, or a ``BatchStream`` (``camoe.data.streaming``).
        mask: (K, T) format × task loss mask.
        tasks: the T task names (for logs and task weights).
        config: optimisation settings.
        valid: encoded validation rows; with ``score_fn`` enables early stopping.
        score_fn: maps validation logits (N, T) to (score, details); higher is better (mean AUC-PR). When ``valid``
            is a stream it gets instead an iterator of (batch, (n, T) logits) pairs (``stream_logits``), to reduce
            with bounded memory.
        progress: show a tqdm bar (rows/s, ETA).
        log: called with each history entry.
        checkpoint_path: where to keep the training checkpoint (model, optimizer, scheduler, RNG states, data
            position, early-stopping state), rewritten atomically every ``config.checkpoint_every_steps`` steps
            and at each epoch end.
        resume: continue from ``checkpoint_path`` if it exists; the result is bit-identical on CPU to a run
            that was never interrupted.
        dist_ctx: data-parallel context (``camoe.training.distributed.init_distributed``); None = one process.
            With P > 1 processes the model is wrapped in DistributedDataParallel, each rank trains on its share of
            every global batch of ``config.batch_size`` rows, per-task losses are normalised by the task's rows in
            the global batch, loss logs are summed over ranks, and only rank 0 logs and writes checkpoints.
        balanced_groups: (groups (N,) int, shares (G,)) from ``camoe.training.sampling.row_groups``; used when
            ``config.balanced_sampling`` is on and ``train`` is a Batch (not a stream): each epoch is drawn with
            those shares (``balanced_order``).

    Returns:
        ``TrainResult``.

    Raises:
        FloatingPointError: a loss part is non-finite; names the step and the part (case B08).
        ValueError: training rows have no labels, or task weights name unknown tasks.
    """
    if isinstance(train, Batch) and train.labels is None:
        raise ValueError("training rows need labels")
    unknown = sorted(set(config.task_weights) - set(tasks))
    if unknown:
        raise ValueError(f"train.task_weights: unknown tasks {unknown}; tasks are {list(tasks)}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    ctx = dist_ctx or DistContext()
    mask_t = torch.as_tensor(mask, dtype=torch.float32)  # (K, T)
    if not config.masking:
        mask_t = torch.ones_like(mask_t)
    if isinstance(train, Batch):
        row_tasks = mask_t[train.format_ids]  # (N, T)
        clicks = (row_tasks * train.labels.unsqueeze(1)).sum(0)  # (T,)
        task_rows = row_tasks.sum(0)  # (T,)
    else:  # counted per format in the stream's first pass
        clicks = (mask_t.double().T @ torch.as_tensor(train.format_clicks, dtype=torch.float64)).float()  # (T,)
        task_rows = (mask_t.double().T @ torch.as_tensor(train.format_rows, dtype=torch.float64)).float()  # (T,)
    ctr = ((clicks + 0.5) / (task_rows + 1.0)).clamp(1e-6, 1 - 1e-6)  # (T,) smoothed; empty task -> 0.5
    weights = torch.tensor([config.task_weights.get(t, 1.0) for t in tasks], dtype=torch.float32)  # (T,)
    if config.entropy_weighting:
        inv_entropy = 1.0 / -(ctr * ctr.log() + (1 - ctr) * (1 - ctr).log())  # (T,)
        weights = weights * inv_entropy / inv_entropy.mean()
    init_bias = getattr(model, "init_output_bias", None)
    if callable(init_bias):
        init_bias(torch.log(ctr / (1 - ctr)))
    device = ctx.device  # cpu, or this rank's GPU under torchrun with nccl; the model returns to the CPU at the end
    model.to(device)
    mask_t, weights = mask_t.to(device), weights.to(device)
    log_vars = nn.Parameter(torch.zeros(len(tasks), device=device)) if config.uncertainty_weighting else None
    params = list(model.parameters()) + ([log_vars] if log_vars is not None else [])
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=config.fused_optimizer or None)
    net: nn.Module = model  # what the training step calls: DDP and / or compiled wrappers around ``model``
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)

    device_type = device.type
    n = len(train) if isinstance(train, Batch) else train.num_rows
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        if config.lr_schedule == "cosine" else None
    )
    result = TrainResult()
    best_state = _state_copy(model)
    bad_evals = 0
    part_sums: dict[str, float] = {}
    part_counts: dict[str, int] = {}
    step = 0
    train_seconds = 0.0
    rows_seen = 0
    bar = tqdm(total=config.epochs * n, unit="row", unit_scale=True, disable=not progress or not ctx.is_main,
               desc="train")
    pending: list[torch.Tensor] = []  # per step: [total, l2, task losses (T), task has rows (T)], read back in flush
    pending_steps: list[tuple[int, int]] = []  # (step, epoch) of each pending entry
    has_l2 = False

    def flush() -> None:
        """Read back the pending loss parts (summed over ranks), stop on NaN/inf, add them to the log sums."""
        nonlocal pending, pending_steps
        if not pending:
            return
        table = ctx.all_reduce_sum(torch.stack(pending).float())  # (S, 2 + 2T)
        if ctx.enabled:
            table[:, 1] /= ctx.world_size  # l2 is a per-rank mean
            table[:, 2 + len(tasks):] /= ctx.world_size  # "has rows" flags are the same on every rank
        rows_of = table.tolist()
        for (at_step, at_epoch), row in zip(pending_steps, rows_of):
            values = {"total": row[0]}
            if has_l2:
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
                part_sums[name] = part_sums.get(name, 0.0) + value
                part_counts[name] = part_counts.get(name, 0) + 1
        pending, pending_steps = [], []

    def evaluate(epoch: int) -> bool:
        """Record an evaluation; return True to stop early."""
        nonlocal best_state, bad_evals, part_sums, part_counts
        flush()
        entry: dict[str, Any] = {"step": step, "epoch": epoch, "rows": rows_seen}
        for name in ["total", *(f"loss/{t}" for t in tasks), "l2_embedding"]:
            count = part_counts.get(name, 0)
            entry[name] = part_sums[name] / count if count else None  # None = "no rows" for a task
        part_sums, part_counts = {}, {}
        stop = False
        if valid is not None and score_fn is not None and len(valid):
            if isinstance(valid, Batch):
                score, details = score_fn(_valid_logits(model, valid, ctx))
            else:  # every rank reduces the whole stream batch by batch (no per-row arrays)
                score, details = score_fn(stream_logits(model, valid))
            entry["valid_score"], entry["valid"] = score, details
            improved = not math.isnan(score) and (math.isnan(result.best_score) or score > result.best_score)
            if improved or (math.isnan(result.best_score) and result.best_step == 0):
                result.best_score, result.best_step = score, step
                best_state = _state_copy(model)
                bad_evals = 0
            else:
                bad_evals += 1
                stop = bad_evals >= config.patience
        else:
            result.best_step = step
            best_state = _state_copy(model)
        result.history.append(entry)
        if log is not None and ctx.is_main:
            log(entry)
        bar.set_postfix(loss=entry["total"], valid_auc_pr=entry.get("valid_score"))
        return stop

    def save_checkpoint(epoch: int, next_batch: int, epoch_rng: torch.Tensor) -> None:
        assert checkpoint_path is not None
        flush()
        if not ctx.is_main:
            return
        state = {
            "format": 1, "epoch": epoch, "next_batch": next_batch, "step": step, "rows_seen": rows_seen,
            "epoch_rng": epoch_rng, "torch_rng": torch.get_rng_state(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "log_vars": log_vars.detach().clone() if log_vars is not None else None,
            "best_state": best_state, "best_score": result.best_score, "best_step": result.best_step,
            "bad_evals": bad_evals, "history": result.history, "part_sums": part_sums, "part_counts": part_counts,
        }
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint_path.with_name(checkpoint_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, checkpoint_path)  # atomic: a kill leaves the previous checkpoint intact

    start_epoch, start_batch = 1, 0
    resume_rng: torch.Tensor | None = None
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        ck = torch.load(checkpoint_path, weights_only=True, map_location="cpu")  # load_state_dict copies to device
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck["scheduler"] is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if log_vars is not None and ck["log_vars"] is not None:
            log_vars.data.copy_(ck["log_vars"])
        best_state, bad_evals = ck["best_state"], ck["bad_evals"]
        result.best_score, result.best_step, result.history = ck["best_score"], ck["best_step"], ck["history"]
        part_sums, part_counts = ck["part_sums"], ck["part_counts"]
        step, rows_seen = ck["step"], ck["rows_seen"]
        result.resumed_from_step = step
        start_epoch, start_batch, resume_rng = ck["epoch"], ck["next_batch"], ck["epoch_rng"]
        torch.set_rng_state(ck["torch_rng"])
        bar.update(rows_seen)

    stopped = False
    model.train()
    for epoch in range(start_epoch, config.epochs + 1):
        if resume_rng is not None and epoch == start_epoch:
            generator.set_state(resume_rng)
        epoch_rng = generator.get_state()
        if config.balanced_sampling and balanced_groups is not None and isinstance(train, Batch):
            order = balanced_order(torch.as_tensor(balanced_groups[0]), torch.as_tensor(balanced_groups[1]), n, generator)
        else:
            order = (torch.randperm(n, generator=generator) if config.shuffle else torch.arange(n)) if isinstance(train, Batch) else None
        first = start_batch if epoch == start_epoch else 0
        batches = _epoch_batches(train, order, config.batch_size, first, steps_per_epoch, ctx, generator)
        for i in itertools.count(first):
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is not None and device.type != "cpu":
                batch = batch.to(device)
            if ctx.enabled:  # one all_reduce: does every rank have a batch, global rows, global rows per task
                counts = torch.zeros(2 + len(tasks), device=device)
                if batch is not None:
                    counts[0], counts[1] = 1.0, float(len(batch))
                    counts[2:] = mask_t[batch.format_ids].sum(0)
                ctx.all_reduce_sum(counts)
                if counts[0] < ctx.world_size:
                    break  # some rank's shard ran out: every rank ends the epoch at this same step
                norm_rows, batch_rows = counts[2:], int(counts[1])
            elif batch is None:
                break
            else:
                norm_rows, batch_rows = None, len(batch)
            assert batch is not None and batch.labels is not None
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                out = net(batch.cat_ids, batch.multi_ids, batch.dense)
            row_mask = mask_t[batch.format_ids]  # (B, T)
            loss = masked_bce(out.logits.float(), batch.labels, row_mask, config.loss_normalisation, weights, log_vars,
                              norm_rows=norm_rows)
            l2 = torch.zeros((), device=device)
            if config.l2_embedding > 0 and out.embeddings is not None:
                l2 = config.l2_embedding * out.embeddings.pow(2).sum(dim=-1).mean()
                has_l2 = True
            total = loss.total + l2 if has_l2 else loss.total
            rows_now = loss.task_rows if norm_rows is None else norm_rows  # (T,)
            pending.append(torch.cat([total.detach().view(1), l2.detach().view(1), loss.task_losses,
                                      (rows_now > 0).to(loss.task_losses.dtype)]))
            pending_steps.append((step + 1, epoch))
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; each rank's loss is its rows' share of the global-batch loss
            (total * ctx.world_size if ctx.enabled else total).backward()
            if config.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(params, config.grad_clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            rows_seen += batch_rows
            train_seconds += time.perf_counter() - t0
            if len(pending) >= config.finite_check_every_steps:
                flush()
            bar.update(batch_rows)
            if config.eval_every_steps and step % config.eval_every_steps == 0 and i < steps_per_epoch - 1:
                if evaluate(epoch):
                    stopped = True
                    break
            if checkpoint_path is not None and config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                save_checkpoint(epoch, i + 1, epoch_rng)
            if config.max_steps is not None and step >= config.max_steps:
                stopped = True
                if not result.history or result.history[-1]["step"] != step:
                    evaluate(epoch)  # score the weights reached, so the best kept are not the initial ones
                break
        if stopped or evaluate(epoch):
            break
        if checkpoint_path is not None:
            save_checkpoint(epoch + 1, 0, generator.get_state())
    flush()
    bar.close()
    model.load_state_dict(best_state)
    model.to("cpu")  # artifacts, scoring and export run on the CPU
    model.eval()
    result.steps = step
    result.rows_per_s = rows_seen / train_seconds if train_seconds > 0 else 0.0
    if log_vars is not None:
        result.history[-1]["log_vars"] = dict(zip(tasks, log_vars.detach().tolist()))
    return result

