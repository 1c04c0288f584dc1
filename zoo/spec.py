"""Architecture specs: the one hand-off format between search, zoo, export and latency tables.

An :class:`ArchSpec` is a frozen, JSON-serialisable description of a whole network: a stem, a
sequence of stages (each a tuple of :class:`BlockSpec`), an optional 1x1 head conv and a linear
classifier. Stages are also the network's feature levels (``feature_info``). A model is built from
a spec by :func:`zoo.specnet.build_from_spec` and rebuilds exactly from it; the cost walker in
:mod:`zoo.costs` reads the same spec. ``schema_version`` is bumped whenever a field changes
meaning, and :func:`ArchSpec.from_dict` refuses versions it does not know.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2
# Versions this code reads: 1 lacks BlockSpec.se / mid_chs and ArchSpec.feature_stages (read as defaults).
READABLE_SCHEMA_VERSIONS = (1, 2)

ACTIVATIONS = ("relu", "relu6", "hswish", "swish", "identity")
GATES = ("sigmoid", "hsigmoid")


@dataclass(frozen=True)
class SESpec:
    """Squeeze-and-excitation inside a block: pool → 1x1 reduce (+bias) → act → 1x1 expand (+bias) → gate.

    The reduced width is ``make_divisible(ratio × base, divisor)`` when ``divisor > 1``, else
    ``int(ratio × base)``, where base is the block's hidden width (``base="mid"``, MobileNetV3 and
    MCT-NAS) or its input width (``base="in"``, EfficientNet).

    Attributes:
        ratio: reduction ratio (e.g. 0.25).
        base: ``"mid"`` or ``"in"``.
        divisor: round the reduced width to a multiple of this (1: truncate).
        act: activation between the two convs; ``None`` uses the block's activation.
        gate: ``"sigmoid"`` or ``"hsigmoid"``.
    """

    ratio: float = 0.25
    base: str = "mid"
    divisor: int = 1
    act: str | None = None
    gate: str = "sigmoid"

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"SESpec: ratio must be in (0, 1], got {self.ratio}")
        if self.base not in ("mid", "in"):
            raise ValueError(f"SESpec: base must be 'mid' or 'in', got {self.base!r}")
        if self.divisor < 1:
            raise ValueError(f"SESpec: divisor must be >= 1, got {self.divisor}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"SESpec: unknown activation {self.act!r}; known: {', '.join(ACTIVATIONS)}")
        if self.gate not in GATES:
            raise ValueError(f"SESpec: unknown gate {self.gate!r}; known: {', '.join(GATES)}")

    def reduced_chs(self, in_chs: int, mid_chs: int) -> int:
        base = mid_chs if self.base == "mid" else in_chs
        if self.divisor > 1:
            return make_divisible(self.ratio * base, self.divisor)
        return max(1, int(self.ratio * base))


@dataclass(frozen=True)
class BlockSpec:
    """One block of a network.

    Attributes:
        kind: block type; one of the kinds registered in :mod:`zoo.blocks`
            (e.g. ``"conv"``, ``"hgc_ir"``).
        out_chs: output channels.
        stride: spatial stride of the block.
        kernel: spatial kernel size of the block's main (depthwise or full) conv.
        expand: expansion ratio of inverted-residual style blocks (hidden = in_chs * expand).
        groups: group count of grouped / hierarchical-group pointwise convs.
        act: activation name (see ``ACTIVATIONS``).
        residual: add an identity shortcut when shapes allow (stride 1 and in_chs == out_chs).
        se: squeeze-and-excitation after the depthwise conv, or ``None``.
        mid_chs: explicit hidden width of inverted-residual blocks (width-searched networks);
            overrides ``expand`` when set.
    """

    kind: str
    out_chs: int
    stride: int = 1
    kernel: int = 3
    expand: float = 1.0
    groups: int = 1
    act: str = "relu"
    residual: bool = True
    se: SESpec | None = None
    mid_chs: int | None = None

    def __post_init__(self) -> None:
        if self.mid_chs is not None and self.mid_chs < 1:
            raise ValueError(f"BlockSpec({self.kind}): mid_chs must be >= 1, got {self.mid_chs}")
        if self.out_chs < 1:
            raise ValueError(f"BlockSpec({self.kind}): out_chs must be >= 1, got {self.out_chs}")
        if self.stride not in (1, 2):
            raise ValueError(f"BlockSpec({self.kind}): stride must be 1 or 2, got {self.stride}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"BlockSpec({self.kind}): kernel must be odd and >= 1, got {self.kernel}")
        if self.expand <= 0:
            raise ValueError(f"BlockSpec({self.kind}): expand must be > 0, got {self.expand}")
        if self.groups < 1:
            raise ValueError(f"BlockSpec({self.kind}): groups must be >= 1, got {self.groups}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"BlockSpec({self.kind}): unknown activation {self.act!r}; "
                             f"known: {', '.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class ArchSpec:
    """A whole network as data.

    Attributes:
        family: model family name (e.g. ``"hgcnet"``); informational.
        stem: the first block (applied to the image).
        stages: feature stages; the output of each stage is one ``feature_info`` level.
        head_chs: channels of the 1x1 conv + BN + act before pooling; ``None`` for no head conv.
        head_act: activation of the head conv.
        num_classes: classifier outputs (0 means no classifier).
        in_chans: image channels.
        drop_rate: dropout before the classifier.
        feature_stages: which stages are ``feature_info`` levels (default: all).
        schema_version: format version of this spec.
    """

    family: str
    stem: BlockSpec
    stages: tuple[tuple[BlockSpec, ...], ...]
    head_chs: int | None = None
    head_act: str = "relu"
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.0
    feature_stages: tuple[int, ...] | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.stages or any(len(s) == 0 for s in self.stages):
            raise ValueError(f"ArchSpec({self.family}): every stage needs at least one block")
        if self.num_classes < 0 or self.in_chans < 1:
            raise ValueError(f"ArchSpec({self.family}): bad num_classes={self.num_classes} "
                             f"or in_chans={self.in_chans}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"ArchSpec({self.family}): drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.feature_stages is not None and (
                not self.feature_stages or any(not 0 <= i < len(self.stages) for i in self.feature_stages)):
            raise ValueError(f"ArchSpec({self.family}): feature_stages {self.feature_stages} must index the "
                             f"{len(self.stages)} stages")

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """All stage blocks in order (stem and head excluded)."""
        return tuple(b for stage in self.stages for b in stage)

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.head_chs if self.head_chs is not None else self.stages[-1][-1].out_chs

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with some top-level fields changed (e.g. ``num_classes``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "family": self.family,
            "stem": dataclasses.asdict(self.stem),
            "stages": [[dataclasses.asdict(b) for b in stage] for stage in self.stages],
            "head_chs": self.head_chs,
            "head_act": self.head_act,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "drop_rate": self.drop_rate,
            "feature_stages": list(self.feature_stages) if self.feature_stages is not None else None,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(f"ArchSpec schema_version {version!r} is not supported "
                             f"(this version reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"ArchSpec: unknown fields {sorted(unknown)}")
        try:
            fields = dict(data) | {"schema_version": SCHEMA_VERSION}
            fields["stem"] = _block_from_dict(data["stem"])
            fields["stages"] = tuple(tuple(_block_from_dict(b) for b in stage) for stage in data["stages"])
            if fields.get("feature_stages") is not None:
                fields["feature_stages"] = tuple(fields["feature_stages"])
        except KeyError as err:
            raise ValueError(f"ArchSpec: missing field {err}") from None
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"ArchSpec: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError("ArchSpec: JSON must be an object")
        return cls.from_dict(data)


def _block_from_dict(data: dict[str, Any]) -> BlockSpec:
    known = {f.name for f in dataclasses.fields(BlockSpec)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"BlockSpec: unknown fields {sorted(unknown)}")
    fields = dict(data)
    if fields.get("se") is not None:
        se_known = {f.name for f in dataclasses.fields(SESpec)}
        if not isinstance(fields["se"], dict) or set(fields["se"]) - se_known:
            raise ValueError(f"SESpec: expected an object with fields {sorted(se_known)}, got {fields['se']!r}")
        fields["se"] = SESpec(**fields["se"])
    return BlockSpec(**fields)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10 % (MobileNetV2 rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


__all__ = ["SCHEMA_VERSION", "ACTIVATIONS", "GATES", "SESpec", "BlockSpec", "ArchSpec", "make_divisible"]
