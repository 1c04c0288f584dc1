"""DARTS_V2 cell networks: the reference genotype of the DARTS / EoiNAS cell space, for CIFAR-10 and ImageNet.

Papers: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (arXiv:1806.09055);
the EoiNAS paper (Xie, Zhou, Kung, arXiv:1911.10511) searches the same space and evaluates with the
same networks (papers.md §1.3), but its discovered genotype is not retrievable (papers.md §1.4), so the
zoo registers DARTS_V2 here and the EoiNAS model is what the EoiNAS search writes out (a
:class:`~zoo.spec.CellNetSpec` file, built by :func:`zoo.build_model`).

Genotype (papers.md §8, from xiusu/BCNetV2 ``genotypes.py``, a copy of DARTS'): normal = sep3(0),
sep3(1), sep3(0), sep3(1), sep3(1), skip(0), skip(0), dil3(2); reduce = max(0), max(1), skip(2),
max(1), max(0), skip(2), skip(2), max(1); both concatenate nodes 2..5. Evaluation networks as
published: CIFAR-10 C=36, 20 cells (3.349M params without the auxiliary head), ImageNet mobile
setting C=48, 14 cells (4.719M params, ≈574M MACs at 224²); ``tests/zoo/test_darts.py`` checks both.
Training-time options: ``create_model(..., auxiliary=True, drop_path_rate=0.2)``.
"""

from __future__ import annotations

from .pretrained import CIFAR10_MEAN, CIFAR10_STD, PretrainedCfg
from .registry import register_model
from .spec import CellNetSpec, Genotype

DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)


def cifar_cellnet_spec(genotype: Genotype, init_chs: int = 36, layers: int = 20, num_classes: int = 10,
                       family: str = "darts") -> CellNetSpec:
    """DARTS' CIFAR evaluation network for ``genotype`` (defaults: C=36, 20 cells)."""
    return CellNetSpec(family=family, genotype=genotype, init_chs=init_chs, layers=layers, stem="cifar",
                       num_classes=num_classes)


def imagenet_cellnet_spec(genotype: Genotype, init_chs: int = 48, layers: int = 14, num_classes: int = 1000,
                          family: str = "darts") -> CellNetSpec:
    """DARTS' ImageNet mobile-setting network for ``genotype`` (defaults: C=48, 14 cells)."""
    return CellNetSpec(family=family, genotype=genotype, init_chs=init_chs, layers=layers, stem="imagenet",
                       num_classes=num_classes)


_PAPER = dict(paper_name="DARTS: Differentiable Architecture Search", paper_ids="arXiv:1806.09055")


@register_model(PretrainedCfg(input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, interpolation="bilinear",
                              mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10, first_conv="stem.0",
                              notes="C=36, 20 cells; DARTS reports 2.76 % CIFAR-10 error (3.349M params)", **_PAPER))
def darts_v2_cifar() -> CellNetSpec:
    """DARTS_V2 on CIFAR-10 (NetworkCIFAR, C=36, 20 cells)."""
    return cifar_cellnet_spec(DARTS_V2)


@register_model(PretrainedCfg(input_size=(3, 224, 224), pool_size=(7, 7), first_conv="stem0.0",
                              notes="mobile setting C=48, 14 cells; DARTS reports 26.7 % top-1 error", **_PAPER))
def darts_v2_imagenet() -> CellNetSpec:
    """DARTS_V2 on ImageNet (NetworkImageNet, mobile setting, C=48, 14 cells)."""
    return imagenet_cellnet_spec(DARTS_V2)
