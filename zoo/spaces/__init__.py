"""Search spaces as data: what an architecture of each space is, how to sample and mutate it, and its op keys.

One frozen dataclass per space, its hyper-parameters as fields. An architecture (:data:`Arch`) is a flat,
hashable, JSON-serialisable tuple of ints and strs; ``to_spec`` turns it into a zoo spec and the
(C, H, W) input it runs at, so the one cost walker (:func:`zoo.iter_ops`) and the latency tables read it
like any zoo model. Randomness comes only from the ``random.Random`` passed in. ``covering_specs`` is a
small set of architectures whose walked ops contain every op key any architecture of the space can
produce: each space states which choices each op key depends on (its *scopes*, e.g. a width-searched
layer depends on its own width and its input's), and :func:`covering_rows` builds a covering array in
which every combination of every scope occurs. :func:`op_keys` is the union of those keys (of both deploy forms
where a network has HGC blocks), so a latency table measured once over it answers every architecture of the space. This package owns the space
registry (:func:`get_space`, :func:`list_spaces`).
"""

from __future__ import annotations

import dataclasses

from common.errors import InputError

from zoo.costs import OpCost, iter_ops

from .base import Arch, GeneSpace, InputSize, SearchSpace, covering_rows, sample_distinct
from .blockwise import MCTNASSpace, MetaKernelSpace, NBMacroSpace, OFAMobileNetV3Space
from .darts import DartsSpace
from .widths import (EfficientNetB0WidthSpace, HGCNetWidthSpace, MobileNetV2WidthSpace, ResNet50WidthSpace,
                     mobile_width_layout, resnet50_width_layout, scaled_width)

_SPACES: tuple[type, ...] = (NBMacroSpace, MCTNASSpace, MetaKernelSpace, OFAMobileNetV3Space, DartsSpace,
                             HGCNetWidthSpace, MobileNetV2WidthSpace, EfficientNetB0WidthSpace, ResNet50WidthSpace)


def list_spaces() -> list[str]:
    """Names of every search space, sorted."""
    return sorted(cls.name for cls in _SPACES)


def get_space(name: str) -> SearchSpace:
    """The space called ``name`` with its default hyper-parameters; ``ValueError`` lists the known names."""
    for cls in _SPACES:
        if cls.name == name:
            return cls()
    raise InputError(f"unknown search space {name!r}; known: {', '.join(list_spaces())}")


def layout_variants(space: SearchSpace) -> list[SearchSpace]:
    """``space`` in each input layout it offers, itself first (a width space's ImageNet and BCNet's CIFAR layout).

    The search command line accepts every layout of a space (``--model mobilenetv2_cifar`` searches
    ``mobilenetv2_width`` at 32×32), so the space's latency table must answer each: :func:`op_keys` covers them all,
    and ``mzoo lut build`` calibrates on networks of each.
    """
    layouts = space.layouts() if hasattr(space, "layouts") else ()
    own = getattr(space, "layout", None)
    return [space, *(dataclasses.replace(space, layout=layout) for layout in layouts if layout != own)]


def op_keys(space: SearchSpace) -> dict[str, OpCost]:
    """Every op key ``space`` can produce (the union over its covering specs, in every layout the space offers:
    :func:`layout_variants`), with the first op seen per key.

    A network with HGC blocks can be deployed with any of them fused into a dense inverted residual
    (:mod:`zoo.deploy`), so its keys are those of both forms: each covering spec is walked as it is and with every
    HGC block fused. A block's key depends on its own form and shapes only, so the two walks cover every per-block
    plan, and a table over these keys prices the ``auto`` plan.
    """
    from zoo.deploy import deploy_spec  # here: zoo.deploy builds modules (torch), the spaces are data

    keys: dict[str, OpCost] = {}
    for spec, size in (c for variant in layout_variants(space) for c in variant.covering_specs()):
        fused = deploy_spec(spec, "all")
        for form in (spec,) if fused is spec else (spec, fused):
            for op in iter_ops(form, size):
                keys.setdefault(op.key, op)
    return keys


__all__ = ["sample_distinct", "Arch", "DartsSpace", "EfficientNetB0WidthSpace", "GeneSpace", "HGCNetWidthSpace", "InputSize",
           "MCTNASSpace", "MetaKernelSpace", "MobileNetV2WidthSpace", "NBMacroSpace", "OFAMobileNetV3Space",
           "ResNet50WidthSpace", "SearchSpace", "covering_rows", "get_space", "list_spaces", "mobile_width_layout",
           "layout_variants", "op_keys", "resnet50_width_layout", "scaled_width"]
