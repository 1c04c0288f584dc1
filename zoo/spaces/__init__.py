"""Search spaces as data: what an architecture of each space is, how to sample and mutate it, and its op keys.

One frozen dataclass per space, its hyper-parameters as fields. An architecture (:data:`Arch`) is a flat,
hashable, JSON-serialisable tuple of ints and strs; ``to_spec`` turns it into a zoo spec and the
(C, H, W) input it runs at, so the one cost walker (:func:`zoo.iter_ops`) and the latency tables read it
like any zoo model. Randomness comes only from the ``random.Random`` passed in. ``covering_specs`` is a
small set of architectures whose walked ops contain every op key any architecture of the space can
produce: each space states which choices each op key depends on (its *scopes*, e.g. a width-searched
layer depends on its own width and its input's), and :func:`covering_rows` builds a covering array in
which every combination of every scope occurs. :func:`op_keys` is the union of those keys, so a latency
table measured once over it answers every architecture of the space. This package owns the space
registry (:func:`get_space`, :func:`list_spaces`).
"""

from __future__ import annotations

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


def op_keys(space: SearchSpace) -> dict[str, OpCost]:
    """Every op key ``space`` can produce (the union over its covering specs), with the first op seen per key."""
    keys: dict[str, OpCost] = {}
    for spec, size in space.covering_specs():
        for op in iter_ops(spec, size):
            keys.setdefault(op.key, op)
    return keys


__all__ = ["sample_distinct", "Arch", "DartsSpace", "EfficientNetB0WidthSpace", "GeneSpace", "HGCNetWidthSpace", "InputSize",
           "MCTNASSpace", "MetaKernelSpace", "MobileNetV2WidthSpace", "NBMacroSpace", "OFAMobileNetV3Space",
           "ResNet50WidthSpace", "SearchSpace", "covering_rows", "get_space", "list_spaces", "mobile_width_layout",
           "op_keys", "resnet50_width_layout", "scaled_width"]
