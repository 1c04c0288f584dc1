"""The cost side of DARTS cells: each cell op's primitive records, the cells' wiring plan and edges.

Shared by the cell networks (:mod:`zoo.cells`, which builds modules from the same plan) and the one cost walker
(:mod:`zoo.costs`), without torch, so the walker never imports a model module (and the model contract, which asks
the walker for its output size, never imports itself back).
"""

from __future__ import annotations

from typing import Any

from common.errors import InputError

from .prims import Prim, conv_bn
from .spec import CellNetSpec, Genotype


def factorized_reduce_prims(c_in: int, c_out: int, out_hw: tuple[int, int]) -> list[Prim]:
    return [Prim("conv", c_in, c_out // 2, 1, 1, out_hw), Prim("conv", c_in, c_out // 2, 1, 1, out_hw),
            Prim("bn", c_out, c_out)]


def cell_op_prims(name: str, chs: int, stride: int, out_hw: tuple[int, int]) -> list[Prim]:
    """Cost records of :func:`create_cell_op` (pools, identity and zero cost nothing)."""
    if name in ("none", "max_pool_3x3", "avg_pool_3x3") or (name == "skip_connect" and stride == 1):
        return []
    if name == "skip_connect":
        return factorized_reduce_prims(chs, chs, out_hw)
    k = int(name[-1])
    if name.startswith("sep_conv_"):
        return [Prim("conv", chs, chs, k, chs, out_hw), *conv_bn(chs, chs, 1, out_hw),
                Prim("conv", chs, chs, k, chs, out_hw), *conv_bn(chs, chs, 1, out_hw)]
    if name.startswith("dil_conv_"):
        return [Prim("conv", chs, chs, k, chs, out_hw), *conv_bn(chs, chs, 1, out_hw)]
    raise InputError(f"unknown cell operation {name!r}")


def cell_edges(genotype: Genotype, reduction: bool) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    """(edges, concat) of the normal or the reduction cell."""
    return (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)


def cell_plan(spec: CellNetSpec) -> list[dict[str, Any]]:
    """Per cell: input widths, op width, reduction flags (DARTS' bookkeeping, shared by model and walker)."""
    if spec.stem == "cifar":
        c_pp = c_p = spec.stem_multiplier * spec.init_chs
        reduction_prev = False
    else:
        c_pp = c_p = spec.init_chs
        reduction_prev = True
    chs = spec.init_chs
    plan = []
    for i in range(spec.layers):
        reduction = i in spec.reduction_layers
        chs = chs * 2 if reduction else chs
        edges, concat = cell_edges(spec.genotype, reduction)
        plan.append({"c_prev_prev": c_pp, "c_prev": c_p, "chs": chs, "reduction": reduction,
                     "reduction_prev": reduction_prev, "edges": edges, "out_chs": len(concat) * chs})
        c_pp, c_p, reduction_prev = c_p, len(concat) * chs, reduction
    return plan
