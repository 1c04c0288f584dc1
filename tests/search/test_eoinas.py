"""EoiNAS on the DARTS cell space: the indicator's algebra, pruning, derivation, the cost model, the bilevel step."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

import zoo
from latency_tables.predict import Predictor
from search.differentiable import ArchConfig, BilevelStep, weight_parameters
from search.eoinas import (CellCostModel, DartsSupernet, EoiNASConfig, derive_genotype, edge_index, edge_sources,
                           iter_live_counts, removal_importance)
from zoo.spaces import DartsSpace
from zoo.darts import DARTS_V2, cifar_cellnet_spec
from zoo.spec import CELL_OPS

DEVICE = "amd-epyc-f23m1-ort-t1"


def _tiny(seed: int = 0) -> DartsSupernet:
    torch.manual_seed(seed)
    return DartsSupernet(init_chs=4, layers=3, num_classes=3)


# --- the indicator ----------------------------------------------------------------------------------------------


def test_removal_importance_is_the_loss_change_of_pruning_an_op_under_a_linear_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    edges, n_ops = 3, 5
    w = torch.softmax(torch.randn(edges, n_ops, generator=gen), dim=1).requires_grad_(True)
    outputs = torch.randn(edges, n_ops, 7, generator=gen)
    c = torch.randn(edges, 7, generator=gen)

    def loss(weights: torch.Tensor) -> torch.Tensor:
        return (c * (weights.unsqueeze(-1) * outputs).sum(1)).sum()

    loss(w).backward()
    op_imp, edge_imp = removal_importance(w.detach(), w.grad)
    base = loss(w.detach())
    for e in range(edges):
        for o in range(n_ops):
            pruned = w.detach().clone()
            pruned[e, o] = 0.0
            pruned[e] /= pruned[e].sum()  # the survivors renormalised, as the masked softmax does
            assert float(op_imp[e, o]) == pytest.approx(float(loss(pruned) - base), rel=1e-4, abs=1e-5)
        no_edge = w.detach().clone()
        no_edge[e] = 0.0
        assert float(edge_imp[e]) == pytest.approx(float(loss(no_edge) - base), rel=1e-4, abs=1e-5)


def test_indicator_ranks_by_contribution_not_by_alpha() -> None:
    # Op 0 has the largest weight but its output is orthogonal to the loss gradient; op 1 does the work.
    w = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    grad = torch.tensor([[0.0, -1.0, 0.5]], dtype=torch.float64)  # dL/dw: op 1 lowers the loss
    op_imp, _ = removal_importance(w, grad)
    assert int(op_imp.argmax()) == 1 and int(w.argmax()) == 0


def test_update_importance_accumulates_a_bias_corrected_average() -> None:
    net = _tiny()
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 2])
    nn.functional.cross_entropy(net(x), y).backward()
    w_n, _ = net._last_weights
    expected, _ = removal_importance(w_n.detach().double(), w_n.grad.double())
    net.update_importance(decay=0.9)
    op_imp, _edge = net.importance()["normal"]
    assert torch.allclose(op_imp, expected)  # one update: the corrected average is that update
    with pytest.raises(RuntimeError, match="forward and a backward"):
        net.update_importance(decay=0.9)


# --- pruning ----------------------------------------------------------------------------------------------------


def test_schedule_falls_from_all_ops_to_final_ops_between_start_and_end() -> None:
    config = EoiNASConfig(prune_start=0.2, prune_end=0.8, final_ops=2)
    live = [config.live_ops_at(s, 100) for s in range(100)]
    assert live[0] == 8 and live[19] == 8 and live[20] == 7 and live[80] == 2 and live[-1] == 2
    assert all(a >= b for a, b in zip(live, live[1:]))
    assert set(live) == set(range(2, 9))  # one op per event
    assert {EoiNASConfig(selection="darts").live_ops_at(s, 100) for s in range(100)} == {8}


def test_pruned_ops_get_zero_weight_and_are_not_computed() -> None:
    net = _tiny()
    net.importance_normal.copy_(torch.arange(len(CELL_OPS), dtype=torch.float64).expand_as(net.importance_normal))
    net.importance_reduce.copy_(net.importance_normal)
    net.indicator_weight.fill_(1.0)
    removed = net.prune_to(3)
    edges = len(edge_sources(4))
    assert removed == 2 * edges * (len(CELL_OPS) - 3) and set(iter_live_counts(net)) == {3}
    assert net.live_normal[0].nonzero().flatten().tolist() == [5, 6, 7]  # the three most important
    w_n, w_r = net.arch_weights()
    assert float(w_n.detach()[:, :5].abs().sum()) == 0.0 and torch.allclose(w_n.sum(1), torch.ones(edges))
    calls = []
    pruned_op = net.cells[0]._ops[0]._ops[4]
    pruned_op.register_forward_hook(lambda *_: calls.append(1))
    live_op = net.cells[0]._ops[0]._ops[6]
    live_op.register_forward_hook(lambda *_: calls.append(2))
    net(torch.randn(1, 3, 16, 16))
    assert calls == [2]


def test_pruning_keeps_a_real_op_when_none_ranks_highest() -> None:
    net = _tiny()
    scores = torch.full_like(net.importance_normal, -1.0)
    scores[:, CELL_OPS.index("none")] = 5.0
    scores[:, CELL_OPS.index("sep_conv_3x3")] = 1.0
    for kind in ("normal", "reduce"):
        getattr(net, f"importance_{kind}").copy_(scores)
    net.indicator_weight.fill_(1.0)
    net.prune_to(1)
    assert all(row.nonzero().flatten().tolist() == [CELL_OPS.index("sep_conv_3x3")] for row in net.live_normal)
    genotype = net.genotype("eoinas")
    assert {op for op, _ in genotype.normal} == {"sep_conv_3x3"}


# --- derivation -------------------------------------------------------------------------------------------------


def test_darts_derivation_takes_the_strongest_non_none_edges() -> None:
    ops = CELL_OPS
    index = edge_index(2)
    scores = torch.zeros(len(index), len(ops))
    live = torch.ones_like(scores, dtype=torch.bool)
    scores[:, ops.index("none")] = 10.0  # never chosen
    scores[index[(0, 0)], ops.index("sep_conv_3x3")] = 0.9
    scores[index[(0, 1)], ops.index("max_pool_3x3")] = 0.2
    scores[index[(1, 0)], ops.index("skip_connect")] = 0.1
    scores[index[(1, 1)], ops.index("dil_conv_5x5")] = 0.8
    scores[index[(1, 2)], ops.index("avg_pool_3x3")] = 0.7
    edges = derive_genotype(scores, None, live, ops, 2)
    assert edges == (("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_5x5", 1), ("avg_pool_3x3", 2))
    # Edge scores replace the op scores for the choice of inputs (the indicator's rule).
    edge_scores = torch.tensor([0.0, 1.0, 3.0, 0.0, 2.0])
    edges = derive_genotype(scores, edge_scores, live, ops, 2)
    assert edges[2:] == (("skip_connect", 0), ("avg_pool_3x3", 2))
    live[index[(1, 2)]] = False
    live[index[(1, 2)], ops.index("none")] = True
    with pytest.raises(ValueError, match="no live operation"):
        derive_genotype(scores, edge_scores, live, ops, 2)


@pytest.mark.parametrize("selection", ["eoinas", "darts"])
def test_a_trained_supernet_derives_a_genotype_of_the_space(selection: str) -> None:
    net = _tiny()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(net(x), y).backward()
    net.update_importance(0.5)
    genotype = net.genotype(selection)
    DartsSpace().from_genotype(genotype)  # raises if the genotype left the space
    model = zoo.build_model(cifar_cellnet_spec(genotype, init_chs=4, layers=3, num_classes=3))
    assert model(x).shape == (4, 3)
    with pytest.raises(ValueError, match="selection must be one of"):
        net.genotype("alpha")


# --- costs ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def macs_model() -> CellCostModel:
    return CellCostModel("macs")


@pytest.fixture(scope="module")
def latency_model() -> CellCostModel:
    return CellCostModel("latency", device=DEVICE)


def _genotypes() -> list[Any]:
    space = DartsSpace()
    rng = random.Random(3)
    return [DARTS_V2] + [space.genotype(space.sample(rng)) for _ in range(3)]


def test_exact_costs_equal_the_walker_and_the_latency_predictor(macs_model: CellCostModel,
                                                              latency_model: CellCostModel) -> None:
    space = DartsSpace()
    predictor = Predictor.for_device(DEVICE)
    for genotype in _genotypes():
        spec, size = space.to_spec(space.from_genotype(genotype))
        assert macs_model.exact(genotype) == zoo.count(spec, size).macs
        assert latency_model.exact(genotype) == pytest.approx(
            predictor.predict_arch(space, space.from_genotype(genotype)).total_ms, rel=1e-9)


def test_expected_cost_of_one_hot_weights_is_the_exact_cost(macs_model: CellCostModel,
                                                           latency_model: CellCostModel) -> None:
    index = edge_index(4)
    for genotype in _genotypes():
        weights, selected = [], []
        for edges in (genotype.normal, genotype.reduce):
            w = torch.zeros(len(index), len(CELL_OPS))
            w[:, 1] = 1.0  # unselected edges: any op, their edge weight is 0
            sel = torch.zeros(len(index))
            for k, (op, src) in enumerate(edges):
                e = index[(k // 2, src)]
                w[e] = 0.0
                w[e, CELL_OPS.index(op)] = 1.0
                sel[e] = 1.0
            weights.append(w)
            selected.append(sel)
        for model in (macs_model, latency_model):
            got = float(model.expected(weights[0], weights[1], selected[0], selected[1]))
            assert got == pytest.approx(model.exact(genotype), rel=1e-9)


def test_cost_term_reaches_alpha_but_not_the_indicator(latency_model: CellCostModel) -> None:
    net = _tiny()
    net.set_cost_objective(latency_model, target=1.0, weight=1.0)  # far below: the term is large
    terms = net.arch_loss_terms()
    assert set(terms) == {"cost"} and float(terms["cost"].detach()) > 0
    net(torch.randn(1, 3, 16, 16))  # retains the forward's weights for the indicator
    terms["cost"].backward()
    assert net.alphas_normal.grad is not None and float(net.alphas_normal.grad.abs().sum()) > 0
    assert all(w.grad is None for w in net._last_weights)
    with pytest.raises(ValueError, match="target > 0"):
        net.set_cost_objective(latency_model, target=0.0, weight=1.0)


def test_latency_cost_model_needs_a_table() -> None:
    with pytest.raises(ValueError, match="needs a device"):
        CellCostModel("latency")
    with pytest.raises((ValueError, LookupError), match="no-such-device"):
        CellCostModel("latency", device="no-such-device")


# --- the bilevel step -------------------------------------------------------------------------------------------


class _Toy(nn.Module):
    """Two linear experts mixed by softmax(α), with BatchNorm: the smallest differentiable supernet."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.experts = nn.ModuleList(nn.Linear(4, 3) for _ in range(2))
        self.alpha = nn.Parameter(torch.tensor([0.3, -0.2]))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        w = torch.softmax(self.alpha, 0)
        return w[0] * self.experts[0](h) + w[1] * self.experts[1](h)


