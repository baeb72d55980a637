"""Model blocks alone (formula reference + shapes), then the CAMoE assembly; cases B05 and B15."""

from __future__ import annotations

import itertools

import pytest
import torch

from camoe.config import ModelConfig
from camoe.model import (
    MODELS,
    CrossNetV2,
    ExpertBank,
    MultiTaskMoE,
    FeatureEmbedding,
    GroupedMLP,
    GroupedNorm,
    LinearTerm,
    ModelOutput,
    TaskGates,
    build_model,
)
from camoe.schema import MISSING_ID, InputSpec

# 2 categorical fields (tables 5 and 4), 1 multi-valued field (table 6, L = 3), 2 dense features
SPEC = InputSpec(
    cat_features=("user_id", "device"),
    cat_cardinalities=(5, 4),
    multi_features=("interests",),
    multi_cardinalities=(6,),
    max_len=3,
    dense_features=("bid_price", "dwell_sec"),
)
D = 4
IN_DIM = (2 + 1) * D + 2  # F·D + M·D + N = 14


def tiny_model_config(**kw: object) -> ModelConfig:
    base = {"embedding_dim": D, "num_experts": 3, "expert_hidden": [8], "tower_hidden": [4], "num_cross_layers": 2}
    return ModelConfig(**{**base, **kw})


def inputs(batch: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, 5, (batch,), generator=g), torch.randint(0, 4, (batch,), generator=g)], 1)
    multi = torch.randint(0, 6, (batch, 1, 3), generator=g)
    dense = torch.randn(batch, 2, generator=g)
    return cat, multi, dense


# ----------------------------------------------------------------------------- CrossNetV2
def _randomise_biases(net: CrossNetV2) -> None:
    with torch.no_grad():
        for b in net.biases:
            b.normal_()


def test_crossnet_v2_full_rank_matches_formula(seeded: None) -> None:
    net = CrossNetV2(in_dim=6, num_layers=3, num_experts=2)
    _randomise_biases(net)  # biases start at zero; make them count
    x0 = torch.randn(5, 6)
    out = net(x0)
    assert out.shape == (2, 5, 6)
    for e in range(2):
        x = x0.clone()
        for layer in range(3):
            w = net.weights[layer][e]  # (d_in, d_out)
            b = net.biases[layer][e, 0]  # (d,)
            x = x0 * (x @ w + b) + x
        torch.testing.assert_close(out[e], x, rtol=1e-5, atol=1e-6)


def test_crossnet_v2_low_rank_matches_formula(seeded: None) -> None:
    net = CrossNetV2(in_dim=6, num_layers=2, low_rank=2, num_experts=3)
    _randomise_biases(net)
    assert net.weights is None
    assert tuple(net.v[0].shape) == (3, 6, 2) and tuple(net.u[0].shape) == (3, 2, 6)
    x0 = torch.randn(4, 6)
    out = net(x0)
    assert out.shape == (3, 4, 6)
    for e in range(3):
        x = x0.clone()
        for layer in range(2):
            x = x0 * (x @ net.v[layer][e] @ net.u[layer][e] + net.biases[layer][e, 0]) + x
        torch.testing.assert_close(out[e], x, rtol=1e-5, atol=1e-6)


def test_crossnet_v2_takes_one_input_per_expert(seeded: None) -> None:
    net = CrossNetV2(in_dim=3, num_layers=1, num_experts=2)
    x0 = torch.randn(2, 4, 3)  # (E, B, d)
    out = net(x0)
    for e in range(2):
        expected = x0[e] * (x0[e] @ net.weights[0][e] + net.biases[0][e, 0]) + x0[e]
        torch.testing.assert_close(out[e], expected)


def test_crossnet_v2_with_zero_weights_doubles_input() -> None:
    """W = 0, b = 0: x1 = x0 ⊙ 0 + x0 = x0; with b = 1: x1 = x0 ⊙ 1 + x0 = 2 x0."""
    net = CrossNetV2(in_dim=3, num_layers=1, num_experts=1)
    with torch.no_grad():
        net.weights[0].zero_()
        net.biases[0].fill_(1.0)
    x0 = torch.tensor([[1.0, -2.0, 3.0]])
    torch.testing.assert_close(net(x0)[0], 2 * x0)


