"""The multi-task mixture-of-experts assembly shared by CAMoE and every baseline.

    x0      = embed(categorical ids, multi-valued ids), dense [, pairwise dots]      (B, d)
    h_e     = expert_e(x0)                                                         (E, B, H)
    g_t     = softmax(W_t x0)                                                      (B, T, E)
    z_t     = Σ_e g_{t,e} h_e                                                      (T, B, H)
    logit_t = tower_t(z_t) [+ w(x)]                                                (B, T)

With a shared tower (``model.shared_tower``; this project's addition, not in the paper) a (T+1)-th gate and tower
read every row, and each task's logit adds it: logit_t = tower_t(z_t) + tower_s(z_s). The shared tower is trained
by every row (through each row's own task loss), so a rare task starts from what all formats learned and its own
tower learns the residual.

With a first-order term (``model.wide``; ``LinearTerm``, also this project's addition) every task's logit adds
w(x), one learned weight per categorical value and numeric column: main effects are then shared scalars learned from
every format's rows, and the experts and towers learn what is not additive.

CAMoE (Verma, Chen, Mei, KDD 2025, arXiv 2506.18735) is this assembly with DCN-v2 experts (``CrossNetV2`` then an
MLP); MMoE (Ma et al. 2018) with MLP experts; the baselines with one expert or CGC's per-task experts
(``camoe.model.registry``). The blocks are built outside and injected. The loss (masked per task) lives in
``camoe.training.loss``; the sigmoid is applied when scoring (``camoe.scoring``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camoe.model.blocks import ExpertBank, FeatureEmbedding, GroupedMLP, LinearTerm, TaskGates

__all__ = ["ModelOutput", "MultiTaskMoE"]


@dataclass
class ModelOutput:
    """Forward output.

    Attributes:
        logits: (B, T) one logit per task head.
        gate_weights: (B, T, E) softmax gate weights per task.
        embeddings: (B, F + M, D) looked-up embeddings (for the optional L2 penalty), or None.
    """

    logits: torch.Tensor
    gate_weights: torch.Tensor
    embeddings: torch.Tensor | None = None


class MultiTaskMoE(nn.Module):
    """Shared experts, one softmax gate and one tower per task, assembled from injected blocks.

    Args:
        embedding: maps the encoded inputs to x0 (B, d).
        experts: E shared experts, (B, d) -> (E, B, H).
        gates: T softmax gates over the E experts, (B, d) -> (B, T, E).
        towers: T towers, (T, B, H) -> (T, B, 1).
        shared_tower: the last gate and tower are shared: their logit is added to every task's.
        linear: a first-order term (B,) added to every task's logit, or None.

    Shape:
        cat_ids (B, F) int64, multi_ids (B, M, L) int64, dense (B, N) float32 -> ModelOutput with logits (B, T).

    Raises:
        ValueError: the blocks disagree on d, E or T.

    Example:
        >>> from camoe.config import ModelConfig
        >>> from camoe.model import build_model
        >>> from camoe.schema import InputSpec
        >>> spec = InputSpec(("device",), (5,), (), (), 1, ("bid",))
        >>> model = build_model(ModelConfig(num_experts=3), spec, num_tasks=2)
        >>> out = model(torch.tensor([[2], [3]]), torch.zeros(2, 0, 1, dtype=torch.long), torch.zeros(2, 1))
        >>> tuple(out.logits.shape), tuple(out.gate_weights.shape)
        ((2, 2), (2, 2, 3))
    """

    def __init__(
        self, embedding: FeatureEmbedding, experts: ExpertBank, gates: TaskGates, towers: GroupedMLP,
        shared_tower: bool = False, linear: LinearTerm | None = None,
    ) -> None:
        super().__init__()
        if gates.num_experts != experts.num_experts or gates.num_tasks != towers.num_groups:
            raise ValueError(f"gates are ({gates.num_tasks} tasks, {gates.num_experts} experts); experts hold "
                             f"{experts.num_experts}, towers {towers.num_groups}")
        if shared_tower and gates.num_tasks < 2:
            raise ValueError("a shared tower needs T + 1 >= 2 gates and towers (the last one shared)")
        self.embedding = embedding
        self.experts = experts
        self.gates = gates
        self.towers = towers
        self.shared_tower = shared_tower
        self.linear = linear
        self.num_tasks = gates.num_tasks - int(shared_tower)  # T: the task heads (the shared tower is not one)

    @torch.no_grad()
    def warm_start_from(self, old: MultiTaskMoE) -> None:
        """Start from the weights of ``old``, a model of the same architecture whose embedding tables may be smaller
        (the vocabulary grew): embedding rows (and first-order weights) are copied per feature
        (``FeatureEmbedding.copy_rows_from``), every other tensor as it is.

        Raises:
            ValueError: a tensor's shape differs (names the tensors and shapes).
        """
        mine, theirs = self.state_dict(), old.state_dict()
        tables = {f"{owner}.{table}.weight" for owner in ("embedding", "linear.weights")
                  for table in ("cat_table", "multi_table")}
        differ = [f"{k}: {tuple(theirs[k].shape) if k in theirs else None} -> {tuple(v.shape)}"
                  for k, v in mine.items() if k not in tables and (k not in theirs or theirs[k].shape != v.shape)]
        if (self.linear is None) != (old.linear is None):
            differ.append(f"first-order term (model.wide): {old.linear is not None} -> {self.linear is not None}")
        if differ:
            raise ValueError(f"warm start: the model's architecture differs from the artifact's: {differ}")
        self.embedding.copy_rows_from(old.embedding)
        if self.linear is not None and old.linear is not None:
            self.linear.weights.copy_rows_from(old.linear.weights)
        for name, value in mine.items():
            if name not in tables:
                value.copy_(theirs[name])

    @torch.no_grad()
    def init_output_bias(self, logit: torch.Tensor) -> None:
        """Start each tower's logit bias at a prior, e.g. logit(task CTR) of the training rows (T,).

        With CTRs of 0.1-3% the bias must reach about -3 to -7; starting there keeps early steps from bending the
        hidden layers to push every logit down. A shared tower's bias starts at 0 (its logit is added to each task's).
        """
        bias = self.towers.biases[-1]  # (T [+ 1], 1, 1)
        bias[: self.num_tasks].copy_(logit.view(-1, 1, 1).to(bias.dtype))
        if self.shared_tower:
            bias[self.num_tasks :].zero_()

    def shift_output_bias(self, shift: torch.Tensor) -> None:
        """Add ``shift`` (T,) logits to each task tower's logit bias (``Trainer``'s bias refit after training)."""
        bias = self.towers.biases[-1]  # (T [+ 1], 1, 1)
        with torch.no_grad():
            bias[: self.num_tasks] += shift.view(-1, 1, 1).to(bias.dtype)

    def forward(
        self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor, tasks: torch.Tensor | None = None
    ) -> ModelOutput:
        """Logits of every task head.

        Args:
            tasks: optional (T,) bool, the tasks whose logits the caller will use (e.g. the tasks of the formats in a
                scoring request). When the gates restrict tasks to subsets of experts (CGC, ``camoe prune``), only
                the experts those tasks (and a shared tower) may use are computed; logits of the other tasks are then
                undefined, and ``gate_weights`` holds only the computed experts (B, T, E').
        """
        x0, fields = self.embedding.encode(cat_ids, multi_ids, dense)  # (B, d), (B, F + M, D)
        gates = self.gates(x0)  # (B, T [+ 1], E)
        if tasks is not None and self.gates.allowed is not None:
            wanted = torch.cat([tasks, tasks.new_ones(1)]) if self.shared_tower else tasks  # the shared gate always
            index = (self.gates.allowed & wanted.unsqueeze(1)).any(0).nonzero().squeeze(1)  # (E',) experts needed
            h = self.experts(x0, index)  # (E', B, H)
            gates = gates.index_select(2, index)  # (B, T [+ 1], E')
        else:
            h = self.experts(x0)  # (E, B, H)
        z = torch.einsum("bte,ebh->tbh", gates, h)  # (T [+ 1], B, H)
        logits = self.towers(z).squeeze(-1).transpose(0, 1)  # (B, T [+ 1])
        if self.shared_tower:
            logits = logits[:, : self.num_tasks] + logits[:, self.num_tasks :]  # (B, T): task + shared
            gates = gates[:, : self.num_tasks]
        if self.linear is not None:
            logits = logits + self.linear(cat_ids, multi_ids, dense).unsqueeze(1)  # (B, T): + first-order term
        return ModelOutput(logits=logits, gate_weights=gates, embeddings=fields)