@dataclass
class _Ctx:
    """What BilevelStep reads of the engine's StepContext."""

    weight_optimizer: torch.optim.Optimizer
    val: tuple[torch.Tensor, torch.Tensor]
    step: int = 0
    epoch: int = 0
    lr: float = 0.1
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)

    def next_batch(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert name == "val"
        return self.val

    def average_gradients(self, params: Any) -> None:
        pass

    def zero_grad(self) -> None:
        self.weight_optimizer.zero_grad(set_to_none=True)


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def test_second_order_gradient_matches_the_exact_unrolled_gradient() -> None:
    torch.manual_seed(0)
    model = _Toy()
    model.bn.eval()  # the exact reference below is a pure function of the weights
    x, y = _data(0)
    val = _data(1)
    xi = 0.1
    weights = weight_parameters(model)
    # Exact: d/dα L_val(w − ξ∇w L_train(w, α), α) through autograd.
    params = {n: p for n, p in model.named_parameters()}
    names = [n for n, p in params.items() if p is not model.alpha]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
    virtual = {n: params[n] - xi * g for n, g in zip(names, grads)} | {"alpha": model.alpha}
    buffers = dict(model.named_buffers())
    val_loss = nn.functional.cross_entropy(torch.func.functional_call(model, (virtual, buffers), (val[0],)), val[1])
    exact = torch.autograd.grad(val_loss, model.alpha)[0]
    first = torch.autograd.grad(nn.functional.cross_entropy(model(val[0]), val[1]), model.alpha)[0]
    assert not torch.allclose(first, exact, rtol=2e-2)  # the unrolled term matters here: the check can tell

    optimizer = torch.optim.SGD(weights, lr=xi, momentum=0.9, weight_decay=0.0)
    step = BilevelStep(model, ArchConfig(order="second"))
    captured = {}
    step.optimizer.step = lambda: captured.setdefault("grad", model.alpha.grad.clone())  # type: ignore[method-assign]
    before = [p.detach().clone() for p in weights]
    step(model, x, y, _Ctx(optimizer, val, lr=xi))
    assert torch.allclose(captured["grad"], exact, rtol=2e-3, atol=1e-6)
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, weights))  # the virtual step was undone