# ----------------------------------------------------------------------------- GroupedMLP
def test_grouped_mlp_matches_per_group_linear_layers(seeded: None) -> None:
    mlp = GroupedMLP(num_groups=3, in_dim=5, hidden=[4, 2], last_activation=False)
    x = torch.randn(3, 6, 5)
    out = mlp(x)
    assert out.shape == (3, 6, 2)
    for g in range(3):
        h = torch.relu(x[g] @ mlp.weights[0][g] + mlp.biases[0][g, 0])
        expected = h @ mlp.weights[1][g] + mlp.biases[1][g, 0]
        torch.testing.assert_close(out[g], expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- FeatureEmbedding
def test_feature_embedding_shape_and_layout(seeded: None) -> None:
    emb = FeatureEmbedding(SPEC, embedding_dim=D)
    assert emb.out_dim == IN_DIM
    cat, multi, dense = inputs()
    out = emb(cat, multi, dense)
    assert out.shape == (5, IN_DIM)
    assert out.dtype == torch.float32
    # categorical field j reads row id + offset_j of the shared table
    torch.testing.assert_close(out[:, :D], emb.cat_table.weight[cat[:, 0]])
    torch.testing.assert_close(out[:, D : 2 * D], emb.cat_table.weight[cat[:, 1] + 5])
    torch.testing.assert_close(out[:, -2:], dense)


def test_feature_embedding_mean_pools_present_ids_only(seeded: None) -> None:
    emb = FeatureEmbedding(SPEC, embedding_dim=D)
    cat = torch.tensor([[2, 2], [2, 2]])
    multi = torch.tensor([[[3, 5, 0]], [[4, 0, 0]]])  # padding 0 is ignored
    out = emb(cat, multi, torch.zeros(2, 2))
    pooled = out[:, 2 * D : 3 * D]
    table = emb.multi_table.weight
    torch.testing.assert_close(pooled[0], (table[3] + table[5]) / 2)
    torch.testing.assert_close(pooled[1], table[4])


def test_b15_empty_multi_valued_cell_pools_to_zeros(seeded: None) -> None:
    emb = FeatureEmbedding(SPEC, embedding_dim=D)
    with torch.no_grad():
        emb.multi_table.weight[0].fill_(7.0)  # even a non-zero padding row must not leak in
    cat = torch.tensor([[2, 2]])
    out = emb(cat, torch.zeros(1, 1, 3, dtype=torch.long), torch.zeros(1, 2))
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 2 * D : 3 * D], torch.zeros(D))


def test_b15_empty_cell_gives_finite_model_output_and_gradients(seeded: None) -> None:
    model = build_model(tiny_model_config(), SPEC, 2)
    cat = torch.tensor([[2, 2], [3, 1]])
    multi = torch.tensor([[[0, 0, 0]], [[2, 3, 0]]])
    out = model(cat, multi, torch.zeros(2, 2))
    assert torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_feature_embedding_refuses_spec_without_inputs() -> None:
    empty = InputSpec((), (), (), (), 1, ())
    with pytest.raises(ValueError, match="at least one"):
        FeatureEmbedding(empty, embedding_dim=D)


def test_feature_embedding_dense_only_spec_runs() -> None:
    """B18: only dense features: the model runs on the dense vector."""
    spec = InputSpec((), (), (), (), 1, ("bid_price", "dwell_sec"))
    model = build_model(tiny_model_config(), spec, 2)
    out = model(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, 1, dtype=torch.long), torch.randn(3, 2))
    assert out.logits.shape == (3, 2)
    assert torch.isfinite(out.logits).all()


# ----------------------------------------------------------------------------- ExpertBank / TaskGates
@pytest.mark.parametrize("expert_type", ["dcn", "mlp"])
def test_expert_bank_shape(seeded: None, expert_type: str) -> None:
    cross = CrossNetV2(IN_DIM, num_layers=2, num_experts=3) if expert_type == "dcn" else None
    bank = ExpertBank(GroupedMLP(3, IN_DIM, [8, 5]), cross=cross)
    out = bank(torch.randn(7, IN_DIM))
    assert out.shape == (3, 7, 5)
    assert bank.out_dim == 5
    assert (out >= 0).all()  # ReLU after the last expert layer
    assert (bank.cross is None) == (expert_type == "mlp")


