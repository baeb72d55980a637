"""Inference-time expert masking: keep each task's top experts by validation gate weight, drop the rest.

The paper (Sec. 5) left expert masking undeployed because masking a dense mixture added latency. Here pruning
removes work instead:

* experts no task keeps are deleted from the expert bank (their weights are not in the pruned artifact);
* each task's gate is restricted to its kept experts and renormalised (softmax over the kept logits, i.e. the
  masked-gate form of PLE's CGC, Tang et al. 2020, Eq. 2);
* at scoring time (``camoe.export.ScoringModule``, the ONNX model, the service) only the experts needed by the tasks
  present in a batch are computed, so a request holding one format's candidates runs that task's experts only.

Example:
    >>> keep = select_experts({"audio": [0.6, 0.3, 0.1], "video": [0.1, 0.2, 0.7]}, ["audio", "video"], top_k=1)
    >>> keep.astype(int).tolist()
    [[1, 0, 0], [0, 0, 1]]
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from camoe.model import build_model
from camoe.model import MultiTaskMoE
from camoe.pipeline import CTRPipeline

__all__ = ["expert_latency_ms", "prune_pipeline", "prune_sweep", "select_experts"]

_PRUNABLE = ("camoe", "mmoe")


def select_experts(
    mean_gate: Mapping[str, Sequence[float]],
    tasks: Sequence[str],
    top_k: int | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Experts each task keeps, from its mean gate weight over validation rows (``CTRPipeline.diagnostics_``).

    Args:
        mean_gate: task -> E mean gate weights (each row sums to 1).
        tasks: the T task names, in model order.
        top_k: keep each task's K highest-weight experts (1 <= K <= E).
        threshold: keep experts whose mean weight is >= threshold (and always the task's top expert).

    Returns:
        (T, E) bool.

    Raises:
        ValueError: neither or both of ``top_k`` / ``threshold``; K outside [1, E]; threshold outside (0, 1);
            a task without gate weights (it had no validation rows).
    """
    if (top_k is None) == (threshold is None):
        raise ValueError("give exactly one of top_k or threshold")
    missing = [t for t in tasks if t not in mean_gate]
    if missing:
        raise ValueError(
            f"no validation gate weights for tasks {missing} (they had no validation rows); pass rows with --data"
        )
    weights = np.array([list(mean_gate[t]) for t in tasks], dtype=np.float64)  # (T, E)
    num_experts = weights.shape[1]
    keep = np.zeros(weights.shape, dtype=bool)
    order = np.argsort(-weights, axis=1, kind="stable")  # (T, E), ties -> lower expert index first
    if top_k is not None:
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, {num_experts}] (the number of experts), got {top_k}")
        np.put_along_axis(keep, order[:, :top_k], True, axis=1)
    else:
        assert threshold is not None
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        keep = weights >= threshold
        np.put_along_axis(keep, order[:, :1], True, axis=1)
    return keep


def prune_pipeline(pipe: CTRPipeline, keep: np.ndarray) -> CTRPipeline:
    """A new pipeline whose model holds only the kept experts, each task's gate masked to its own.

    Args:
        pipe: fitted pipeline of a ``camoe`` or ``mmoe`` model.
        keep: (T, E) bool from ``select_experts``.

    Returns:
        The pruned pipeline (same encoder and task layout; ``config.model.num_experts`` = experts kept by any task,
        ``config.model.gate_mask`` = (T, E') kept table). Save it with ``save``; ``CTRPipeline.load`` rebuilds it.

    Raises:
        ValueError: the model is not prunable (shared_bottom has one expert; cgc and single-task baselines own
            their experts), or ``keep`` has the wrong shape or a task keeping no expert.
    """
    if pipe.model_ is None or pipe.layout_ is None or pipe.encoder_ is None or pipe.encoder_.input_spec_ is None:
        raise RuntimeError("prune needs a fitted pipeline (CTRPipeline.load(artifact))")
    model, cfg = pipe.model_, pipe.config
    if cfg.model.name not in _PRUNABLE or not isinstance(model, MultiTaskMoE):
        raise ValueError(f"model '{cfg.model.name}' cannot be pruned; expert masking applies to {list(_PRUNABLE)}")
    num_tasks, num_experts = model.num_tasks, model.experts.num_experts
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (num_tasks, num_experts) or not keep.any(axis=1).all():
        raise ValueError(f"keep must be (T, E) = ({num_tasks}, {num_experts}) with an expert per task, got {keep.shape}")
    if model.gates.allowed is not None:
        keep = keep & model.gates.allowed.numpy()[:num_tasks]
    used = np.flatnonzero(keep.any(axis=0))  # (E',) experts kept by some task
    index = torch.as_tensor(used, dtype=torch.long)
    new_model_cfg = cfg.model.model_copy(update={"num_experts": len(used), "gate_mask": keep[:, used].tolist()})
    new_cfg = cfg.model_copy(update={"model": new_model_cfg})
    new_cfg._config_dir = cfg._config_dir
    pruned = build_model(new_model_cfg, pipe.encoder_.input_spec_, num_tasks)
    state = {}
    d, gate_rows = model.gates.proj.in_features, model.gates.num_tasks  # T, or T + 1 with a shared tower
    for name, value in model.state_dict().items():
        if name.startswith("experts."):
            value = value.index_select(0, index)  # every expert-bank tensor is stacked (E, ...)
        elif name == "gates.proj.weight":  # rows ordered task-major: (T·E, d)
            value = value.view(gate_rows, num_experts, d)[:, index].reshape(-1, d)
        elif name == "gates.proj.bias":
            value = value.view(gate_rows, num_experts)[:, index].reshape(-1)
        state[name] = value.clone()
    pruned.load_state_dict(state, strict=True)
    pruned.eval()
    out = CTRPipeline(new_cfg)
    out.encoder_, out.layout_, out.format_attributes_ = pipe.encoder_, pipe.layout_, pipe.format_attributes_
    out.model_ = pruned
    out.train_result_ = pipe.train_result_
    out.calibration_ = pipe.calibration_  # fitted on the unpruned model's scores: refit with `camoe calibrate`
    gates = pipe.diagnostics_.get("mean_gate_weight", {})
    out.diagnostics_ = {
        "mean_gate_weight": {t: [w[i] for i in used] for t, w in gates.items()},
        "pruned": {"kept_experts": used.tolist(), "from_experts": num_experts,
                   "gate_mask": {t: keep[i].tolist() for i, t in enumerate(pipe.layout_.tasks)}},
        "identical_experts": [], "warnings": [],
    }
    return out


