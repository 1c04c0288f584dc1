"""The Meta-Kernel search space: MobileNetV2-style networks whose blocks each choose kernel and expansion.

Paper: Chen, Chen, Yan, Feng, "Efficient Differentiable Neural Architecture Search with Meta Kernels",
arXiv:1912.04749 (papers.md §7). What is known: blocks of a MobileNetV2-like macro space choose the
depthwise kernel in {3, 5, 7} and the expansion ratio in {3, 6} (candidates merged into one meta
kernel / one channel mask during the search), and the final model uses SE and swish to reach 77.0 %
top-1 at 357M FLOPs. The exact macro layout, whether identity is a candidate, and the discovered
architecture are not retrievable (papers.md §7.4, [?]); so no Meta-Kernel model is registered, and
the search (its own issue) writes its result through :func:`metakernel_spec`.

Assumptions, chosen to be the most faithful reading of "MobileNetV2-like, SE and swish, compared with
EfficientNet-B0 at the same FLOPs": EfficientNet-B0's macro skeleton (stem 3x3 s2 → 32, a fixed
depthwise-separable k3 block → 16, then 15 searchable inverted residuals in stages (channels, depth,
first stride) (24,2,2) (40,2,2) (80,3,2) (112,3,1) (192,4,2) (320,1,1), 1x1 head → 1280), every block
with swish and SE (int(0.25 × block input), sigmoid gate, as EfficientNet); a layer token is
``e<3|6>k<3|5|7>``, or ``id`` (identity, a 1x1 conv + BN where the shape changes, as MCT-NAS's space)
when the search is run with skip as a candidate.
"""

from __future__ import annotations

from common.errors import InputError

from .spec import ArchSpec, BlockSpec, SESpec

SPACE_STAGES = ((24, 2, 2), (40, 2, 2), (80, 3, 2), (112, 3, 1), (192, 4, 2), (320, 1, 1))
KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)
MK_SE = SESpec(ratio=0.25, base="in", divisor=1, act=None, gate="sigmoid")
NUM_LAYERS = sum(depth for _, depth, _ in SPACE_STAGES)


def _layer(token: str, out_chs: int, stride: int) -> BlockSpec:
    if token == "id":
        return BlockSpec("skip", out_chs, stride, kernel=1, act="identity")
    ok = len(token) == 4 and token[0] == "e" and token[2] == "k" and token[1].isdigit() and token[3].isdigit()
    if not ok or int(token[1]) not in EXPANSIONS or int(token[3]) not in KERNELS:
        raise InputError(f"Meta-Kernel layer token must be 'id' or e{{3,6}}k{{3,5,7}}, got {token!r}")
    return BlockSpec("ir", out_chs, stride, int(token[3]), float(token[1]), act="swish", se=MK_SE)


def metakernel_spec(tokens: str, num_classes: int = 1000) -> ArchSpec:
    """The spec of an architecture in the (assumed) Meta-Kernel space, given 15 whitespace-separated tokens."""
    ops = tokens.split()
    if len(ops) != NUM_LAYERS:
        raise InputError(f"Meta-Kernel architecture needs {NUM_LAYERS} layer tokens, got {len(ops)}")
    it = iter(ops)
    stages = [(BlockSpec("ds", 16, 1, 3, act="swish", se=MK_SE),)]
    for chs, depth, stride in SPACE_STAGES:
        stages.append(tuple(_layer(next(it), chs, stride if i == 0 else 1) for i in range(depth)))
    return ArchSpec(family="metakernel", stem=BlockSpec("conv", 32, 2, 3, act="swish"), stages=tuple(stages),
                    head_chs=1280, head_act="swish", num_classes=num_classes, drop_rate=0.2,
                    feature_stages=(0, 1, 2, 4, 6))