def test_second_order_restores_batchnorm_statistics_and_first_order_only_moves_alpha() -> None:
    torch.manual_seed(0)
    model = _Toy()
    x, y = _data(0)
    optimizer = torch.optim.SGD(weight_parameters(model), lr=0.1, momentum=0.9)
    stats = copy.deepcopy(model.bn.state_dict())
    second = BilevelStep(model, ArchConfig(order="second"))
    second._second_order(model, x, y, *_data(1), _Ctx(optimizer, _data(1)))
    assert all(torch.equal(stats[k], v) for k, v in model.bn.state_dict().items())
    first = BilevelStep(model, ArchConfig(order="first", lr=0.05))
    alpha = model.alpha.detach().clone()
    weights = [p.detach().clone() for p in weight_parameters(model)]
    metrics = first(model, x, y, _Ctx(optimizer, _data(1)))
    assert not torch.equal(alpha, model.alpha.detach())  # Adam moved α ...
    assert all(torch.equal(a, p.detach()) for a, p in zip(weights, weight_parameters(model)))  # ... SGD did not step
    assert all(p.grad is not None for p in weight_parameters(model)) and model.alpha.grad is None
    assert set(metrics) == {"loss", "top1", "val_loss"}


def test_architecture_updates_wait_for_start_step() -> None:
    torch.manual_seed(0)
    model = _Toy()
    x, y = _data(0)
    optimizer = torch.optim.SGD(weight_parameters(model), lr=0.1)
    step = BilevelStep(model, ArchConfig(start_step=2))
    alpha = model.alpha.detach().clone()
    metrics = step(model, x, y, _Ctx(optimizer, _data(1), step=1))
    assert torch.equal(alpha, model.alpha.detach()) and metrics["val_loss"] == 0.0


def test_bilevel_step_refuses_a_model_without_architecture_parameters() -> None:
    with pytest.raises(TypeError, match="arch_parameters"):
        BilevelStep(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="order must be one of"):
        ArchConfig(order="third")
