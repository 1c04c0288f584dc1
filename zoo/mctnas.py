"""MCT-NAS-A/B/C: the ImageNet models found by Monte-Carlo-tree architecture sampling.

Paper: Su et al., "Prioritized Architecture Sampling with Monto-Carlo Tree Search", CVPR 2021
(arXiv:2103.11922). Configs from the official YAMLs (xiusu/BCNetV2, config/models/MCT-NAS), as
transcribed in papers.md §4.3/§4.5 [V]: stem 3×3 conv s2 → 32 (ReLU); a fixed MB1 k3 block 32 → 16
(HSwish, no SE); 21 searchable layers in stages (channels, depth, first stride) (32,4,2) (40,4,2)
(80,4,2) (96,4,1) (192,4,2) (320,1,1), each MB{3,6} × k{3,5,7} or identity; every searched block has
HSwish and SE (reduced = int(0.25 × hidden), hidden act HSwish, HSigmoid gate); 1×1 conv → 1280
(ReLU), pool, dropout 0.2, FC 1000. Published MACs: A 441.6M (the 442M headline, 78.0 % top-1),
B 327.2M, C 280.3M (papers.md [C]); tests reproduce them. No weights are published.
"""

from __future__ import annotations

from common.errors import InputError

from .pretrained import PretrainedCfg
from .registry import register_model
from .spec import ArchSpec, BlockSpec, SESpec

SPACE_STAGES = ((32, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))
# Searchable-layer stages grouped into feature levels (reductions 4, 8, 16, 32 after the MB1 level at 2).
_LEVELS = ((0,), (1,), (2, 3), (4, 5))
MCT_SE = SESpec(ratio=0.25, base="mid", divisor=1, act=None, gate="hsigmoid")

# One token per searchable layer: "e<expand>k<kernel>" or "id".
MCTNAS_A = ("e6k3 e3k3 e3k3 e3k3  e3k3 e3k5 e3k5 e3k3  e6k3 e3k5 e3k5 e6k3  "
            "e6k3 e6k7 e6k3 e6k5  e6k7 e6k7 e6k5 e6k5  e6k7")
MCTNAS_B = ("e3k7 id id e3k3  e3k5 e3k5 e6k3 e3k3  e3k3 id e6k5 e6k5  "
            "e6k5 e3k3 e3k3 e3k3  e6k5 e3k5 e6k7 e3k3  e6k7")
MCTNAS_C = ("e3k3 id e3k3 e3k3  e3k5 e3k5 e3k3 e3k3  e3k5 e3k7 id e3k5  "
            "e3k7 e3k7 id e3k3  e3k5 e3k5 e3k5 e3k7  e6k7")


def _layer(token: str, out_chs: int, stride: int) -> BlockSpec:
    if token == "id":
        return BlockSpec("skip", out_chs, stride, kernel=1, act="identity")
    if len(token) != 4 or token[0] != "e" or token[2] != "k" or token[1] not in "36" or token[3] not in "357":
        raise InputError(f"MCT-NAS layer token must be 'id' or e{{3,6}}k{{3,5,7}}, got {token!r}")
    return BlockSpec("ir", out_chs, stride, int(token[3]), float(token[1]), act="hswish", se=MCT_SE)


def mctnas_spec(tokens: str, num_classes: int = 1000) -> ArchSpec:
    """The spec of an architecture in the MCT-NAS ImageNet space, given 21 whitespace-separated tokens."""
    ops = tokens.split()
    if len(ops) != sum(depth for _, depth, _ in SPACE_STAGES):
        raise InputError(f"MCT-NAS architecture needs 21 layer tokens, got {len(ops)}")
    stages, it = [], iter(ops)
    for chs, depth, stride in SPACE_STAGES:
        stages.append([_layer(next(it), chs, stride if i == 0 else 1) for i in range(depth)])
    mb1 = BlockSpec("ir", 16, 1, 3, 1.0, act="hswish")
    levels = [(mb1,)] + [tuple(b for s in group for b in stages[s]) for group in _LEVELS]
    return ArchSpec(family="mctnas", stem=BlockSpec("conv", 32, 2, 3, act="relu"), stages=tuple(levels),
                    head_chs=1280, head_act="relu", num_classes=num_classes, drop_rate=0.2)


def _cfg(note: str) -> PretrainedCfg:
    return PretrainedCfg(input_size=(3, 224, 224), pool_size=(7, 7),
                         paper_name="Prioritized Architecture Sampling with Monto-Carlo Tree Search",
                         paper_ids="arXiv:2103.11922", notes=note)


@register_model(_cfg("published 442M MACs, 78.0 % ImageNet top-1; no weights published"))
def mctnas_a() -> ArchSpec:
    """MCT-NAS-A."""
    return mctnas_spec(MCTNAS_A)


@register_model(_cfg("published 327M MACs; no weights published"))
def mctnas_b() -> ArchSpec:
    """MCT-NAS-B."""
    return mctnas_spec(MCTNAS_B)


@register_model(_cfg("published 280M MACs; no weights published"))
def mctnas_c() -> ArchSpec:
    """MCT-NAS-C."""
    return mctnas_spec(MCTNAS_C)
