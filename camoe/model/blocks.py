"""Building blocks: feature embedding, first-order (wide) term, grouped (batched) MLP, CrossNetV2, expert bank, task
gates.

Shapes: B batch, F categorical fields, M multi-valued fields, L values per multi-valued cell, N dense features,
D embedding dim, d = F·D + M·D + N input width, E experts, H expert output width, T tasks, G groups (E or T).

Every block that holds one copy per expert or per task keeps the copies as one stacked tensor and runs them with a
single batched matmul (``torch.baddbmm``) instead of a Python loop over experts.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from camoe.schema import MISSING_ID, InputSpec

__all__ = ["CrossNetV2", "ExpertBank", "FeatureEmbedding", "GroupedMLP", "GroupedNorm", "LinearTerm", "PairwiseDot",
           "TaskGates"]


class PairwiseDot(nn.Module):
    """Dot product of every pair of field embeddings (the DLRM interaction, Naumov et al. 2019, Sec. 2.2).

    Exposes second-order matches (e.g. a user's pooled genre interests · the ad's category) to the experts directly,
    which the cross layers would otherwise have to discover from sparse clicks.

    Shape:
        (B, P, D) with P = F + M fields -> (B, P·(P−1)/2).

    Example:
        >>> PairwiseDot(3)(torch.ones(2, 3, 4)).tolist()
        [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.out_dim = int(rows.numel())

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(fields, fields.transpose(1, 2))  # (B, P, P)
        return gram[:, self.rows, self.cols]  # (B, P·(P−1)/2)


class FeatureEmbedding(nn.Module):
    """Embeds categorical ids, mean-pools multi-valued ids and appends dense features.

    All single-valued tables live in one ``nn.Embedding`` addressed with per-feature offsets (one lookup for F
    fields); the same for multi-valued tables. Multi-valued cells are mean-pooled (or summed, per feature) over their
    non-padding ids; an empty cell pools to the zero vector (no 0/0, case B15).

    Args:
        spec: table sizes and column order from the fitted encoder (``FeatureEncoder.input_spec_``).
        embedding_dim: D.
        init_std: std of the normal initialisation of embedding rows.
        pairwise_dot: also append the P·(P−1)/2 dot products of the P = F + M field embeddings (``PairwiseDot``).
        sparse: the tables produce sparse gradients (rows looked up only), for ``torch.optim.SparseAdam``.

    Shape:
        cat_ids (B, F) int64, multi_ids (B, M, L) int64, dense (B, N) float32 -> x0 (B, d) float32 with
        d = F·D + M·D + N (+ P·(P−1)/2) (``out_dim``).
    """

    def __init__(
        self, spec: InputSpec, embedding_dim: int, init_std: float = 0.05, pairwise_dot: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.embedding_dim = embedding_dim
        cat_sizes = list(spec.cat_cardinalities)
        multi_sizes = list(spec.multi_cardinalities)
        self.register_buffer("cat_offsets", torch.tensor([0, *cat_sizes[:-1]]).cumsum(0) if cat_sizes else
                             torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("multi_offsets", torch.tensor([0, *multi_sizes[:-1]]).cumsum(0) if multi_sizes else
                             torch.zeros(0, dtype=torch.long), persistent=False)
        self.cat_table = nn.Embedding(max(sum(cat_sizes), 1), embedding_dim, sparse=sparse)
        self.multi_table = nn.Embedding(max(sum(multi_sizes), 1), embedding_dim, sparse=sparse)
        nn.init.normal_(self.cat_table.weight, std=init_std)
        nn.init.normal_(self.multi_table.weight, std=init_std)
        pooling = spec.multi_pooling or ("mean",) * spec.num_multi
        self.register_buffer("multi_sum", torch.tensor([p == "sum" for p in pooling], dtype=torch.bool).view(1, -1, 1),
                             persistent=False)  # (1, M, 1)
        num_fields = spec.num_cat + spec.num_multi
        self.pairwise = PairwiseDot(num_fields) if pairwise_dot and num_fields > 1 else None
        self.out_dim = num_fields * embedding_dim + spec.num_dense + (self.pairwise.out_dim if self.pairwise else 0)
        if self.out_dim == 0:
            raise ValueError("the model has no inputs: declare at least one categorical, multi-valued or numeric feature")

    @torch.no_grad()
    def copy_rows_from(self, old: FeatureEmbedding) -> None:
        """Warm start: copy every feature's embedding rows of ``old`` into this embedding, whose tables hold the same
        features with at least as many rows each (a vocabulary extended at its end keeps every old id). Rows of new
        values keep their fresh initialisation.

        Raises:
            ValueError: the features differ, or a table shrank.
        """
        for kind, names, old_sizes, new_sizes, old_table, new_table in (
            ("categorical", self.spec.cat_features, old.spec.cat_cardinalities, self.spec.cat_cardinalities,
             old.cat_table, self.cat_table),
            ("multi-valued", self.spec.multi_features, old.spec.multi_cardinalities, self.spec.multi_cardinalities,
             old.multi_table, self.multi_table),
        ):
            old_names = old.spec.cat_features if kind == "categorical" else old.spec.multi_features
            if tuple(names) != tuple(old_names):
                raise ValueError(f"warm start: {kind} features differ: {list(old_names)} -> {list(names)}")
            shrunk = [n for n, a, b in zip(names, old_sizes, new_sizes) if b < a]
            if shrunk:
                raise ValueError(f"warm start: the tables of {shrunk} would shrink; a warm start only adds values")
            old_at = new_at = 0
            for a, b in zip(old_sizes, new_sizes):
                new_table.weight[new_at : new_at + a] = old_table.weight[old_at : old_at + a]
                old_at, new_at = old_at + a, new_at + b

    def lookup(
        self, cat_ids: torch.Tensor, multi_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding rows: (B, F, D) for categorical fields and (B, M, D) pooled multi-valued fields."""
        cat_emb = self.cat_table(cat_ids + self.cat_offsets)  # (B, F, D)
        present = (multi_ids != MISSING_ID).unsqueeze(-1).to(cat_emb.dtype)  # (B, M, L, 1)
        multi_emb = self.multi_table(multi_ids + self.multi_offsets.view(1, -1, 1))  # (B, M, L, D)
        count = present.sum(dim=2).clamp_min(1.0)  # (B, M, 1); empty cell -> sum 0 / 1 = 0
        count = torch.where(self.multi_sum, torch.ones_like(count), count)  # sum pooling: divide by 1
        pooled = (multi_emb * present).sum(dim=2) / count  # (B, M, D)
        return cat_emb, pooled

    def encode(
        self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 (B, d) and the field embeddings (B, F + M, D) it was built from."""
        cat_emb, pooled = self.lookup(cat_ids, multi_ids)
        fields = torch.cat([cat_emb, pooled], dim=1)  # (B, F + M, D)
        batch = dense.shape[0]
        parts = [fields.reshape(batch, -1), dense]
        if self.pairwise is not None:
            parts.append(self.pairwise(fields))  # (B, P·(P−1)/2)
        return torch.cat(parts, dim=1), fields  # (B, d)

    def forward(self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.encode(cat_ids, multi_ids, dense)[0]


class LinearTerm(nn.Module):
    """First-order (wide) term: one learned weight per categorical value, the pooled weights of a multi-valued
    cell's values, and one weight per dense column, summed to one logit per row (the wide part of Wide & Deep, Cheng
    et al. 2016, Eq. 1, on the raw features; the first-order term of FM, Rendle 2010, Eq. 1).

    ``MultiTaskMoE`` adds it to every task's logit, so a main effect (an advertiser's, a country's) is one scalar
    learned from every format's rows instead of something each task's tower must read out of the experts. Its
    weights start at 0 (training starts from the deep part alone). The weights are a ``FeatureEmbedding`` of width 1
    (same offsets, pooling, warm start and optimiser group as the embedding tables).

    Args:
        spec: table sizes and column order from the fitted encoder.
        sparse: sparse table gradients (``model.sparse_embeddings``).

    Shape:
        cat_ids (B, F) int64, multi_ids (B, M, L) int64, dense (B, N) float32 -> (B,) float32 logits.
    """

    def __init__(self, spec: InputSpec, sparse: bool = False) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(spec, 1, sparse=sparse)
        nn.init.zeros_(self.weights.cat_table.weight)
        nn.init.zeros_(self.weights.multi_table.weight)
        self.dense = nn.Linear(spec.num_dense, 1, bias=False) if spec.num_dense else None
        if self.dense is not None:
            nn.init.zeros_(self.dense.weight)

    def forward(self, cat_ids: torch.Tensor, multi_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        cat_w, multi_w = self.weights.lookup(cat_ids, multi_ids)  # (B, F, 1), (B, M, 1)
        logit = cat_w.sum(dim=(1, 2)) + multi_w.sum(dim=(1, 2))  # (B,)
        if self.dense is not None:
            logit = logit + self.dense(dense).squeeze(1)
        return logit


def _init_stacked_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Independent ``nn.Linear``-style init per stacked copy (so experts never start identical, case B05)."""
    for g in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[g].T, a=math.sqrt(5))  # weight[g] is (in, out); init as (out, in)
    if bias is not None:
        bound = 1.0 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound)


class GroupedNorm(nn.Module):
    """Batch or layer normalisation of G stacked groups, each with its own statistics and affine parameters.

    ``batch``: per group and unit over the B rows (Ioffe & Szegedy 2015, Alg. 1), running statistics (momentum 0.1,
    unbiased variance, as ``nn.BatchNorm1d``) used in eval mode; ``layer``: per group and row over the units (Ba et
    al. 2016, Eq. 4). torch's own norms would need the (G, B, n) layout copied to (B, G·n) first; this normalises in
    place of that layout.

    Shape:
        (G, B, n) -> (G, B, n).
    """

    def __init__(self, kind: str, num_groups: int, width: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', got {kind!r}")
        self.kind, self.eps, self.momentum = kind, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_groups, 1, width))
        self.bias = nn.Parameter(torch.zeros(num_groups, 1, width))
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(num_groups, 1, width))
            self.register_buffer("running_var", torch.ones(num_groups, 1, width))

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """(G, B, n) -> (G, B, n); with ``index`` (G',) int64 the input holds only those groups (eval mode)."""

        def pick(p: torch.Tensor) -> torch.Tensor:
            return p if index is None else p.index_select(0, index)

        if self.kind == "layer":
            var, mean = torch.var_mean(x, dim=2, keepdim=True, unbiased=False)  # (G, B, 1)
        elif self.training and index is None and x.shape[1] > 1:
            # torch's fused batch-norm kernel over (B, G·n): a view when x came from the shared-input GEMM
            # (GroupedMLP's first layer), one copy otherwise; it also updates the running statistics in place
            groups, rows, width = x.shape
            out = nn.functional.batch_norm(
                x.transpose(0, 1).reshape(rows, groups * width), self.running_mean.view(-1),
                self.running_var.view(-1), self.weight.view(-1), self.bias.view(-1), True, self.momentum, self.eps)
            return out.view(rows, groups, width).transpose(0, 1)
        else:
            var, mean = pick(self.running_var), pick(self.running_mean)
        scale = pick(self.weight) * torch.rsqrt(var + self.eps)  # (G, 1|B, n)
        return torch.addcmul(pick(self.bias) - mean * scale, x, scale)


# Training pads the experts' input x0 (B, d) with zero columns to a multiple of GEMM_ALIGN when that widens it by at
# most MAX_PAD_FRACTION. MKL's fp32 GEMMs on an odd width run far below those on an aligned one: on the 2-core
# development machine the reference network's input-gradient GEMM (4096 × 2048) @ (2048 × 429) ran at 107 GFLOP/s
# against 150 at width 432, and the training step took 5-11% less time padded with MLP experts and 17% less with DCN
# experts (docs/results.md#gemm-alignment). A small x0 padded by a larger share costs more than it saves (d = 17 -> 24,
# 33 -> 40 and 57 -> 64 took 6-13%, 10-11% and 3% more time per DCN step), hence the limit. The zero columns meet zero
# weight rows (the parameters are padded per step, not stored padded), so the outputs are those of the unpadded
# network up to rounding, the parameters and artifacts keep their shapes, and the padded entries get no gradient.
GEMM_ALIGN = 8
MAX_PAD_FRACTION = 1 / 16


def _pad_last(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` with zero columns appended to ``width`` along its last dimension (itself when already that wide).

    Raises:
        ValueError: ``t`` is wider than ``width`` (an input narrower than the layer it feeds).
    """
    if t.shape[-1] > width:
        raise ValueError(f"input width {width} is narrower than the layer's {t.shape[-1]}")
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def _pad_rows(w: torch.Tensor, width: int) -> torch.Tensor:
    """``w`` (..., n, m) with zero rows appended to ``width`` along dimension -2 (itself when already that wide).

    Raises:
        ValueError: ``w`` has more rows than ``width`` (an input narrower than the layer it feeds).
    """
    if w.shape[-2] > width:
        raise ValueError(f"input width {width} is narrower than the layer's {w.shape[-2]}")
    return w if w.shape[-2] == width else F.pad(w, (0, 0, 0, width - w.shape[-2]))


class GroupedMLP(nn.Module):
    """G independent MLPs run as one batched matmul per layer.

    Args:
        num_groups: G (experts or tasks).
        in_dim: input width.
        hidden: widths of the layers; ReLU (and dropout) after each but the last when ``last_activation`` is False.
        dropout: dropout after each hidden activation.
        last_activation: apply ReLU after the last layer too (experts: yes; towers ending in a logit: no).
        norm: ``batch`` or ``layer`` normalisation (``GroupedNorm``) between each linear layer and its ReLU; None =
            none. A last layer without activation (a logit) is never normalised.

    Shape:
        (G, B, in_dim) -> (G, B, hidden[-1]).
    """

    def __init__(
        self, num_groups: int, in_dim: int, hidden: list[int], dropout: float = 0.0, last_activation: bool = True,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(num_groups, a, b)) for a, b in zip(dims[:-1], dims[1:])]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(num_groups, 1, b)) for b in dims[1:]])
        for w, b in zip(self.weights, self.biases):
            _init_stacked_linear(w.data, b.data)
        activated = len(hidden) if last_activation else len(hidden) - 1
        self.norms = nn.ModuleList([GroupedNorm(norm, num_groups, w) for w in hidden[:activated]] if norm else [])
        self.dropout = nn.Dropout(dropout)
        self.last_activation = last_activation
        self.num_groups = num_groups
        self.out_dim = dims[-1]

    def forward(
        self, x: torch.Tensor, index: torch.Tensor | None = None, padded_width: int | None = None
    ) -> torch.Tensor:
        """(G, B, in) -> (G, B, out); with ``index`` (G',) int64, only those groups run: (G', B, in) -> (G', B, out).

        A 2-D input (B, in) is shared by every group (experts reading the same x0): the first layer then runs as
        one (B, in) × (in, G·out) matmul instead of G matmuls over an expanded copy, which is the same math with
        one large GEMM (and one (B, in) input gradient instead of G summed ones).

        ``padded_width``: the width ``x`` was padded to with zero columns (``ExpertBank``); the first layer's weights
        are padded with zero rows to it. None: ``x`` has the layer's own width.

        Raises:
            ValueError: ``padded_width`` is narrower than the first layer's input width.
        """
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if index is not None:
                w, b = w.index_select(0, index), b.index_select(0, index)
            if i == 0 and padded_width is not None:
                w = _pad_rows(w, padded_width)
            if x.dim() == 2:  # shared input: one GEMM for all groups
                groups, d_in, d_out = w.shape
                flat = torch.addmm(b.reshape(1, groups * d_out), x, w.permute(1, 0, 2).reshape(d_in, groups * d_out))
                x = flat.view(-1, groups, d_out).transpose(0, 1)  # (G, B, out)
            else:
                x = torch.baddbmm(b, x, w)  # (G, B, out)
            if i < n - 1 or self.last_activation:
                if self.norms:
                    x = self.norms[i](x, index)
                x = self.dropout(torch.relu(x))
        return x


class CrossNetV2(nn.Module):
    """DCN-v2 cross network, E independent copies computed together.

    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l          (Wang et al. 2021, "DCN V2", Eq. 1)
    with optional low-rank W_l = U_l V_lᵀ            (same paper, Eq. 2 without the mixture)

    Args:
        in_dim: d, width of x_0.
        num_layers: number of cross layers (paper CAMoE: 2-3).
        low_rank: rank r of W = U Vᵀ; None = full d × d. r ≈ d / 4 keeps accuracy (DCN-v2 paper, Sec. 5).
        num_experts: E copies with independent weights.

    Shape:
        x0 (B, d) or (E, B, d) -> (E, B, d).

    Example:
        >>> net = CrossNetV2(in_dim=4, num_layers=2, num_experts=3)
        >>> net(torch.randn(5, 4)).shape
        torch.Size([3, 5, 4])
    """

    def __init__(self, in_dim: int, num_layers: int, low_rank: int | None = None, num_experts: int = 1) -> None:
        super().__init__()
        self.in_dim, self.num_layers, self.low_rank, self.num_experts = in_dim, num_layers, low_rank, num_experts
        if low_rank is None:
            self.weights = nn.ParameterList(
                [nn.Parameter(torch.empty(num_experts, in_dim, in_dim)) for _ in range(num_layers)]
            )
            for w in self.weights:
                _init_stacked_linear(w.data, None)
            self.u = self.v = None
        else:
            self.weights = None
            self.v = nn.ParameterList(
                [nn.Parameter(torch.empty(num_experts, in_dim, low_rank)) for _ in range(num_layers)]
            )
            self.u = nn.ParameterList(
                [nn.Parameter(torch.empty(num_experts, low_rank, in_dim)) for _ in range(num_layers)]
            )
            for v, u in zip(self.v, self.u):
                _init_stacked_linear(v.data, None)
                _init_stacked_linear(u.data, None)
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(num_experts, 1, in_dim)) for _ in range(num_layers)]
        )

    def forward(
        self, x0: torch.Tensor, index: torch.Tensor | None = None, padded_width: int | None = None
    ) -> torch.Tensor:
        """(B, d) or (E, B, d) -> (E, B, d); with ``index`` (E',) int64 only those experts run: (B, d) -> (E', B, d).

        ``padded_width``: the width d' x0 was padded to with zero columns (``ExpertBank``); the weights are padded
        with zeros to it, so the extra output columns stay exactly zero: (B, d') -> (E, B, d'). None: x0 is d wide.

        Raises:
            ValueError: ``padded_width`` is narrower than d.
        """

        def pick(p: torch.Tensor, rows: bool = False, cols: bool = False) -> torch.Tensor:
            """The selected experts' slice of ``p``, its input rows / output columns zero-padded to padded_width."""
            p = p if index is None else p.index_select(0, index)
            if padded_width is not None:
                p = _pad_rows(p, padded_width) if rows else p
                p = _pad_last(p, padded_width) if cols else p
            return p

        if x0.dim() == 2:
            x0 = x0.unsqueeze(0).expand(self.num_experts if index is None else index.shape[0], -1, -1)  # (E, B, d)
        x = x0
        for layer in range(self.num_layers):
            if self.weights is not None:
                w = pick(self.weights[layer], rows=True, cols=True)
                wx = torch.baddbmm(pick(self.biases[layer], cols=True), x, w)  # (E, B, d): x Wᵀ + b
            else:
                assert self.u is not None and self.v is not None
                v, u = pick(self.v[layer], rows=True), pick(self.u[layer], cols=True)
                wx = torch.baddbmm(pick(self.biases[layer], cols=True), torch.bmm(x, v), u)
            x = x0 * wx + x
        return x


class ExpertBank(nn.Module):
    """E shared experts run together: an optional stacked ``CrossNetV2`` (DCN experts) then a stacked ``GroupedMLP``.

    The expert is injected, not named by a string: ``ExpertBank(GroupedMLP(E, d, hidden))`` is the MMoE expert,
    ``ExpertBank(GroupedMLP(E, d, hidden), cross=CrossNetV2(d, L, num_experts=E))`` the CAMoE (DCN-v2) expert.

    Args:
        mlp: E stacked MLPs (``GroupedMLP`` with ``num_groups`` = E, ReLU after the last layer).
        cross: E stacked cross networks applied to x0 first, or None.
        align: in training, x0 is padded with zero columns to a multiple of this width (``GEMM_ALIGN``; 1 = never)
            when that widens it by at most ``MAX_PAD_FRACTION``. The attribute of the same name may be changed later
            (``benchmarks/throughput.py`` counts the model's FLOPs unpadded).

    Shape:
        (B, d) -> (E, B, H) with H = ``mlp.out_dim``.

    Raises:
        ValueError: ``cross`` and ``mlp`` hold different numbers of experts, or ``align`` < 1.
    """

    def __init__(self, mlp: GroupedMLP, cross: CrossNetV2 | None = None, align: int = GEMM_ALIGN) -> None:
        super().__init__()
        if cross is not None and cross.num_experts != mlp.num_groups:
            raise ValueError(f"cross network has {cross.num_experts} experts, the MLP {mlp.num_groups}")
        if align < 1:
            raise ValueError(f"align must be >= 1, got {align}")
        self.align = align
        self.cross = cross
        self.mlp = mlp
        self.num_experts = mlp.num_groups
        self.out_dim = mlp.out_dim

    def forward(self, x0: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) -> (E, B, H); with ``index`` (E',) int64 only those experts run (inference-time expert masking):
        (B, d) -> (E', B, H). In training, x0 is first padded with zero columns to ``padded_width(d)`` (faster
        GEMMs; the same outputs up to rounding); evaluation, scoring and export run unpadded."""
        width = self.padded_width(x0.shape[-1]) if self.training else None  # no shape test in export's traced path
        if width is not None:
            x0 = _pad_last(x0, width)  # (B, d')
        x = self.cross(x0, index, width) if self.cross is not None else x0  # (E, B, d), or the shared (B, d)
        return self.mlp(x, index, width)  # (E, B, H)

    def padded_width(self, d: int) -> int | None:
        """The width training pads an x0 of width ``d`` to: the next multiple of ``align`` when that adds at most
        ``MAX_PAD_FRACTION`` · d columns, else None (not padded; also when ``d`` is already a multiple).

        Example:
            >>> bank = ExpertBank(GroupedMLP(2, 4, [3]))
            >>> [bank.padded_width(d) for d in (14, 16, 91, 100, 429)]
            [None, None, 96, 104, 432]
        """
        width = -(-d // self.align) * self.align
        return width if width != d and (width - d) <= MAX_PAD_FRACTION * d else None


class TaskGates(nn.Module):
    """One softmax gate per task over the E experts (MMoE, Ma et al. 2018, Eq. 5), from the shared input.

    Args:
        in_dim: d.
        num_tasks: T.
        num_experts: E.
        allowed: optional (T, E) bool; a task's gate spreads only over its allowed experts (PLE/CGC,
            Tang et al. 2020, Eq. 2: shared experts plus the task's own). None = every expert.

    Shape:
        (B, d) -> (B, T, E), rows summing to 1 (0 on experts a task may not use).
    """

    def __init__(self, in_dim: int, num_tasks: int, num_experts: int, allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_tasks, self.num_experts = num_tasks, num_experts
        self.proj = nn.Linear(in_dim, num_tasks * num_experts)
        if allowed is not None and tuple(allowed.shape) != (num_tasks, num_experts):
            raise ValueError(f"allowed must be (T, E) = ({num_tasks}, {num_experts}), got {tuple(allowed.shape)}")
        self.register_buffer("allowed", allowed.bool() if allowed is not None else None, persistent=False)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        scores = self.proj(x0).view(-1, self.num_tasks, self.num_experts)  # (B, T, E)
        if self.allowed is not None:
            scores = scores.masked_fill(~self.allowed, float("-inf"))  # (B, T, E)
        return torch.softmax(scores, dim=-1)
