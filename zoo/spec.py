"""Architecture specs: the one hand-off format between search, zoo, export and latency tables.

Two frozen, JSON-serialisable spec types describe whole networks. An :class:`ArchSpec` is a chain
network: a stem, a sequence of stages (each a tuple of :class:`BlockSpec`), an optional 1x1 head conv,
an optional MobileNetV3-style 1x1 conv after global pooling (``pre_logits_chs``) and a linear classifier; stages are also its feature levels (``feature_info``), and ``layout`` picks
the state-dict names (timm's MobileNet or ResNet ones). A :class:`CellNetSpec` is a DARTS-style cell
network driven by a :class:`Genotype`. :func:`zoo.build_model` builds either and a model rebuilds
exactly from its spec; the cost walker in :mod:`zoo.costs` reads the same specs. ``schema_version``
is bumped whenever a field changes meaning, and the readers refuse versions they do not know;
:func:`spec_from_json` reads a spec file of either type. The TensorFlow numerics fields (``BlockSpec.padding`` /
``bn_eps``, ``ArchSpec.head_bn_eps``) came without a bump: they are written only where they differ from
PyTorch's defaults, so every spec that does not use them serialises exactly as before, and a reader that
predates them refuses a spec that uses them by naming the unknown field instead of building it wrong.

Every spec is checked against bounds before anything is built, so a hostile or mistyped file costs a one-line
``InputError`` naming the field rather than gigabytes (they sit far above every registered model: its widest layer
has 2,560 channels, its largest kernel 7, expansion 6, 1,000 classes, 30 blocks, 26M parameters):

* every width (``out_chs``, ``mid_chs``, ``inner_chs``, ``head_chs``, ``pre_logits_chs``, an inverted residual's
  hidden ``in_chs × expand``, ``groups``, an SE ``divisor``) is an int in [1, :data:`MAX_CHANNELS`] (8,192);
* ``kernel`` is an odd int in [1, :data:`MAX_KERNEL`] (15); ``expand`` a finite number in (0, :data:`MAX_EXPAND`]
  (16); ``stride`` 1 or 2;
* ``num_classes`` is in [0, :data:`MAX_CLASSES`] (100,000), ``in_chans`` in [1, :data:`MAX_IN_CHANS`] (64), an
  ``ArchSpec`` has at most :data:`MAX_BLOCKS` (1,000) blocks;
* a ``CellNetSpec`` has ``init_chs`` in [2, :data:`MAX_CELL_INIT_CHS`] (512), ``layers`` in [3,
  :data:`MAX_CELL_LAYERS`] (100), ``stem_multiplier`` in [1, :data:`MAX_STEM_MULTIPLIER`] (16) and at most
  :data:`MAX_CELL_NODES` (16) nodes per cell;
* a spec is built (:func:`zoo.build_model`, every model of the zoo) only with at most :data:`MAX_PARAMS` (200M)
  parameters by the cost walker (:func:`zoo.costs.check_size`, before any layer exists), since fields within
  their bounds can still multiply into a network that does not fit in memory.

The bounds are constants of this schema: changing one is a change of this module, not a setting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from common.errors import InputError

SCHEMA_VERSION = 4
# Versions this code reads: 1 lacks BlockSpec.se / mid_chs and ArchSpec.feature_stages; 2 lacks
# BlockSpec.inner_chs and ArchSpec.layout / stem_pool; 3 lacks ArchSpec.pre_logits_chs / pre_logits_act /
# pre_logits_bias (all read as their defaults). CellNetSpec did not change between 3 and 4.
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)
CELLNET_READABLE_SCHEMA_VERSIONS = (3, 4)
LAYOUTS = ("mobile", "resnet")

ACTIVATIONS = ("relu", "relu6", "hswish", "swish", "identity")
GATES = ("sigmoid", "hsigmoid")
# "symmetric": PyTorch's k // 2 on every side. "same": TensorFlow's SAME, out = ceil(in / stride) with the odd
# pixel of padding at the bottom and right; it differs from "symmetric" only for strided convs on even sizes.
PADDINGS = ("symmetric", "same")
DEFAULT_BN_EPS = 1e-5  # PyTorch's BatchNorm eps; TensorFlow's (and weights ported from it) is 1e-3
# Fields written to JSON only when they differ from these defaults (see the module docstring).
_OPTIONAL_BLOCK_FIELDS = {"padding": "symmetric", "bn_eps": DEFAULT_BN_EPS}
_OPTIONAL_ARCH_FIELDS = {"head_bn_eps": DEFAULT_BN_EPS}


# Bounds of the schema (see the module docstring).
MAX_CHANNELS = 8192
MAX_KERNEL = 15
MAX_EXPAND = 16.0
MAX_CLASSES = 100_000
MAX_IN_CHANS = 64
MAX_BLOCKS = 1000
MAX_CELL_INIT_CHS = 512
MAX_CELL_LAYERS = 100
MAX_CELL_NODES = 16
MAX_STEM_MULTIPLIER = 16
MAX_PARAMS = 200_000_000


def _check_int(owner: str, field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise InputError(f"{owner}: {field} must be an int in [{low}, {high:,}], got {value!r}")


def _check_real(owner: str, field: str, value: object, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InputError(f"{owner}: {field} must be a finite number in {interval}, got {value!r}")


def _check_eps(owner: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InputError(f"{owner}: {field} must be a float in (0, 1), got {value!r}")


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
        _check_real("SESpec", "ratio", self.ratio, 0.0, 1.0, low_open=True)
        if self.base not in ("mid", "in"):
            raise InputError(f"SESpec: base must be 'mid' or 'in', got {self.base!r}")
        _check_int("SESpec", "divisor", self.divisor, 1, MAX_CHANNELS)
        if self.act is not None and self.act not in ACTIVATIONS:
            raise InputError(f"SESpec: unknown activation {self.act!r}; known: {', '.join(ACTIVATIONS)}")
        if self.gate not in GATES:
            raise InputError(f"SESpec: unknown gate {self.gate!r}; known: {', '.join(GATES)}")

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
        inner_chs: explicit inner widths of blocks with several hidden convs, in execution order
            (``"bottleneck"``: the outputs of its 1x1 and 3x3 convs).
        padding: how the block's convs pad (see ``PADDINGS``): ``"symmetric"`` (PyTorch) or ``"same"``
            (TensorFlow's SAME, which networks ported from TensorFlow need to reproduce its outputs).
        bn_eps: epsilon of the block's BatchNorms (TensorFlow's 1e-3 for ported weights).
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
    inner_chs: tuple[int, ...] | None = None
    padding: str = "symmetric"
    bn_eps: float = DEFAULT_BN_EPS

    def __post_init__(self) -> None:
        owner = f"BlockSpec({self.kind})"
        if not isinstance(self.kind, str):
            raise InputError(f"{owner}: kind must be a string, got {self.kind!r}")
        if not isinstance(self.residual, bool):
            raise InputError(f"{owner}: residual must be true or false, got {self.residual!r}")
        if self.padding not in PADDINGS:
            raise InputError(f"{owner}: unknown padding {self.padding!r}; known: {', '.join(PADDINGS)}")
        _check_eps(owner, "bn_eps", self.bn_eps)
        if self.inner_chs is not None and (not isinstance(self.inner_chs, (tuple, list)) or not self.inner_chs or any(
                isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 1 <= c <= MAX_CHANNELS
                for c in self.inner_chs)):
            raise InputError(f"{owner}: inner_chs must be ints in [1, {MAX_CHANNELS:,}], got {self.inner_chs}")
        if self.mid_chs is not None:
            _check_int(owner, "mid_chs", self.mid_chs, 1, MAX_CHANNELS)
        _check_int(owner, "out_chs", self.out_chs, 1, MAX_CHANNELS)
        _check_int(owner, "stride", self.stride, 1, 2)
        _check_int(owner, "kernel", self.kernel, 1, MAX_KERNEL)
        if self.kernel % 2 == 0:
            raise InputError(f"{owner}: kernel must be odd, got {self.kernel}")
        _check_real(owner, "expand", self.expand, 0.0, MAX_EXPAND, low_open=True)
        _check_int(owner, "groups", self.groups, 1, MAX_CHANNELS)
        if self.act not in ACTIVATIONS:
            raise InputError(f"BlockSpec({self.kind}): unknown activation {self.act!r}; "
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
        pre_logits_chs: channels of a 1x1 conv + act (no BN) applied *after* global pooling, before
            dropout and the classifier (MobileNetV3's ``conv_head``, OFA's feature-mix layer); ``None``
            for none. Such specs put their pre-pool 1x1 conv in the last stage, as timm's MobileNetV3
            does, so ``head_chs`` must then be ``None`` (both would be named ``conv_head``).
        pre_logits_act: activation of the pre-logits conv.
        pre_logits_bias: whether the pre-logits conv has a bias (timm's MobileNetV3: yes; OFA: no).
        num_classes: classifier outputs (0 means no classifier).
        in_chans: image channels.
        drop_rate: dropout before the classifier.
        feature_stages: which stages are ``feature_info`` levels (default: all).
        layout: module layout, i.e. state-dict names: ``"mobile"`` (timm's EfficientNet/MobileNet
            names) or ``"resnet"`` (timm's ResNet names: ``conv1``, ``layer1``…``layer4``, ``fc``;
            four stages, no head conv).
        stem_pool: ``"max"`` for a 3x3 stride-2 max pool after the stem (ResNet), ``""`` for none.
        head_bn_eps: epsilon of the head conv's BatchNorm (blocks and stem carry their own ``bn_eps``).
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
    layout: str = "mobile"
    stem_pool: str = ""
    pre_logits_chs: int | None = None
    pre_logits_act: str = "hswish"
    pre_logits_bias: bool = False
    head_bn_eps: float = DEFAULT_BN_EPS
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_eps(f"ArchSpec({self.family})", "head_bn_eps", self.head_bn_eps)
        if self.layout not in LAYOUTS:
            raise InputError(f"ArchSpec({self.family}): unknown layout {self.layout!r}; known: {', '.join(LAYOUTS)}")
        if self.layout == "resnet" and (len(self.stages) != 4 or self.head_chs is not None):
            raise InputError(f"ArchSpec({self.family}): the resnet layout needs 4 stages and no head conv")
        if self.stem_pool not in ("", "max"):
            raise InputError(f"ArchSpec({self.family}): stem_pool must be '' or 'max', got {self.stem_pool!r}")
        if not self.stages or any(len(s) == 0 for s in self.stages):
            raise InputError(f"ArchSpec({self.family}): every stage needs at least one block")
        owner = f"ArchSpec({self.family})"
        if not isinstance(self.pre_logits_bias, bool):
            raise InputError(f"{owner}: pre_logits_bias must be true or false, got {self.pre_logits_bias!r}")
        _check_int(owner, "num_classes", self.num_classes, 0, MAX_CLASSES)
        _check_int(owner, "in_chans", self.in_chans, 1, MAX_IN_CHANS)
        if self.head_chs is not None:
            _check_int(owner, "head_chs", self.head_chs, 1, MAX_CHANNELS)
        _check_real(owner, "drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        self._check_widths()
        if self.feature_stages is not None and (
                not self.feature_stages or any(not 0 <= i < len(self.stages) for i in self.feature_stages)):
            raise InputError(f"ArchSpec({self.family}): feature_stages {self.feature_stages} must index the "
                             f"{len(self.stages)} stages")
        self._check_pre_logits()

    def _check_widths(self) -> None:
        """At most MAX_BLOCKS blocks, and no block whose hidden width (``in_chs × expand``) passes MAX_CHANNELS."""
        blocks = self.blocks
        if len(blocks) > MAX_BLOCKS:
            raise InputError(f"ArchSpec({self.family}): {len(blocks):,} blocks, more than {MAX_BLOCKS:,}")
        in_chs = self.in_chans
        for name, block in [("stem", self.stem)] + [(f"stages[{i}][{j}]", b) for i, stage in enumerate(self.stages)
                                                     for j, b in enumerate(stage)]:
            if not isinstance(block, BlockSpec):
                raise InputError(f"ArchSpec({self.family}): {name} must be a BlockSpec, got {block!r}")
            if block.mid_chs is None and in_chs * block.expand > MAX_CHANNELS:
                raise InputError(f"ArchSpec({self.family}): {name} has a hidden width of {in_chs} x expand "
                                 f"{block.expand:g} = {in_chs * block.expand:,.0f} channels, more than "
                                 f"{MAX_CHANNELS:,}")
            in_chs = block.out_chs

    def _check_pre_logits(self) -> None:
        if self.pre_logits_act not in ACTIVATIONS:
            raise InputError(f"ArchSpec({self.family}): unknown pre_logits_act {self.pre_logits_act!r}; "
                             f"known: {', '.join(ACTIVATIONS)}")
        if self.pre_logits_chs is None:
            return
        _check_int(f"ArchSpec({self.family})", "pre_logits_chs", self.pre_logits_chs, 1, MAX_CHANNELS)
        if self.head_chs is not None:
            raise InputError(f"ArchSpec({self.family}): head_chs={self.head_chs} and pre_logits_chs={self.pre_logits_chs} "
                             "cannot both be set; put the pre-pool 1x1 conv in the last stage (as timm's MobileNetV3)")
        if self.layout != "mobile":
            raise InputError(f"ArchSpec({self.family}): pre_logits_chs needs the 'mobile' layout, got {self.layout!r}")

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """All stage blocks in order (stem and head excluded)."""
        return tuple(b for stage in self.stages for b in stage)

    @property
    def num_features(self) -> int:
        """Channels of the unpooled features (``forward_features``), as timm defines ``num_features``."""
        return self.head_chs if self.head_chs is not None else self.stages[-1][-1].out_chs

    @property
    def head_hidden_size(self) -> int:
        """Channels entering the classifier: the pre-logits conv's width if there is one, else ``num_features``."""
        return self.pre_logits_chs if self.pre_logits_chs is not None else self.num_features

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with some top-level fields changed (e.g. ``num_classes``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        optional = {k: getattr(self, k) for k, default in _OPTIONAL_ARCH_FIELDS.items() if getattr(self, k) != default}
        return optional | {
            "schema_version": self.schema_version,
            "family": self.family,
            "stem": _block_to_dict(self.stem),
            "stages": [[_block_to_dict(b) for b in stage] for stage in self.stages],
            "head_chs": self.head_chs,
            "head_act": self.head_act,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "drop_rate": self.drop_rate,
            "feature_stages": list(self.feature_stages) if self.feature_stages is not None else None,
            "layout": self.layout,
            "stem_pool": self.stem_pool,
            "pre_logits_chs": self.pre_logits_chs,
            "pre_logits_act": self.pre_logits_act,
            "pre_logits_bias": self.pre_logits_bias,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if data.get("spec_type") == "cellnet":
            raise InputError("ArchSpec: the data holds a CellNetSpec; read it with zoo.spec_from_json / spec_from_dict")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise InputError(f"ArchSpec schema_version {version!r} is not supported "
                             f"(this version reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"ArchSpec: unknown fields {sorted(unknown)}")
        try:
            fields = dict(data) | {"schema_version": SCHEMA_VERSION}
            fields["stem"] = _block_from_dict(data["stem"])
            stages = data["stages"]
            if not isinstance(stages, list) or not all(isinstance(stage, list) for stage in stages):
                raise InputError(f"ArchSpec: stages must be a list of lists of blocks, got {stages!r:.80}")
            fields["stages"] = tuple(tuple(_block_from_dict(b) for b in stage) for stage in stages)
            if fields.get("feature_stages") is not None:
                fields["feature_stages"] = tuple(_int_list("ArchSpec", "feature_stages", fields["feature_stages"]))
        except KeyError as err:
            raise InputError(f"ArchSpec: missing field {err}") from None
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"ArchSpec: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise InputError("ArchSpec: JSON must be an object")
        return cls.from_dict(data)


def _block_to_dict(block: BlockSpec) -> dict[str, Any]:
    data = dataclasses.asdict(block)
    for key, default in _OPTIONAL_BLOCK_FIELDS.items():
        if data[key] == default:
            del data[key]
    return data


def _int_list(owner: str, field: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise InputError(f"{owner}: {field} must be a list of ints, got {value!r:.80}")
    return value


def _block_from_dict(data: dict[str, Any]) -> BlockSpec:
    if not isinstance(data, dict):
        raise InputError(f"BlockSpec: a block must be a JSON object, got {data!r:.80}")
    known = {f.name for f in dataclasses.fields(BlockSpec)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"BlockSpec: unknown fields {sorted(unknown)}")
    missing = [name for name in ("kind", "out_chs") if name not in data]
    if missing:
        raise InputError(f"BlockSpec: missing field(s) {missing}")
    fields = dict(data)
    if fields.get("se") is not None:
        se_known = {f.name for f in dataclasses.fields(SESpec)}
        if not isinstance(fields["se"], dict) or set(fields["se"]) - se_known:
            raise InputError(f"SESpec: expected an object with fields {sorted(se_known)}, got {fields['se']!r}")
        fields["se"] = SESpec(**fields["se"])
    if fields.get("inner_chs") is not None:
        fields["inner_chs"] = tuple(_int_list("BlockSpec", "inner_chs", fields["inner_chs"]))
    return BlockSpec(**fields)


# DARTS' candidate operations (the cell search space of DARTS and EoiNAS, papers.md §1.3).
CELL_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
            "dil_conv_3x3", "dil_conv_5x5")
CELL_STEMS = ("cifar", "imagenet")


@dataclass(frozen=True)
class Genotype:
    """A discrete DARTS cell pair: for each intermediate node, two (operation, input state) edges.

    States 0 and 1 are the outputs of the two previous cells; state ``2 + i`` is intermediate node
    ``i``. ``normal`` / ``reduce`` list the edges node by node (two per node); the cell output is the
    channel concatenation of the states in ``*_concat``.
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for name, edges, concat in (("normal", self.normal, self.normal_concat),
                                    ("reduce", self.reduce, self.reduce_concat)):
            if not edges or len(edges) % 2:
                raise InputError(f"Genotype.{name}: needs two edges per node, got {len(edges)} edges")
            if len(edges) > 2 * MAX_CELL_NODES:
                raise InputError(f"Genotype.{name}: {len(edges) // 2} nodes, more than {MAX_CELL_NODES}")
            for i, (op, src) in enumerate(edges):
                if op not in CELL_OPS:
                    raise InputError(f"Genotype.{name}[{i}]: unknown operation {op!r}; known: {', '.join(CELL_OPS)}")
                if not 0 <= src < 2 + i // 2:
                    raise InputError(f"Genotype.{name}[{i}]: input state {src} does not exist yet "
                                     f"(node {i // 2} sees states 0..{1 + i // 2})")
            if not concat or any(not 0 <= c < 2 + len(edges) // 2 for c in concat):
                raise InputError(f"Genotype.{name}_concat {concat} must index the {2 + len(edges) // 2} states")

    def to_dict(self) -> dict[str, Any]:
        return {"normal": [list(e) for e in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(e) for e in self.reduce], "reduce_concat": list(self.reduce_concat)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype:
        try:
            return cls(normal=tuple((str(op), int(src)) for op, src in data["normal"]),
                       normal_concat=tuple(data["normal_concat"]),
                       reduce=tuple((str(op), int(src)) for op, src in data["reduce"]),
                       reduce_concat=tuple(data["reduce_concat"]))
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ValueError) and str(err).startswith("Genotype"):
                raise
            raise InputError(f"Genotype: malformed ({err!r})") from None


@dataclass(frozen=True)
class CellNetSpec:
    """A DARTS-style cell network (``NetworkCIFAR`` / ``NetworkImageNet``) as data.

    Attributes:
        family: model family name (e.g. ``"darts"``).
        genotype: the normal and reduction cells.
        init_chs: ``C``, the channels of each cell op in the first stage (doubled at each reduction).
        layers: number of cells; reductions sit at ``layers // 3`` and ``2 * layers // 3``.
        stem: ``"cifar"`` (3x3 conv to ``stem_multiplier × C``) or ``"imagenet"`` (three stride-2 3x3 convs).
        auxiliary: build the auxiliary classifier after cell ``2 * layers // 3`` (training only).
        num_classes: classifier outputs (0 means no classifier).
        in_chans: image channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: DARTS' drop-path probability on non-identity edges (training only).
        stem_multiplier: width of the CIFAR stem relative to ``C``.
        schema_version: format version of this spec.
    """

    family: str
    genotype: Genotype
    init_chs: int
    layers: int
    stem: str = "cifar"
    auxiliary: bool = False
    num_classes: int = 10
    in_chans: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    stem_multiplier: int = 3
    schema_version: int = SCHEMA_VERSION

    spec_type = "cellnet"  # class constant: the tag that tells the two spec types apart in JSON

    def __post_init__(self) -> None:
        owner = f"CellNetSpec({self.family})"
        _check_int(owner, "init_chs", self.init_chs, 2, MAX_CELL_INIT_CHS)
        _check_int(owner, "layers", self.layers, 3, MAX_CELL_LAYERS)
        if self.init_chs % 2:
            raise InputError(f"{owner}: need an even init_chs, got init_chs={self.init_chs}")
        if self.stem not in CELL_STEMS:
            raise InputError(f"{owner}: unknown stem {self.stem!r}; known: {', '.join(CELL_STEMS)}")
        _check_int(owner, "num_classes", self.num_classes, 0, MAX_CLASSES)
        _check_int(owner, "in_chans", self.in_chans, 1, MAX_IN_CHANS)
        _check_int(owner, "stem_multiplier", self.stem_multiplier, 1, MAX_STEM_MULTIPLIER)
        for field in ("drop_rate", "drop_path_rate"):
            _check_real(owner, field, getattr(self, field), 0.0, 1.0, high_open=True)
        if not isinstance(self.genotype, Genotype):
            raise InputError(f"{owner}: genotype must be a Genotype, got {self.genotype!r}")

    @property
    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    @property
    def num_features(self) -> int:
        """Channels of the last cell's output (entering the classifier)."""
        return len(self.genotype.normal_concat) * self.init_chs * 4

    @property
    def head_hidden_size(self) -> int:
        """Channels entering the classifier (cell networks pool straight into it)."""
        return self.num_features

    def replace(self, **changes: Any) -> CellNetSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return data | {"spec_type": self.spec_type, "genotype": self.genotype.to_dict()}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellNetSpec:
        if data.get("schema_version") not in CELLNET_READABLE_SCHEMA_VERSIONS:
            raise InputError(f"CellNetSpec schema_version {data.get('schema_version')!r} is not supported "
                             f"(this version reads {', '.join(map(str, CELLNET_READABLE_SCHEMA_VERSIONS))})")
        fields = {k: v for k, v in data.items() if k != "spec_type"} | {"schema_version": SCHEMA_VERSION}
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"CellNetSpec: unknown fields {sorted(unknown)}")
        if "genotype" not in fields:
            raise InputError("CellNetSpec: missing field 'genotype'")
        fields["genotype"] = Genotype.from_dict(fields["genotype"])
        try:
            spec = cls(**fields)
        except TypeError as err:
            raise InputError(f"CellNetSpec: {err}") from None
        return spec

    @classmethod
    def from_json(cls, text: str) -> CellNetSpec:
        spec = spec_from_json(text)
        if not isinstance(spec, cls):
            raise InputError("CellNetSpec: the JSON holds an ArchSpec")
        return spec


AnySpec = ArchSpec | CellNetSpec


def spec_from_dict(data: dict[str, Any]) -> AnySpec:
    """Read either spec type (``CellNetSpec`` dicts carry ``"spec_type": "cellnet"``), within the schema's bounds."""
    if not isinstance(data, dict):
        raise InputError(f"a spec must be a JSON object, got {type(data).__name__}")
    if data.get("spec_type", "arch") == CellNetSpec.spec_type:
        return CellNetSpec.from_dict(data)
    if data.get("spec_type", "arch") != "arch":
        raise InputError(f"unknown spec_type {data.get('spec_type')!r}; known: arch, cellnet")
    return ArchSpec.from_dict({k: v for k, v in data.items() if k != "spec_type"})


def spec_from_json(text: str) -> AnySpec:
    """Parse a spec file's text into an :class:`ArchSpec` or a :class:`CellNetSpec`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"spec: not valid JSON ({err})") from None
    return spec_from_dict(data)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10 % (MobileNetV2 rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


__all__ = ["SCHEMA_VERSION", "ACTIVATIONS", "GATES", "PADDINGS", "DEFAULT_BN_EPS", "CELL_OPS", "SESpec", "BlockSpec",
           "ArchSpec", "Genotype",
           "CellNetSpec", "AnySpec", "spec_from_dict", "spec_from_json", "check_size", "make_divisible", "MAX_CHANNELS",
           "MAX_KERNEL", "MAX_EXPAND", "MAX_CLASSES", "MAX_IN_CHANS", "MAX_BLOCKS", "MAX_CELL_INIT_CHS", "MAX_CELL_LAYERS",
           "MAX_CELL_NODES", "MAX_STEM_MULTIPLIER", "MAX_PARAMS"]
