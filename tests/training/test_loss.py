"""Masked multi-task BCE: gradient isolation between task heads, empty tasks (B20), normalisations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from camoe.config import ModelConfig
from camoe.model import build_model
from camoe.schema import InputSpec
from camoe.training import masked_bce

SPEC = InputSpec(("user_id", "device"), (6, 4), ("interests",), (5,), 2, ("bid_price",))
CONFIG = ModelConfig(embedding_dim=4, num_experts=2, expert_hidden=[8], tower_hidden=[4])


def _bce(logit: float, label: float) -> float:
    """BCE(y, σ(z)) written out: −[y log σ(z) + (1 − y) log(1 − σ(z))]."""
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, 6, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)], 1)
    multi = torch.randint(0, 5, (n, 1, 2), generator=g)
    dense = torch.randn(n, 1, generator=g)
    labels = torch.tensor([1.0, 0.0] * (n // 2))
    return cat, multi, dense, labels


# ----------------------------------------------------------------------------- gradient isolation
@pytest.mark.parametrize("normalisation", ["per_task", "global"])
def test_rows_of_task_a_leave_task_b_tower_gradient_exactly_zero(seeded: None, normalisation: str) -> None:
    model = build_model(CONFIG, SPEC, 2)
    cat, multi, dense, labels = _batch()
    mask = torch.tensor([[1.0, 0.0]]).expand(len(labels), 2)  # every row belongs to task A (index 0)
    out = model(cat, multi, dense)
    loss = masked_bce(out.logits, labels, mask, normalisation)
    loss.total.backward()
    towers = model.towers
    for w, b in zip(towers.weights, towers.biases):
        assert w.grad is not None and b.grad is not None
        assert torch.count_nonzero(w.grad[1]) == 0
        assert torch.count_nonzero(b.grad[1]) == 0
        assert torch.count_nonzero(w.grad[0]) > 0  # task A's tower does learn
    # task B's gate rows (proj outputs B·E .. B·E + E) get no gradient either
    gate_grad = model.gates.proj.weight.grad.view(2, CONFIG.num_experts, -1)  # (T, E, d)
    assert torch.count_nonzero(gate_grad[1]) == 0
    assert torch.count_nonzero(gate_grad[0]) > 0
    assert torch.count_nonzero(model.gates.proj.bias.grad.view(2, -1)[1]) == 0


def test_task_b_logit_has_no_influence_on_loss_when_masked() -> None:
    logits = torch.tensor([[0.3, 50.0], [-1.0, -80.0]], requires_grad=True)
    labels = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = masked_bce(logits, labels, mask)
    out.total.backward()
    assert logits.grad is not None
    assert logits.grad[:, 1].tolist() == [0.0, 0.0]
    expected = (_bce(0.3, 1.0) + _bce(-1.0, 0.0)) / 2
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- B20
def test_b20_empty_task_adds_exactly_zero_and_total_is_finite() -> None:
    logits = torch.tensor([[0.2, -0.4, 1.5], [-0.7, 2.0, 0.1]])
    labels = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # only display rows (task 2)
    out = masked_bce(logits, labels, mask)
    assert torch.isfinite(out.total)
    assert out.task_rows.tolist() == [0.0, 0.0, 2.0]
    assert out.task_losses[0].item() == 0.0 and out.task_losses[1].item() == 0.0
    display_only = masked_bce(logits[:, 2:], labels, mask[:, 2:])
    assert out.total.item() == display_only.total.item()  # the two empty tasks add exactly 0
    assert out.total.item() == pytest.approx((_bce(1.5, 1.0) + _bce(0.1, 0.0)) / 2, rel=1e-6)


def test_b20_all_tasks_empty_gives_zero_loss() -> None:
    logits = torch.zeros(3, 2, requires_grad=True)
    out = masked_bce(logits, torch.ones(3), torch.zeros(3, 2))
    assert out.total.item() == 0.0
    out.total.backward()
    assert torch.count_nonzero(logits.grad) == 0


# ----------------------------------------------------------------------------- normalisation
def test_per_task_loss_is_mean_over_the_tasks_rows() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.2], [-2.0, 0.7, 0.9], [0.1, -0.6, 1.1]])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    out = masked_bce(logits, labels, mask)
    task_a = (_bce(0.5, 1) + _bce(1.5, 0) + _bce(0.1, 0)) / 3
    task_b = _bce(0.7, 1) / 1
    task_c = _bce(1.1, 0) / 1
    assert out.task_losses.tolist() == pytest.approx([task_a, task_b, task_c], rel=1e-6)
    assert out.task_rows.tolist() == [3.0, 1.0, 1.0]
    assert out.total.item() == pytest.approx(task_a + task_b + task_c, rel=1e-6)
    weighted = masked_bce(logits, labels, mask, task_weights=torch.tensor([2.0, 0.5, 0.0]))
    assert weighted.total.item() == pytest.approx(2 * task_a + 0.5 * task_b, rel=1e-6)


def test_global_normalisation_divides_by_all_unmasked_cells() -> None:
    logits = torch.tensor([[0.5, -1.0], [1.5, 0.3], [-2.0, 0.7]])
    labels = torch.tensor([1.0, 0.0, 1.0])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    out = masked_bce(logits, labels, mask, normalisation="global")
    cells = _bce(0.5, 1) + _bce(1.5, 0) + _bce(0.3, 0) + _bce(0.7, 1)
    assert out.total.item() == pytest.approx(cells / 4, rel=1e-6)
    reference = (F.binary_cross_entropy_with_logits(logits, labels[:, None].expand(3, 2), reduction="none") * mask).sum()
    assert out.total.item() == pytest.approx(reference.item() / 4, rel=1e-6)


def test_uncertainty_weighting_is_finite_and_matches_kendall_form() -> None:
    logits = torch.tensor([[0.5, -1.0, 0.0], [1.5, 0.3, 0.0]])
    labels = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # task 2 empty
    log_vars = torch.tensor([0.5, -0.3, 2.0], requires_grad=True)
    out = masked_bce(logits, labels, mask, log_vars=log_vars)
    assert torch.isfinite(out.total)
    la, lb = _bce(0.5, 1), _bce(0.3, 0)
    expected = math.exp(-0.5) * la + 0.5 + math.exp(0.3) * lb - 0.3  # the empty task's s_t is not added
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    out.total.backward()
    assert log_vars.grad is not None and torch.isfinite(log_vars.grad).all()
    assert log_vars.grad[2].item() == 0.0


def test_masked_bce_rejects_bad_arguments() -> None:
    logits, labels, mask = torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 2)
    with pytest.raises(ValueError, match="normalisation"):
        masked_bce(logits, labels, mask, normalisation="batch")
    with pytest.raises(ValueError, match="shapes"):
        masked_bce(logits, labels, torch.ones(2, 3))
    with pytest.raises(ValueError, match="shapes"):
        masked_bce(logits, torch.zeros(3), mask)


def test_b20_sgd_step_on_task_a_rows_leaves_other_towers_unchanged(seeded: None) -> None:
    model = build_model(CONFIG, SPEC, 3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    cat, multi, dense, labels = _batch(n=2)
    mask = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # display rows only
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = masked_bce(model(cat, multi, dense).logits, labels, mask)
    assert torch.isfinite(out.total)
    opt.zero_grad()
    out.total.backward()
    opt.step()
    for i in range(len(model.towers.weights)):
        w, b = model.towers.weights[i], model.towers.biases[i]
        assert torch.equal(w[:2], before[f"towers.weights.{i}"][:2])
        assert torch.equal(b[:2], before[f"towers.biases.{i}"][:2])
    assert not torch.equal(model.towers.weights[-1][2], before[f"towers.weights.{len(model.towers.weights) - 1}"][2])