@pytest.mark.parametrize("expert_type,low_rank,index", [
    ("mlp", None, None), ("dcn", None, None), ("dcn", 3, None), ("dcn", None, [2, 0]), ("mlp", None, [1]),
])
def test_padding_the_expert_input_in_training_changes_neither_outputs_nor_gradients(
    seeded: None, expert_type: str, low_rank: int | None, index: list[int] | None,
) -> None:
    # training pads x0 (B, 100) to (B, 104) with zero columns (GEMM_ALIGN); evaluation runs unpadded: the same math
    d = 100
    cross = CrossNetV2(d, num_layers=2, low_rank=low_rank, num_experts=3) if expert_type == "dcn" else None
    bank = ExpertBank(GroupedMLP(3, d, [8, 5]), cross=cross)
    if cross is not None:
        _randomise_biases(cross)
    x0 = torch.randn(7, d)
    pick = None if index is None else torch.tensor(index)
    widths: list[int] = []
    bank.mlp.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[-1]))
    runs = []
    for training in (True, False):
        bank.train(training)
        bank.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        out = bank(x, pick)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads = {n: p.grad.clone() for n, p in bank.named_parameters() if p.grad is not None}
        runs.append((out.detach(), x.grad, grads))
    (out_t, dx_t, grads_t), (out_e, dx_e, grads_e) = runs
    assert widths == [104, d]  # the experts' MLP read 104 columns in training, 100 in evaluation
    assert out_t.shape == (3 if index is None else len(index), 7, 5)
    torch.testing.assert_close(out_t, out_e, rtol=1e-5, atol=1e-6)
    assert dx_t.shape == x0.shape  # the padding's gradient is cut off before x0
    torch.testing.assert_close(dx_t, dx_e, rtol=1e-5, atol=1e-6)
    assert grads_t.keys() == grads_e.keys() and grads_t
    for name in grads_t:  # parameters keep their shapes: only the per-step copies are padded
        assert grads_t[name].shape == dict(bank.named_parameters())[name].shape
        torch.testing.assert_close(grads_t[name], grads_e[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("d", "align", "expected"), [
    (100, 8, 104), (429, 8, 432), (91, 8, 96),  # at most 1/16 wider: padded
    (96, 8, 96), (16, 8, 16),  # already aligned
    (14, 8, 14), (57, 8, 57), (9, 8, 9),  # a small x0 would grow by more than 1/16: left as it is
    (100, 1, 100), (100, 16, 100), (250, 16, 256),
])
def test_training_pads_the_expert_input_only_to_the_next_aligned_width_at_most_a_sixteenth_wider(
    d: int, align: int, expected: int,
) -> None:
    bank = ExpertBank(GroupedMLP(2, d, [4]), align=align).train()
    widths: list[int] = []
    bank.mlp.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[-1]))
    bank(torch.randn(3, d))
    assert widths == [expected]


def test_expert_bank_refuses_an_alignment_below_one() -> None:
    with pytest.raises(ValueError, match="align must be >= 1, got 0"):
        ExpertBank(GroupedMLP(2, IN_DIM, [4]), align=0)


@pytest.mark.parametrize("layer", ["mlp", "mlp_3d", "cross"])
def test_a_training_layer_refuses_an_input_wider_than_itself_instead_of_ignoring_the_extra_columns(layer: str) -> None:
    net = (CrossNetV2(IN_DIM, num_layers=1, num_experts=2) if layer == "cross" else GroupedMLP(2, IN_DIM, [4])).train()
    x = torch.randn(2, 3, IN_DIM + 6) if layer == "mlp_3d" else torch.randn(3, IN_DIM + 6)
    with pytest.raises(RuntimeError):
        net(x)


def test_an_expert_input_narrower_than_the_layer_is_refused_not_cropped() -> None:
    with pytest.raises(ValueError, match="input width 12 is narrower than the layer's 14"):
        CrossNetV2(IN_DIM, num_layers=1, num_experts=2)(torch.randn(3, 12), padded_width=12)
    with pytest.raises(ValueError, match="input width 12 is narrower than the layer's 14"):
        GroupedMLP(2, IN_DIM, [4])(torch.randn(3, 12), padded_width=12)


def test_expert_bank_refuses_cross_network_and_mlp_of_different_expert_counts() -> None:
    with pytest.raises(ValueError, match="3 experts, the MLP 2"):
        ExpertBank(GroupedMLP(2, IN_DIM, [4]), cross=CrossNetV2(IN_DIM, num_layers=1, num_experts=3))


def test_task_gates_shape_and_rows_sum_to_one(seeded: None) -> None:
    gates = TaskGates(IN_DIM, num_tasks=3, num_experts=4)
    g = gates(torch.randn(6, IN_DIM) * 5)
    assert g.shape == (6, 3, 4)
    assert (g >= 0).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(6, 3))


