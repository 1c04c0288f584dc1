"""EoiNAS: a DARTS cell supernet searched with an operation-importance indicator and gradual operation pruning.

Paper: Xie, Zhou, Kung, "Exploiting Operation Importance for Differentiable Neural Architecture Search",
arXiv:1911.10511 (papers.md §1). Owns the search supernet of the DARTS cell space (:class:`DartsSupernet`:
DARTS' ``model_search.py`` layout, 8 candidate operations per edge, normal and reduction cells sharing one
α each, non-affine BatchNorm in the candidate ops and pools followed by BatchNorm as DARTS), the
indicator and the pruning schedule (:class:`EoiNASConfig`, :meth:`DartsSupernet.prune_to`), the two
derivations of a genotype (:func:`derive_genotype`: DARTS' from α, EoiNAS' from the indicator), the
expected-cost objective (:class:`CellCostModel`: MACs from the one walker, latency from a lookup table)
and :func:`run_search`, the search as an engine run (bilevel step of :mod:`search.differentiable`).

What is published (papers.md §1.2): the op with the largest architecture weight is not necessarily the
op that matters most, so an indicator replaces softmax(α) to rank operations, and operations are removed
gradually during the search. The indicator's formula and the schedule are not retrievable (§1.4), so:

* **Indicator** (an assumption, documented as such in reports): the first-order estimate of how much the
  validation loss would rise if the operation were removed from its edge and the survivors' weights
  renormalised, which is exactly what a pruning step does. With ``w`` the edge's mixing weights and
  ``d_o = ∂L_val/∂w_o = ⟨∂L_val/∂h, o(x)⟩``, removing ``o`` changes ``h`` by ``w_o/(1−w_o)·(h − o(x))``, so
  ``I_o = w_o·(d̄ − d_o)/(1 − w_o)`` with ``d̄ = Σ w_j d_j``. It rewards what an op *does* for the loss, not
  how large its α grew (``none`` has ``d = 0`` and ranks by how much the others help; a parameter-free op
  with a large α but an output the loss does not need ranks low). An edge's importance (which two inputs a
  node keeps) is the estimated loss rise if the whole edge were removed, ``−d̄``. Both are summed over the
  cells sharing α and over the processes, and smoothed by a bias-corrected exponential moving average
  whose half-life is ``half_life_epochs`` (the journal version's "high-order Markov chain" wording suggests
  the indicator remembers several past epochs, papers.md §1.1).
* **Gradual pruning**: from ``prune_start`` to ``prune_end`` (fractions of the run) the number of live
  operations per edge falls evenly from 8 to ``final_ops``, one pruning event per removed op; each event
  removes the lowest-importance live ops of every edge but never an edge's last non-``none`` op. A pruned
  op's weight is exactly 0 (masked softmax) and it is no longer computed, which is where the search gets
  cheaper as it goes.
* **Derivation** (``selection="eoinas"``): each node keeps the two incoming edges of highest edge
  importance, each edge its live non-``none`` op of highest importance. ``selection="darts"`` runs plain
  DARTS (no pruning) and derives as DARTS does, from α; both derivations are always reported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import InputError
from search.differentiable import cost_penalty
from search.distributed import average_gradients
from zoo.cells import FactorizedReduce, ReLUConvBN, create_cell_op
from zoo.darts import cifar_cellnet_spec
from zoo.spec import CELL_OPS, Genotype
from search.choices import EOINAS_SELECTIONS as SELECTIONS

__all__ = ["CellCostModel", "DartsSupernet", "EoiNASConfig", "SELECTIONS", "derive_genotype", "edge_index",
           "edge_sources", "removal_importance"]


@dataclass(frozen=True)
class EoiNASConfig:
    """The indicator and the pruning schedule (see the module docstring for the reasoning).

    Attributes:
        selection: ``"eoinas"`` (indicator, gradual pruning) or ``"darts"`` (α, no pruning: the baseline).
        half_life_epochs: half-life of the indicator's moving average, in epochs of architecture steps.
        prune_start, prune_end: the first and the last pruning event, as fractions of the run's steps.
        final_ops: live operations per edge after the last event (1..8).
    """

    selection: str = "eoinas"
    half_life_epochs: float = 1.0
    prune_start: float = 0.25
    prune_end: float = 0.85
    final_ops: int = 1

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise InputError(f"EoiNASConfig.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not (isinstance(self.half_life_epochs, (int, float)) and self.half_life_epochs > 0):
            raise InputError(f"EoiNASConfig.half_life_epochs must be > 0, got {self.half_life_epochs!r}")
        if not 0.0 <= self.prune_start <= self.prune_end <= 1.0:
            raise InputError(f"EoiNASConfig needs 0 <= prune_start <= prune_end <= 1, got {self.prune_start!r}, "
                             f"{self.prune_end!r}")
        if isinstance(self.final_ops, bool) or not isinstance(self.final_ops, int) \
                or not 1 <= self.final_ops <= len(CELL_OPS):
            raise InputError(f"EoiNASConfig.final_ops must be an int in 1..{len(CELL_OPS)}, got {self.final_ops!r}")

    @property
    def prunes(self) -> bool:
        return self.selection == "eoinas"

    def live_ops_at(self, step: int, total_steps: int, n_ops: int = len(CELL_OPS)) -> int:
        """Live operations per edge the schedule allows from optimizer step ``step`` (0-based) of ``total_steps``."""
        if not self.prunes or self.final_ops >= n_ops:
            return n_ops
        events = n_ops - self.final_ops
        done = 0
        for k in range(events):
            at = self.prune_start + (self.prune_end - self.prune_start) * (k / (events - 1) if events > 1 else 0.0)
            if step >= max(1, round(at * total_steps)):
                done += 1
        return n_ops - done

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def edge_sources(nodes: int) -> list[tuple[int, int]]:
    """``(node, source state)`` of every edge of a search cell, node by node (DARTS' order: 14 for 4 nodes)."""
    return [(node, src) for node in range(nodes) for src in range(2 + node)]


def edge_index(nodes: int) -> dict[tuple[int, int], int]:
    return {edge: i for i, edge in enumerate(edge_sources(nodes))}


def _without_affine(module: nn.Module) -> nn.Module:
    """DARTS' search ops normalise without learnable affine parameters (α does the scaling)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.BatchNorm2d(child.num_features, affine=False))
        else:
            _without_affine(child)
    return module


def search_op(name: str, chs: int, stride: int) -> nn.Module:
    """A candidate operation as DARTS' search network builds it: non-affine BN, pools followed by BN."""
    op = _without_affine(create_cell_op(name, chs, stride))
    if "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(chs, affine=False))
    return op


class MixedOp(nn.Module):
    """All candidates of one edge; the output is the weighted sum over the live ones only."""

    def __init__(self, ops: Sequence[str], chs: int, stride: int) -> None:
        super().__init__()
        self._ops = nn.ModuleList(search_op(op, chs, stride) for op in ops)

    def forward(self, x: Tensor, weights: Tensor, live: Sequence[int]) -> Tensor:
        return sum(weights[i] * self._ops[i](x) for i in live)  # type: ignore[return-value]


class SearchCell(nn.Module):
    """A cell of the search network: every earlier state feeds every node through a :class:`MixedOp`."""

    def __init__(self, ops: Sequence[str], nodes: int, c_prev_prev: int, c_prev: int, chs: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        self.preprocess0 = _without_affine(FactorizedReduce(c_prev_prev, chs) if reduction_prev
                                           else ReLUConvBN(c_prev_prev, chs, 1, 1, 0))
        self.preprocess1 = _without_affine(ReLUConvBN(c_prev, chs, 1, 1, 0))
        self._ops = nn.ModuleList(MixedOp(ops, chs, 2 if reduction and src < 2 else 1)
                                  for _node, src in edge_sources(nodes))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, live: Sequence[Sequence[int]]) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for node in range(self.nodes):
            states.append(sum(self._ops[offset + j](h, weights[offset + j], live[offset + j])
                              for j, h in enumerate(states)))  # type: ignore[arg-type]
            offset += len(states) - 1
        return torch.cat(states[-self.nodes:], dim=1)


def masked_softmax(logits: Tensor, live: Tensor) -> Tensor:
    """Softmax over each row's live entries; pruned entries get exactly 0."""
    return F.softmax(logits.masked_fill(~live, float("-inf")), dim=-1)


class DartsSupernet(nn.Module):
    """DARTS' search network over the cell space (papers.md §1.3): CIFAR stem, ``layers`` cells, reductions
    at 1/3 and 2/3 depth, two α tensors (normal, reduce) of shape (edges, ops) shared by all cells of a type.

    Buffers (travel in ``state_dict``): ``live_*`` (which ops are still candidates), ``importance_*`` and
    ``edge_importance_*`` (the indicator's moving sums), ``indicator_weight`` (the moving sum's total weight,
    for bias correction). α starts at ``1e-3·N(0, 1)`` as DARTS.
    """

    def __init__(self, init_chs: int = 16, layers: int = 8, num_classes: int = 10, nodes: int = 4,
                 ops: Sequence[str] = CELL_OPS, stem_multiplier: int = 3) -> None:
        super().__init__()
        unknown = [op for op in ops if op not in CELL_OPS]
        if unknown or len(set(ops)) != len(ops) or len(ops) < 2:
            raise InputError(f"DartsSupernet ops must be at least two distinct DARTS primitives, got {list(ops)}")
        if layers < 3 or init_chs < 2 or init_chs % 2 or nodes < 1:
            raise InputError(f"DartsSupernet needs layers >= 3, an even init_chs >= 2 and nodes >= 1, got "
                             f"layers={layers}, init_chs={init_chs}, nodes={nodes}")
        self.ops = tuple(ops)
        self.nodes, self.layers, self.init_chs, self.num_classes = nodes, layers, init_chs, num_classes
        width = stem_multiplier * init_chs
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        c_pp, c_p, chs, reduction_prev = width, width, init_chs, False
        self.reductions = (layers // 3, 2 * layers // 3)
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in self.reductions
            chs = chs * 2 if reduction else chs
            self.cells.append(SearchCell(self.ops, nodes, c_pp, c_p, chs, reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, nodes * chs, reduction
        self.classifier = nn.Linear(c_p, num_classes)
        edges = len(edge_sources(nodes))
        shape = (edges, len(self.ops))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(shape))
        for kind in ("normal", "reduce"):
            self.register_buffer(f"live_{kind}", torch.ones(shape, dtype=torch.bool))
            self.register_buffer(f"importance_{kind}", torch.zeros(shape, dtype=torch.float64))
            self.register_buffer(f"edge_importance_{kind}", torch.zeros(edges, dtype=torch.float64))
        self.register_buffer("indicator_weight", torch.zeros((), dtype=torch.float64))
        self.cost_objective: tuple[CellCostModel, float, float] | None = None
        self._last_weights: tuple[Tensor, Tensor] | None = None

    # --- the differentiable-search protocol --------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def arch_weights(self) -> tuple[Tensor, Tensor]:
        """Mixing weights (normal, reduce): softmax of α over each edge's live ops."""
        return (masked_softmax(self.alphas_normal, self.live_normal),
                masked_softmax(self.alphas_reduce, self.live_reduce))

    def set_cost_objective(self, model: CellCostModel, target: float, weight: float) -> None:
        """Add ``weight·|E[cost]/target − 1|`` to the architecture loss (:func:`search.differentiable.cost_penalty`)."""
        if not (target > 0 and weight >= 0):
            raise InputError(f"cost objective needs target > 0 and weight >= 0, got target={target}, weight={weight}")
        self.cost_objective = (model, float(target), float(weight))

    def arch_loss_terms(self) -> dict[str, Tensor]:
        if self.cost_objective is None:
            return {}
        model, target, weight = self.cost_objective
        # Weights computed afresh: the cost term's gradient must not reach the indicator's retained weights.
        return {"cost": cost_penalty(model.expected(*self.arch_weights()), target, weight)}

    def forward(self, x: Tensor) -> Tensor:
        w_normal, w_reduce = self.arch_weights()
        if torch.is_grad_enabled() and w_normal.requires_grad:
            w_normal.retain_grad()
            w_reduce.retain_grad()
            self._last_weights = (w_normal, w_reduce)
        live_n, live_r = self.live_lists()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights, live = (w_reduce, live_r) if cell.reduction else (w_normal, live_n)
            s0, s1 = s1, cell(s0, s1, weights, live)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))

    def live_lists(self) -> tuple[list[list[int]], list[list[int]]]:
        return ([row.nonzero().flatten().tolist() for row in self.live_normal],
                [row.nonzero().flatten().tolist() for row in self.live_reduce])

    # --- the indicator and pruning -----------------------------------------------------------------------

    def update_importance(self, decay: float) -> None:
        """Fold the last architecture backward into the indicator (call while the weights' gradients exist)."""
        if self._last_weights is None or any(w.grad is None for w in self._last_weights):
            raise RuntimeError("update_importance needs a forward and a backward of the architecture loss first")
        weights = self._last_weights
        average_gradients(weights, device=weights[0].device)
        with torch.no_grad():
            self.indicator_weight.mul_(decay).add_(1.0 - decay)
            for kind, w in zip(("normal", "reduce"), weights):
                op_i, edge_i = removal_importance(w.detach().double(), w.grad.double())
                getattr(self, f"importance_{kind}").mul_(decay).add_((1.0 - decay) * op_i)
                getattr(self, f"edge_importance_{kind}").mul_(decay).add_((1.0 - decay) * edge_i)
        self._last_weights = None

    def importance(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Bias-corrected indicator per cell type: (op importance (edges, ops), edge importance (edges,))."""
        scale = float(self.indicator_weight) or 1.0
        return {kind: (getattr(self, f"importance_{kind}") / scale, getattr(self, f"edge_importance_{kind}") / scale)
                for kind in ("normal", "reduce")}

    def prune_to(self, live_ops: int) -> int:
        """Keep the ``live_ops`` most important live ops per edge (always one non-``none``); returns ops removed."""
        removed = 0
        none = self.ops.index("none") if "none" in self.ops else -1
        for kind, (op_imp, _edge) in self.importance().items():
            live = getattr(self, f"live_{kind}")
            for e in range(live.shape[0]):
                alive = live[e].nonzero().flatten().tolist()
                if len(alive) <= live_ops:
                    continue
                ranked = sorted(alive, key=lambda o: (-float(op_imp[e, o]), o))
                keep = ranked[:live_ops]
                if all(o == none for o in keep):
                    keep[-1] = next(o for o in ranked if o != none)
                live[e] = False
                live[e, keep] = True
                removed += len(alive) - len(keep)
        return removed

    # --- derivation --------------------------------------------------------------------------------------

    def genotype(self, selection: str = "eoinas") -> Genotype:
        """The discrete cells: by the indicator (``"eoinas"``) or by α as DARTS (``"darts"``)."""
        if selection not in SELECTIONS:
            raise InputError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        cells = []
        with torch.no_grad():
            weights = dict(zip(("normal", "reduce"), self.arch_weights()))
            importance = self.importance()
            for kind in ("normal", "reduce"):
                live = getattr(self, f"live_{kind}")
                if selection == "darts":
                    op_scores = weights[kind]
                    cells.append(derive_genotype(op_scores, None, live, self.ops, self.nodes))
                else:
                    op_imp, edge_imp = importance[kind]
                    cells.append(derive_genotype(op_imp, edge_imp, live, self.ops, self.nodes))
        concat = tuple(range(2, 2 + self.nodes))
        return Genotype(normal=cells[0], normal_concat=concat, reduce=cells[1], reduce_concat=concat)

    def arch_summary(self) -> dict[str, Any]:
        """α weights, live ops and the indicator per cell type and edge, as JSON-able lists."""
        weights = dict(zip(("normal", "reduce"), self.arch_weights()))
        importance = self.importance()
        return {kind: {"edges": [list(e) for e in edge_sources(self.nodes)], "ops": list(self.ops),
                       "weights": _rounded(weights[kind]), "live": getattr(self, f"live_{kind}").tolist(),
                       "op_importance": _rounded(importance[kind][0]),
                       "edge_importance": _rounded(importance[kind][1])}
                for kind in ("normal", "reduce")}


def _rounded(t: Tensor) -> Any:
    return [[round(float(v), 6) for v in row] for row in t.tolist()] if t.dim() == 2 else \
        [round(float(v), 6) for v in t.tolist()]


def removal_importance(w: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """First-order loss rise of removing each op (survivors renormalised) and of removing each edge.

    ``w`` and ``grad`` are (edges, ops): mixing weights and ∂L/∂w. Returns ((edges, ops), (edges,)).
    """
    d_bar = (w * grad).sum(dim=1, keepdim=True)
    op_importance = w * (d_bar - grad) / (1.0 - w).clamp_min(1e-6)
    return torch.where(w > 0, op_importance, torch.zeros_like(op_importance)), -d_bar.squeeze(1)


def derive_genotype(op_scores: Tensor, edge_scores: Tensor | None, live: Tensor, ops: Sequence[str],
                    nodes: int) -> tuple[tuple[str, int], ...]:
    """One cell's edges: per node the two inputs of highest edge score, each with its best live non-``none`` op.

    ``edge_scores=None`` is DARTS' rule: an edge's score is its best non-``none`` op score. Ties go to the
    earlier op and input. Edges are listed node by node, sources in increasing order.
    """
    index = edge_index(nodes)
    best: dict[int, tuple[float, int]] = {}
    for e in range(op_scores.shape[0]):
        candidates = [o for o in range(len(ops)) if ops[o] != "none" and bool(live[e, o])]
        if not candidates:
            raise InputError(f"edge {e} has no live operation other than 'none'")
        o = max(candidates, key=lambda c: (float(op_scores[e, c]), -c))
        best[e] = (float(op_scores[e, o]), o)
    edges: list[tuple[str, int]] = []
    for node in range(nodes):
        sources = range(2 + node)
        score = {s: best[index[(node, s)]][0] if edge_scores is None else float(edge_scores[index[(node, s)]])
                 for s in sources}
        chosen = sorted(sorted(sources, key=lambda s: (-score[s], s))[:2])
        edges += [(ops[best[index[(node, s)]][1]], s) for s in chosen]
    return tuple(edges)


class CellCostModel:
    """Expected MACs or latency of the network a DARTS supernet would derive, differentiable in its weights.

    Costs are those of the cell space's networks as the latency tables key them (:class:`zoo.spaces.
    DartsSpace`: C=16, 8 cells, 32×32, whatever proxy the supernet trains), from the one walker: an edge's
    cost depends on its cell, its op and whether it reads a cell input (stride 2 in reduction cells) or a
    node. The expectation takes each edge's op with its weight renormalised over the non-``none`` ops (a
    derived cell has no ``none``) and each of a node's ``2 + j`` inputs with probability ``2/(2 + j)`` (a node
    keeps two), unless explicit edge weights are given. ``metric="latency"`` sums the table's entries and
    applies its calibrated overhead (linear in the entries, so the expectation stays exact in form).
    """

    def __init__(self, metric: str = "macs", device: str | None = None, tables: Any = None,
                 space: Any = None) -> None:
        from zoo.spaces import DartsSpace

        if metric not in ("macs", "latency"):
            raise InputError(f"metric must be 'macs' or 'latency', got {metric!r}")
        if metric == "latency" and device is None:
            raise InputError("a latency cost model needs a device with a 'darts' latency table")
        self.metric, self.device = metric, device
        self.space = space if space is not None else DartsSpace()
        self.ops = tuple(CELL_OPS)
        self._value, self.overhead, self.statistic = self._value_fn(tables)
        fixed, per_edge, n_fixed = self._walk()
        self.fixed, self._per_cell = fixed, per_edge
        self.n_ops = n_fixed + 2 * self.space.nodes * self.space.layers
        edges = len(edge_sources(self.space.nodes))
        # (type, edge, op) -> cost summed over the cells of that type.
        self.table = {kind: torch.zeros(edges, len(self.ops), dtype=torch.float64) for kind in ("normal", "reduce")}
        reductions = (self.space.layers // 3, 2 * self.space.layers // 3)
        for (cell, e, o), value in per_edge.items():
            kind = "reduce" if cell in reductions else "normal"
            self.table[kind][e, o] += value

    def _value_fn(self, tables: Any) -> tuple[Any, Any, str]:
        if self.metric == "macs":
            return (lambda op: float(op.macs)), None, "macs"
        from latency_tables.predict import Predictor

        predictor = Predictor.for_device(self.device, tables)
        table = next((t for t in predictor.tables if t.space == self.space.name), None)
        if table is None:
            raise InputError(f"device {self.device!r} has no latency table for space {self.space.name!r} "
                             f"(tables: {', '.join(t.space for t in predictor.tables)})")

        def value(op: Any) -> float:
            if op.key not in table.entries:
                raise InputError(f"latency table {self.space.name!r} of {self.device!r} lacks op {op.key}")
            return float(table.entries[op.key].value(predictor.statistic))

        return value, table.overhead, predictor.statistic

    def _walk(self) -> tuple[float, dict[tuple[int, int, int], float], int]:
        import zoo

        index = edge_index(self.space.nodes)
        per_edge: dict[tuple[int, int, int], float] = {}
        fixed, n_fixed, first = 0.0, 0, True
        for o, op in enumerate(self.ops):
            if op == "none":
                continue
            # Node j reads states 0 and j + 1: every edge kind (cell input in every cell, node input) occurs.
            edges = tuple((op, src) for node in range(self.space.nodes) for src in (0, node + 1))
            genotype = Genotype(normal=edges, normal_concat=tuple(range(2, 2 + self.space.nodes)), reduce=edges,
                                reduce_concat=tuple(range(2, 2 + self.space.nodes)))
            spec = cifar_cellnet_spec(genotype, init_chs=self.space.init_chs, layers=self.space.layers)
            for walked in zoo.iter_ops(spec, self.space.resolution):
                parts = walked.name.split(".")
                if len(parts) == 4 and parts[2] == "_ops":
                    cell, k = int(parts[1]), int(parts[3])
                    node, src = k // 2, edges[k][1]
                    value = self._value(walked)
                    is_input = src < 2
                    for s in range(2 + node):  # the same cost for every edge of this kind into this node
                        if (s < 2) == is_input:
                            per_edge[(cell, index[(node, s)], o)] = value
                elif first:  # stem, preprocessing and classifier: the same in every genotype
                    fixed += self._value(walked)
                    n_fixed += 1
            first = False
        return fixed, per_edge, n_fixed

    def expected(self, w_normal: Tensor, w_reduce: Tensor, edge_normal: Tensor | None = None,
                 edge_reduce: Tensor | None = None) -> Tensor:
        """Expected cost (MACs, or ms) given mixing weights (edges, ops) and optional edge weights (edges,)."""
        real = torch.tensor([op != "none" for op in self.ops], device=w_normal.device)
        total = torch.zeros((), dtype=torch.float64, device=w_normal.device)
        default = torch.tensor([2.0 / (2 + node) for node, _ in edge_sources(self.space.nodes)], dtype=torch.float64,
                               device=w_normal.device)
        for kind, w, edge in (("normal", w_normal, edge_normal), ("reduce", w_reduce, edge_reduce)):
            w = w.double() * real
            w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
            per_edge = (w * self.table[kind].to(w.device)).sum(dim=1)
            total = total + (per_edge * (default if edge is None else edge.double())).sum()
        ops = self.fixed + total
        if self.overhead is None:
            return ops
        return self.overhead.network_ms(self.n_ops, ops)

    def exact(self, genotype: Genotype) -> float:
        """The cost of ``genotype``'s network in the space (equal to ``zoo.count`` / the latency predictor)."""
        index = edge_index(self.space.nodes)
        total = self.fixed
        reductions = (self.space.layers // 3, 2 * self.space.layers // 3)
        for cell in range(self.space.layers):
            kind = "reduce" if cell in reductions else "normal"
            edges = genotype.reduce if kind == "reduce" else genotype.normal
            for k, (op, src) in enumerate(edges):
                e, o = index[(k // 2, src)], self.ops.index(op)
                total += self._per_cell[(cell, e, o)]
        return total if self.overhead is None else self.overhead.network_ms(self.n_ops, total)


def iter_live_counts(supernet: DartsSupernet) -> Iterator[int]:
    """Live ops of every edge of both cell types (for reports and tests)."""
    for live in (supernet.live_normal, supernet.live_reduce):
        yield from (int(n) for n in live.sum(dim=1).tolist())


def ema_decay(half_life_epochs: float, steps_per_epoch: int) -> float:
    """Per-step decay of a moving average whose half-life is ``half_life_epochs`` epochs of steps."""
    return math.pow(0.5, 1.0 / max(1.0, half_life_epochs * steps_per_epoch))
