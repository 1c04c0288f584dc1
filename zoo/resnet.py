"""ResNet-50 with per-layer widths: the full network (timm's ``resnet50``, key for key) and BCNet's searched widths.

Papers: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385), in the
v1.5 form (stride in the 3x3 conv) that torchvision and timm ship; Su et al., "BCNet: Searching for
Network Width with Bilaterally Coupled Network", CVPR 2021 (arXiv:2105.10533).

A width spec is BCNet's 53-entry channel list (papers.md §3.6): the stem, then per bottleneck
(conv1, conv2, conv3) with the downsample conv's width after conv3 in the first block of each stage.
A stage's conv3 widths and its downsample width are one width (they are added) and must be equal,
BCNet's ``skip_list``. The same list format carries DAGGER's pruned ResNet-50 (filter pruning keeps
the layout and shrinks these widths): :func:`resnet50_width_spec` is the builder for both. Stem: 7x7
stride-2 conv and 3x3 stride-2 max pool; feature levels are the four stages. The BCNet lists are the
official search results (BCNet/temp/search_results.xlsx); their published MACs/params are reproduced
in ``tests/zoo/test_resnet.py``. No weights are published.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import InputError
from .pretrained import PretrainedCfg
from .registry import register_model
from .spec import ArchSpec, BlockSpec

# (bottlenecks, first stride) per stage of ResNet-50.
RESNET50_STAGES: tuple[tuple[int, int], ...] = ((3, 1), (4, 2), (6, 2), (3, 2))


def _full_width() -> tuple[int, ...]:
    widths = [64]
    for (n, _), planes in zip(RESNET50_STAGES, (64, 128, 256, 512)):
        widths += [planes, planes, 4 * planes, 4 * planes] + [planes, planes, 4 * planes] * (n - 1)
    return tuple(widths)


FULL_WIDTH = _full_width()

# BCNet's searched widths (papers.md §3.7), keyed by their MACs budget label.
BCNET_RESNET50 = {
    "3g": (64, 38, 64, 153, 153, 19, 32, 153, 32, 44, 153, 89, 128, 512, 512, 38, 64, 512, 102, 128, 512,
           102, 128, 512, 256, 256, 1024, 1024, 76, 256, 1024, 179, 179, 1024, 256, 256, 1024, 256, 256, 1024,
           256, 256, 1024, 512, 512, 2048, 2048, 512, 512, 2048, 512, 512, 2048),
    "2g": (64, 19, 64, 102, 102, 44, 32, 102, 25, 64, 102, 64, 128, 256, 256, 51, 89, 256, 115, 76, 256,
           115, 76, 256, 128, 230, 614, 614, 179, 204, 614, 102, 230, 614, 153, 230, 614, 204, 179, 614,
           179, 204, 614, 512, 460, 2048, 2048, 358, 512, 2048, 512, 512, 2048),
    "1g": (32, 12, 32, 76, 76, 25, 19, 76, 25, 12, 76, 51, 64, 204, 204, 25, 64, 204, 38, 64, 204, 76, 25, 204,
           153, 128, 512, 512, 51, 204, 512, 102, 179, 512, 102, 179, 512, 102, 128, 512, 102, 153, 512,
           358, 460, 1843, 1843, 204, 460, 1843, 358, 409, 1843),
    "575m": (19, 44, 12, 76, 76, 38, 12, 76, 25, 19, 76, 25, 64, 102, 102, 25, 64, 102, 38, 76, 102, 25, 64, 102,
             102, 76, 409, 409, 25, 153, 409, 76, 76, 409, 51, 102, 409, 76, 102, 409, 76, 51, 409,
             153, 307, 1843, 1843, 204, 256, 1843, 256, 204, 1843),
}


def list_length() -> int:
    return 1 + sum(3 * n + 1 for n, _ in RESNET50_STAGES)


def resnet50_width_spec(channels: Sequence[int] = FULL_WIDTH, num_classes: int = 1000,
                        family: str = "resnet50") -> ArchSpec:
    """A ResNet-50 spec from a 53-entry channel list (BCNet's format; also DAGGER's pruned widths).

    Raises:
        ValueError: wrong list length, non-positive widths, or tied widths that differ (the entry is named).
    """
    ch = list(channels)
    need = list_length()
    if len(ch) != need or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in ch):
        raise InputError(f"ResNet-50 width list needs {need} positive ints, got {len(ch)} entries")
    stages, pos = [], 1
    for s, (n, stride) in enumerate(RESNET50_STAGES):
        out = ch[pos + 2]
        blocks = []
        for i in range(n):
            w1, w2, w3 = ch[pos:pos + 3]
            if w3 != out:
                raise InputError(f"width entry {pos + 2} (stage {s + 1} block {i} conv3, {w3}) must equal the "
                                 f"stage's first conv3 width ({out}): the residual adds them")
            pos += 3
            if i == 0:
                if ch[pos] != out:
                    raise InputError(f"width entry {pos} (stage {s + 1} downsample, {ch[pos]}) must equal "
                                     f"its conv3 width ({out})")
                pos += 1
            # The full network's first block of a stage has a projection shortcut; a searched one keeps it even
            # when its widths make the shapes match (residual=False: no identity).
            blocks.append(BlockSpec("bottleneck", out, stride if i == 0 else 1, 3, inner_chs=(w1, w2),
                                    residual=i > 0))
        stages.append(tuple(blocks))
    return ArchSpec(family=family, stem=BlockSpec("conv", ch[0], 2, 7), stages=tuple(stages), head_chs=None,
                    num_classes=num_classes, layout="resnet", stem_pool="max")


def _cfg(note: str) -> PretrainedCfg:
    return PretrainedCfg(input_size=(3, 224, 224), pool_size=(7, 7), first_conv="conv1", classifier="fc",
                         paper_name="BCNet: Searching for Network Width with Bilaterally Coupled Network",
                         paper_ids="arXiv:2105.10533", notes=note)


@register_model(_cfg("full width: timm resnet50 key for key (timm weights load)"))
def bcnet_resnet50_100() -> ArchSpec:
    """ResNet-50 as a width list (the BCNet supernet's full width)."""
    return resnet50_width_spec(FULL_WIDTH)


@register_model(_cfg("BCNet search result at the 3G budget"))
def bcnet_resnet50_3g() -> ArchSpec:
    """BCNet ResNet-50, 3G MACs budget."""
    return resnet50_width_spec(BCNET_RESNET50["3g"])


@register_model(_cfg("BCNet search result at the 2G budget"))
def bcnet_resnet50_2g() -> ArchSpec:
    """BCNet ResNet-50, 2G MACs budget."""
    return resnet50_width_spec(BCNET_RESNET50["2g"])


@register_model(_cfg("BCNet search result at the 1G budget"))
def bcnet_resnet50_1g() -> ArchSpec:
    """BCNet ResNet-50, 1G MACs budget."""
    return resnet50_width_spec(BCNET_RESNET50["1g"])


@register_model(_cfg("BCNet search result at the 575M budget"))
def bcnet_resnet50_575m() -> ArchSpec:
    """BCNet ResNet-50, 575M MACs budget."""
    return resnet50_width_spec(BCNET_RESNET50["575m"])