# ----------------------------------------------------------------------------- CAMoE assembly
def test_camoe_output_shapes_and_gates(seeded: None) -> None:
    model = build_model(tiny_model_config(), SPEC, 3)
    out = model(*inputs(batch=5))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (5, 3)
    assert out.gate_weights.shape == (5, 3, 3)
    assert out.embeddings is not None and out.embeddings.shape == (5, 3, D)
    torch.testing.assert_close(out.gate_weights.sum(-1), torch.ones(5, 3))
    assert torch.isfinite(out.logits).all()


def test_camoe_forward_matches_paper_equations(seeded: None) -> None:
    """logit_t = tower_t(Σ_e g_{t,e} · expert_e(x0)), computed by hand from the blocks."""
    model = build_model(tiny_model_config(), SPEC, 2).eval()
    cat, multi, dense = inputs(batch=4, seed=3)
    out = model(cat, multi, dense)
    x0 = model.embedding(cat, multi, dense)  # (B, d)
    h = model.experts(x0)  # (E, B, H)
    g = model.gates(x0)  # (B, T, E)
    for t in range(2):
        z = sum(g[:, t, e : e + 1] * h[e] for e in range(3))  # (B, H)
        hidden = torch.relu(z @ model.towers.weights[0][t] + model.towers.biases[0][t, 0])
        logit = (hidden @ model.towers.weights[1][t] + model.towers.biases[1][t, 0])[:, 0]
        torch.testing.assert_close(out.logits[:, t], logit, rtol=1e-5, atol=1e-6)


def test_camoe_init_output_bias_sets_last_tower_bias() -> None:
    model = build_model(tiny_model_config(), SPEC, 2)
    model.init_output_bias(torch.tensor([-3.0, -5.0]))
    assert model.towers.biases[-1].flatten().tolist() == [-3.0, -5.0]


def test_build_model_registry() -> None:
    model = build_model(tiny_model_config(), SPEC, 2)
    assert isinstance(model, MultiTaskMoE) and model.experts.cross is not None  # camoe: DCN-v2 experts
    assert set(MODELS) == {"camoe", "mmoe", "shared_bottom", "cgc", "dnn", "dcn_v2"}
    with pytest.raises(ValueError, match="camoe"):
        build_model(tiny_model_config(name="nope"), SPEC, 2)


def test_camoe_rejects_zero_tasks() -> None:
    with pytest.raises(ValueError, match="num_tasks"):
        build_model(tiny_model_config(), SPEC, 0)


# ----------------------------------------------------------------------------- B05
def _expert_tensors(model: MultiTaskMoE) -> list[torch.Tensor]:
    """Every per-expert stacked parameter of the expert bank (leading dim E)."""
    bank = model.experts
    tensors = [*bank.cross.weights, *bank.mlp.weights, *bank.mlp.biases]
    return [t.detach().clone() for t in tensors]


def _assert_experts_pairwise_distinct(tensors: list[torch.Tensor], num_experts: int) -> None:
    for i, j in itertools.combinations(range(num_experts), 2):
        diff = max(float((t[i] - t[j]).abs().max()) for t in tensors)
        assert diff > 0, f"experts {i} and {j} are identical"
        for t in tensors:  # each stacked tensor separately, too
            if t[i].numel() and t[i].abs().sum() > 0:
                assert float((t[i] - t[j]).abs().max()) > 0, f"experts {i}, {j} share a tensor of shape {tuple(t.shape)}"


def test_b05_experts_initialised_differently(seeded: None) -> None:
    model = build_model(tiny_model_config(num_experts=3), SPEC, 3)
    _assert_experts_pairwise_distinct(_expert_tensors(model), 3)
    # gates differ per expert too: the gate projection rows of one task are not identical
    w = model.gates.proj.weight.detach().view(3, 3, -1)  # (T, E, d)
    for i, j in itertools.combinations(range(3), 2):
        assert float((w[:, i] - w[:, j]).abs().max()) > 0


def test_b05_experts_still_distinct_after_one_training_step(make_config, b04_rows) -> None:
    import camoe

    cfg = make_config(train={"epochs": 1, "batch_size": 8}, model={"num_experts": 3})
    pipe = camoe.CTRPipeline(cfg).fit(b04_rows)
    assert pipe.train_result_ is not None and pipe.train_result_.steps == 1
    _assert_experts_pairwise_distinct(_expert_tensors(pipe.model_), 3)