def expert_latency_ms(
    pipe: CTRPipeline, frame: pd.DataFrame, repeats: int = 200, backend: str = "torch"
) -> tuple[float, float]:
    """(p50, p99) latency in ms of scoring ``frame``'s encoded rows through the pipeline's ``Scorer`` backend (model,
    own task's head, sigmoid, correction; 1 thread, encoding excluded) with eager PyTorch (``backend="torch"``) or
    ONNX Runtime (``"onnx"``, the serving path).

    Raises:
        ValueError: unknown backend.
    """
    scorer = pipe.scorer(backend)
    batch = scorer.encode(frame, "latency").batch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(10):
            scorer.backend(batch)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            scorer.backend(batch)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def prune_sweep(
    pipe: CTRPipeline, frame: pd.DataFrame, candidates: int = 100, seed: int = 0, repeats: int = 200
) -> pd.DataFrame:
    """For K = 1..E: per-format AUC-PR change and latency change of the pruned model against the full one.

    Args:
        pipe: fitted ``camoe`` / ``mmoe`` pipeline with validation gate weights.
        frame: labelled rows to evaluate on (e.g. the test split).
        candidates: rows in the mixed-format latency batch (sampled from ``frame``); a single-format batch of the
            same size (the most frequent format) is timed too.

    Returns:
        One row for the unpruned model (index "full") and one per K ("1".."E"): experts kept, ``auc_pr/<format>``
        and ``delta_auc_pr/<format>`` (pruned − full), and p50 / p99 latency in ms (ONNX Runtime and eager
        PyTorch, 1 thread) for the mixed and the single-format batch.
    """
    assert pipe.model_ is not None and pipe.layout_ is not None
    fmt_col = pipe.config.schema.format
    mixed = frame.sample(min(candidates, len(frame)), random_state=seed)
    top_format = frame[fmt_col].astype(str).value_counts().index[0]
    single = frame[frame[fmt_col].astype(str) == top_format]
    single = single.sample(min(candidates, len(single)), random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pipe.evaluate(frame, split="prune")["formats"]
    num_experts = len(next(iter(pipe.diagnostics_["mean_gate_weight"].values())))
    rows: list[dict[str, Any]] = []
    for k in [None, *range(1, num_experts + 1)]:
        if k is None:  # the unpruned model: the reference
            pruned, metrics = pipe, full
        else:
            keep = select_experts(pipe.diagnostics_["mean_gate_weight"], pipe.layout_.tasks, top_k=k)
            pruned = prune_pipeline(pipe, keep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metrics = pruned.evaluate(frame, split="prune")["formats"]
        row: dict[str, Any] = {"top_k": "full" if k is None else str(k),
                               "experts_kept": pruned.config.model.num_experts}
        for f in full:
            row[f"auc_pr/{f}"] = metrics[f]["auc_pr"]
            row[f"delta_auc_pr/{f}"] = metrics[f]["auc_pr"] - full[f]["auc_pr"]
        for backend in ("onnx", "torch"):
            row[f"{backend}_mixed_p50_ms"], row[f"{backend}_mixed_p99_ms"] = expert_latency_ms(
                pruned, mixed, repeats, backend)
            row[f"{backend}_single_p50_ms"], row[f"{backend}_single_p99_ms"] = expert_latency_ms(
                pruned, single, repeats, backend)
        rows.append(row)
    return pd.DataFrame(rows).set_index("top_k")


