"""Once-for-All's MobileNetV3 search space (width 1.2) as ArchSpecs: the subnets OFA's Note10 tables price.

Paper: Cai, Gan, Wang, Zhang, Han, "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020 (arXiv:1908.09791); code mit-han-lab/once-for-all (``OFAMobileNetV3``,
``ofa_mbv3_d234_e346_k357_w1.2``). A subnet is OFA's arch dict: ``ks`` and ``e`` (20 layer slots, 4 per
stage; slots past a stage's depth are ignored, as in OFA) and ``d`` (5 stage depths). From the code
and pinned by the keys of OFA's published Note10 lookup tables (``../shared/data/ofa-note10-lut``;
every width, hidden width, stride, skip, SE and h-swish flag below is checked against them by
``tests/zoo/test_ofa.py`` and the table import): stem 3×3 s2 conv → 24, BN, h-swish ("Conv"); a fixed
first block 24 → 24 k3 without expansion (depthwise-separable, identity skip, ReLU, no SE); 5 stages
of widths (32, 48, 96, 136, 192) = ``make_divisible(w × 1.2, 8)`` of MobileNetV3's (24, 40, 80, 112,
160), first strides (2, 2, 2, 1, 2), activations (ReLU, ReLU, h-swish, h-swish, h-swish), SE on
stages 2, 4 and 5; kernel ∈ {3, 5, 7}, expand ∈ {3, 4, 6}, hidden width
``make_divisible(round(in × e), 8)``; OFA's SE reduces to ``make_divisible(hidden // 4, 8)`` with
biased 1×1 convs, ReLU and an h-sigmoid gate; the final expand 1×1 conv 192 → 1152 + BN + h-swish
("Conv_1"); global average pool; the feature-mix 1×1 conv 1152 → 1536 after the pool, no BN, no bias,
h-swish ("Conv_2", timm's MobileNetV3 ``conv_head``); dropout; linear → classes ("Logits").
Assumed (not pinned by the tables): dropout 0.1 (OFA's training scripts; its model zoo builds the
supernet with 0); feature levels at reductions 2…32 chosen as timm's MobileNetV3 does (the first block,
stages 1, 2, 4 and the final conv). No model is registered: OFA publishes no subnet config in its
repository (its specialised nets are downloaded) and no weights can be loaded here; search writes its
results through :func:`ofa_mbv3_spec`.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import InputError
from .spec import ArchSpec, BlockSpec, SESpec, make_divisible

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
MAX_DEPTH = 4
# (width, first stride, activation, SE) of the five elastic stages.
STAGES = ((32, 2, "relu", False), (48, 2, "relu", True), (96, 2, "hswish", False), (136, 1, "hswish", True),
          (192, 2, "hswish", True))
NUM_SLOTS = MAX_DEPTH * len(STAGES)
STEM_CHS = 24
FINAL_EXPAND_CHS = 1152
FEATURE_MIX_CHS = 1536
# The resolutions OFA's Note10 lookup tables cover (one table per resolution).
RESOLUTIONS = tuple(range(160, 225, 4))
OFA_SE = SESpec(ratio=0.25, base="mid", divisor=8, act="relu", gate="hsigmoid")


def _check(name: str, values: Sequence[int], length: int, allowed: tuple[int, ...]) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length:
        raise InputError(f"ofa_mbv3_spec: {name} needs {length} values, got {len(values)}: {values}")
    for v in values:
        if v not in allowed:
            raise InputError(f"ofa_mbv3_spec: {name} value {v!r} is not one of {allowed}")
    return values


def _block(in_chs: int, out_chs: int, stride: int, kernel: int, expand: int, act: str, se: bool) -> BlockSpec:
    mid = make_divisible(round(in_chs * expand), 8)
    # OFA rounds the hidden width to a multiple of 8; it is set explicitly only where that rounding
    # changes it (never at width 1.2, so keys stay those of a plain expand ratio).
    explicit = mid if mid != int(round(in_chs * expand)) else None
    return BlockSpec("ir", out_chs, stride, kernel, float(expand), act=act, se=OFA_SE if se else None,
                     mid_chs=explicit)


def ofa_mbv3_spec(kernels: Sequence[int], expands: Sequence[int], depths: Sequence[int],
                  num_classes: int = 1000) -> ArchSpec:
    """An OFA MobileNetV3 (w1.2) subnet: 20 kernel and expand slots, 5 stage depths (OFA's ``ks``, ``e``, ``d``)."""
    kernels = _check("kernels", kernels, NUM_SLOTS, KERNELS)
    expands = _check("expands", expands, NUM_SLOTS, EXPANDS)
    depths = _check("depths", depths, len(STAGES), DEPTHS)
    first = BlockSpec("ds", STEM_CHS, 1, 3, act="relu")
    stages: list[tuple[BlockSpec, ...]] = [(first,)]
    chs = STEM_CHS
    for i, ((width, stride, act, se), depth) in enumerate(zip(STAGES, depths)):
        blocks = []
        for j in range(depth):
            slot = i * MAX_DEPTH + j
            blocks.append(_block(chs, width, stride if j == 0 else 1, kernels[slot], expands[slot], act, se))
            chs = width
        stages.append(tuple(blocks))
    stages.append((BlockSpec("conv", FINAL_EXPAND_CHS, 1, 1, act="hswish"),))
    return ArchSpec(family="ofa_mbv3", stem=BlockSpec("conv", STEM_CHS, 2, 3, act="hswish"), stages=tuple(stages),
                    head_chs=None, num_classes=num_classes, drop_rate=0.1, feature_stages=(0, 1, 2, 4, 6),
                    pre_logits_chs=FEATURE_MIX_CHS, pre_logits_act="hswish", pre_logits_bias=False)


def ofa_mbv3_uniform_spec(kernel: int, expand: int, depth: int = MAX_DEPTH, num_classes: int = 1000) -> ArchSpec:
    """The subnet using one kernel and one expand ratio in every slot, every stage at ``depth``."""
    return ofa_mbv3_spec([kernel] * NUM_SLOTS, [expand] * NUM_SLOTS, [depth] * len(STAGES), num_classes)


__all__ = ["DEPTHS", "EXPANDS", "KERNELS", "NUM_SLOTS", "RESOLUTIONS", "STAGES", "ofa_mbv3_spec",
           "ofa_mbv3_uniform_spec"]