def test_b05_different_seeds_give_different_init() -> None:
    torch.manual_seed(1)
    a = build_model(tiny_model_config(), SPEC, 2)
    torch.manual_seed(2)
    b = build_model(tiny_model_config(), SPEC, 2)
    torch.manual_seed(1)
    c = build_model(tiny_model_config(), SPEC, 2)
    assert not torch.equal(a.experts.mlp.weights[0], b.experts.mlp.weights[0])
    for (name, pa), (_, pc) in zip(a.state_dict().items(), c.state_dict().items()):
        assert torch.equal(pa, pc), name


# ----------------------------------------------------------------------------- contract over every registered model
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("expert_type", ["dcn", "mlp"])
@pytest.mark.parametrize("shared_tower", [False, True])
def test_registered_model_contract(name: str, expert_type: str, shared_tower: bool) -> None:
    from camoe.training import masked_bce

    cfg = tiny_model_config(name=name, expert_type=expert_type, low_rank=2, dropout=0.2, shared_tower=shared_tower)
    torch.manual_seed(0)
    model = build_model(cfg, SPEC, 3)
    cat, multi, dense = inputs(batch=6, seed=1)
    model.eval()
    out = model(cat, multi, dense)
    assert isinstance(out, ModelOutput)
    num_experts = {"shared_bottom": 1, "dnn": 1, "dcn_v2": 1,
                   "cgc": cfg.num_experts + 3 * cfg.task_experts}.get(name, cfg.num_experts)
    assert out.logits.shape == (6, 3) and out.gate_weights.shape == (6, 3, num_experts)
    torch.testing.assert_close(out.gate_weights.sum(-1), torch.ones(6, 3))
    assert torch.isfinite(out.logits).all()
    assert torch.equal(out.logits, model(cat, multi, dense).logits)  # eval mode is deterministic
    torch.manual_seed(0)
    twin = build_model(cfg, SPEC, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    model.train()
    mask = torch.zeros(6, 3)
    mask[:, 0] = 1.0  # every row trains task 0 only
    masked_bce(model(cat, multi, dense).logits, torch.tensor([1.0, 0.0] * 3), mask).total.backward()
    for w in [*model.towers.weights, *model.towers.biases]:
        assert torch.count_nonzero(w.grad[1:3]) == 0  # the other tasks' towers (a shared tower's row 3 learns)
        assert (torch.count_nonzero(w.grad[3:]) > 0) == shared_tower


def test_shared_tower_adds_its_logit_to_every_task_and_starts_at_zero(seeded: None) -> None:
    model = build_model(tiny_model_config(shared_tower=True), SPEC, num_tasks=2)
    assert model.num_tasks == 2 and model.towers.num_groups == 3 and model.gates.num_tasks == 3
    model.init_output_bias(torch.tensor([-3.0, -5.0]))
    assert model.towers.biases[-1].flatten().tolist() == [-3.0, -5.0, 0.0]
    model.eval()
    cat, multi, dense = inputs(batch=4)
    out = model(cat, multi, dense)
    x0 = model.embedding(cat, multi, dense)
    z = torch.einsum("bte,ebh->tbh", model.gates(x0), model.experts(x0))  # (3, B, H)
    heads = model.towers(z).squeeze(-1).T  # (B, 3)
    torch.testing.assert_close(out.logits, heads[:, :2] + heads[:, 2:])
    assert out.gate_weights.shape == (4, 2, 3)  # the task gates only
    assert build_model(tiny_model_config(shared_tower=True), SPEC, num_tasks=1).towers.num_groups == 1


def test_a_wide_model_starts_where_the_deep_one_does_and_adds_one_weight_per_value_to_every_task() -> None:
    for name in sorted(MODELS):
        torch.manual_seed(0)
        deep = build_model(tiny_model_config(name=name), SPEC, num_tasks=3)
        torch.manual_seed(0)
        wide = build_model(tiny_model_config(name=name, wide=True), SPEC, num_tasks=3)
        deep.eval(), wide.eval()
        cat, multi, dense = inputs(batch=6, seed=3)
        torch.testing.assert_close(wide(cat, multi, dense).logits, deep(cat, multi, dense).logits)  # weights start at 0
    term = wide.linear
    assert isinstance(term, LinearTerm)
    with torch.no_grad():
        term.weights.cat_table.weight.copy_(torch.arange(9.0).view(9, 1))  # user_id rows 0..4, device rows 5..8
        term.weights.multi_table.weight.copy_(torch.arange(6.0).view(6, 1) / 10)
        term.dense.weight.copy_(torch.tensor([[2.0, -1.0]]))
    multi[0, 0] = torch.tensor([1, 3, MISSING_ID])  # mean of the present values' weights: (0.1 + 0.3) / 2
    expected = (cat[:, 0] + 5 + cat[:, 1]).float() + dense @ torch.tensor([2.0, -1.0])
    present = multi[:, 0] != MISSING_ID
    expected += (multi[:, 0].float() / 10 * present).sum(1) / present.sum(1).clamp_min(1)
    torch.testing.assert_close(term(cat, multi, dense), expected)
    torch.testing.assert_close(wide(cat, multi, dense).logits - deep(cat, multi, dense).logits,
                               expected.unsqueeze(1).expand(6, 3))  # the same term in every task's logit


def test_cgc_gates_use_shared_and_own_experts_only() -> None:
    cfg = tiny_model_config(name="cgc", num_experts=2, task_experts=1)
    torch.manual_seed(0)
    model = build_model(cfg, SPEC, 3)
    gates = model(*inputs(batch=4, seed=2)).gate_weights  # (B, T, E) with E = 2 shared + 3 own
    assert gates.shape == (4, 3, 5)
    for t in range(3):
        own = 2 + t
        others = [e for e in range(2, 5) if e != own]
        assert torch.all(gates[:, t, others] == 0) and torch.all(gates[:, t, [0, 1, own]] > 0)


def test_mmoe_has_no_cross_layers_and_shared_bottom_one_expert() -> None:
    torch.manual_seed(0)
    assert build_model(tiny_model_config(name="mmoe", expert_type="dcn"), SPEC, 2).experts.cross is None
    sb = build_model(tiny_model_config(name="shared_bottom"), SPEC, 2)
    assert torch.equal(sb(*inputs(batch=3, seed=0)).gate_weights, torch.ones(3, 2, 1))


# ----------------------------------------------------------------------------- GroupedNorm
def test_batch_norm_per_group_matches_torch_batchnorm_in_training_and_eval(seeded: None) -> None:
    norm = GroupedNorm("batch", num_groups=3, width=4)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    reference = [torch.nn.BatchNorm1d(4) for _ in range(3)]
    for g, ref in enumerate(reference):
        ref.weight.data.copy_(norm.weight[g, 0])
        ref.bias.data.copy_(norm.bias[g, 0])
    for _ in range(3):  # running statistics follow the same updates
        x = torch.randn(3, 16, 4) * 3 + 1
        out = norm(x)
        for g, ref in enumerate(reference):
            torch.testing.assert_close(out[g], ref(x[g]), rtol=1e-5, atol=1e-5)
    norm.eval()
    x = torch.randn(3, 5, 4)
    for g, ref in enumerate(reference):
        ref.eval()
        torch.testing.assert_close(norm(x)[g], ref(x[g]), rtol=1e-5, atol=1e-5)


def test_layer_norm_per_group_matches_layer_norm_with_each_groups_affine(seeded: None) -> None:
    norm = GroupedNorm("layer", num_groups=2, width=6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 7, 6)
    for g in range(2):
        expected = torch.nn.functional.layer_norm(x[g], (6,), norm.weight[g, 0], norm.bias[g, 0])
        torch.testing.assert_close(norm(x)[g], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["batch", "layer"])
def test_norm_of_selected_groups_equals_those_groups_of_the_full_run(seeded: None, kind: str) -> None:
    mlp = GroupedMLP(num_groups=4, in_dim=5, hidden=[6, 3], norm=kind)
    mlp.train()
    mlp(torch.randn(64, 5))  # move the running statistics off their initial values
    mlp.eval()
    x = torch.randn(9, 5)
    index = torch.tensor([3, 1])
    torch.testing.assert_close(mlp(x, index), mlp(x)[index])


def test_norm_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'batch' or 'layer'"):
        GroupedNorm("group", 2, 3)


@pytest.mark.parametrize("kind", ["batch", "layer"])
def test_model_with_norm_scores_one_row_like_a_batch_in_eval_mode(seeded: None, kind: str) -> None:
    model = build_model(tiny_model_config(norm=kind), SPEC, num_tasks=2)
    model.train()
    model(*inputs(batch=32, seed=1))  # one training-mode pass updates the running statistics
    model.eval()
    cat, multi, dense = inputs(batch=6)
    full = model(cat, multi, dense).logits
    single = torch.cat([model(cat[i : i + 1], multi[i : i + 1], dense[i : i + 1]).logits for i in range(6)])
    torch.testing.assert_close(single, full, rtol=1e-5, atol=1e-6)
