"""DARTS-style cell networks built from a :class:`~zoo.spec.CellNetSpec`: ops, cells, the network classes.

Paper: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (arXiv:1806.09055);
EoiNAS (Xie, Zhou, Kung, arXiv:1911.10511) searches the same cell space (papers.md §1.3).

The operations, cell wiring and the two network bodies (``NetworkCIFAR``: 3x3 stem to ``3C``;
``NetworkImageNet``: two stride-2 stems, mobile setting) follow DARTS' reference ``model.py`` /
``operations.py`` (quark0/darts), and so do the state-dict names (``stem``/``stem0``/``stem1``,
``cells.<i>.preprocess0``, ``cells.<i>._ops.<j>.op.<k>``, ``auxiliary_head``, ``classifier``), so DARTS
checkpoints load. Two deliberate differences, both exact at the published input sizes:
the ImageNet network pools globally instead of ``AvgPool2d(7)`` (identical at 224², and it makes the
network take any input size that stays even down to the last reduction), and the auxiliary head runs
only in :meth:`CellNet.forward_train`, so ``forward`` returns logits like every zoo model. Each op has a
cost twin in :func:`zoo.cell_prims.cell_op_prims` that the one cost walker (:func:`zoo.costs.iter_ops`) reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import InputError
from .contract import ZooModel, select_feature_info
from .cell_prims import cell_edges, cell_op_prims, cell_plan, factorized_reduce_prims  # noqa: F401 (re-exported)
from .spec import CellNetSpec, Genotype


class ReLUConvBN(nn.Module):
    """ReLU → conv (no bias) → BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                                nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU → dilated depthwise k×k (stride) → 1x1 → BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two (ReLU → depthwise k×k → 1x1 → BN) stages; the first carries the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, 1, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Stride-2 reduction: two 1x1 stride-2 convs, the second shifted by one pixel, concatenated, BN.

    Needs even input sizes (the two halves must agree), as in DARTS.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise InputError(f"FactorizedReduce needs an even output width, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape (only meaningful inside a search supernet)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


def create_cell_op(name: str, chs: int, stride: int) -> nn.Module:
    """One DARTS candidate operation on ``chs`` channels (affine BN, as in the evaluation networks)."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(chs, chs)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return SepConv(chs, chs, k, stride, k // 2)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return DilConv(chs, chs, k, stride, k - 1, 2)
    raise InputError(f"unknown cell operation {name!r}")


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """DARTS' drop-path: zero whole samples with probability ``drop_prob``, rescale the rest."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """One discrete DARTS cell: preprocess both inputs to ``chs``, two ops per node, concat the chosen states."""

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, chs: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_prev_prev, chs) if reduction_prev else ReLUConvBN(c_prev_prev, chs, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, chs, 1, 1, 0)
        edges, concat = cell_edges(genotype, reduction)
        self._ops = nn.ModuleList(create_cell_op(op, chs, 2 if reduction and src < 2 else 1) for op, src in edges)
        self._indices: list[int] = [src for _, src in edges]
        self._concat: list[int] = list(concat)
        # DARTS drops every edge but the identity ones.
        self._droppable: list[bool] = [not isinstance(op, nn.Identity) for op in self._ops]
        self.multiplier = len(concat)
        self.drop_prob = 0.0

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        first = states[0]
        for i, op in enumerate(self._ops):
            h = op(states[self._indices[i]])
            if self.training and self.drop_prob > 0.0 and self._droppable[i]:
                h = drop_path(h, self.drop_prob)
            if i % 2 == 0:
                first = h
            else:
                states.append(first + h)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier (CIFAR: input 8x8, pool stride 3; ImageNet: pool stride 2, and the BN
    after the 768-wide conv left out, as in DARTS' released ImageNet code)."""

    def __init__(self, chs: int, num_classes: int, imagenet: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReLU(inplace=True), nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False),
            nn.Conv2d(chs, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False)]
        layers += [nn.ReLU(inplace=True)] if imagenet else [nn.BatchNorm2d(768), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def stem_reduction(spec: CellNetSpec) -> int:
    return 1 if spec.stem == "cifar" else 8


def cell_feature_info(spec: CellNetSpec) -> list[dict[str, Any]]:
    """Feature levels: the last cell at each resolution (and, for ImageNet, the first stem)."""
    plan = cell_plan(spec)
    r1, r2 = spec.reduction_layers
    info = [] if spec.stem == "cifar" else [{"num_chs": spec.init_chs, "reduction": 4, "module": "stem0", "cell": -1}]
    base = stem_reduction(spec)
    for cell, reduction in ((r1 - 1, base), (r2 - 1, base * 2), (spec.layers - 1, base * 4)):
        info.append({"num_chs": plan[cell]["out_chs"], "reduction": reduction, "module": f"cells.{cell}", "cell": cell})
    return info


class CellNet(ZooModel):
    """A DARTS cell network (base of the CIFAR and ImageNet bodies); build with :func:`zoo.build_model`."""

    def __init__(self, spec: CellNetSpec, global_pool: str = "avg") -> None:
        super().__init__()
        self.setup_contract(spec, global_pool, cell_feature_info(spec))
        self._build_stem(spec)
        plan = cell_plan(spec)
        self.cells = nn.ModuleList(Cell(spec.genotype, p["c_prev_prev"], p["c_prev"], p["chs"], p["reduction"],
                                        p["reduction_prev"]) for p in plan)
        self.aux_index = spec.reduction_layers[1]
        self.auxiliary_head = AuxiliaryHead(plan[self.aux_index]["out_chs"], spec.num_classes or 1,
                                            spec.stem == "imagenet") if spec.auxiliary else None
        self.classifier = self.make_classifier(spec.num_classes, global_pool)
        self.set_drop_path(spec.drop_path_rate)
        self.init_weights()

    def _build_stem(self, spec: CellNetSpec) -> None:
        raise NotImplementedError

    def forward_stem(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier, and the auxiliary head's classifier with it."""
        super().reset_classifier(num_classes, global_pool)
        if self.auxiliary_head is not None:
            self.auxiliary_head.classifier = nn.Linear(768, num_classes or 1)

    @torch.jit.ignore
    def set_drop_path(self, drop_prob: float) -> None:
        """Set the drop-path probability of every cell (DARTS raises it linearly over training)."""
        if not 0.0 <= drop_prob < 1.0:
            raise InputError(f"drop_path probability must be in [0, 1), got {drop_prob}")
        for cell in self.cells:
            cell.drop_prob = drop_prob

    def forward_features(self, x: Tensor) -> Tensor:
        """Output of the last cell, unpooled: (N, num_features, H', W')."""
        s0, s1 = self.forward_stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.classifier(x)

    @torch.jit.ignore
    def forward_levels(self, x: Tensor, take: list[int], stop: bool) -> tuple[Tensor, list[Tensor]]:
        cells = [int(self.feature_info[i]["cell"]) for i in take]  # -1: the ImageNet body's first stem
        s0, s1 = self.forward_stem(x)
        levels = [s0] if -1 in cells else []
        for i, cell in enumerate(self.cells[:max(cells) + 1] if stop else self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i in cells:
                levels.append(s1)
        return s1, levels

    @torch.jit.ignore
    def forward_train(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(logits, auxiliary logits) as DARTS trains; the second is ``None`` without an auxiliary head
        or outside training mode."""
        s0, s1 = self.forward_stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.forward_head(s1), aux


class CellNetCIFAR(CellNet):
    """DARTS' ``NetworkCIFAR``: ``stem`` = 3x3 conv to ``stem_multiplier × C`` + BN, both cell inputs from it."""

    def _build_stem(self, spec: CellNetSpec) -> None:
        width = spec.stem_multiplier * spec.init_chs
        self.stem = nn.Sequential(nn.Conv2d(spec.in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

    def forward_stem(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.stem(x)
        return s, s


class CellNetImageNet(CellNet):
    """DARTS' ``NetworkImageNet`` (mobile setting): ``stem0`` (two stride-2 convs) and ``stem1`` (one more)."""

    def _build_stem(self, spec: CellNetSpec) -> None:
        c = spec.init_chs
        self.stem0 = nn.Sequential(
            nn.Conv2d(spec.in_chans, c // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True), nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c))
        self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(c))

    def forward_stem(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


def build_cellnet(spec: CellNetSpec, global_pool: str = "avg") -> CellNet:
    return (CellNetCIFAR if spec.stem == "cifar" else CellNetImageNet)(spec, global_pool)


class CellNetFeatures(nn.Module):
    """``features_only`` form of a :class:`CellNet`: outputs of its feature levels (same state-dict keys)."""

    def __init__(self, net: CellNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.arch_spec = net.arch_spec
        self.feature_info = select_feature_info(net.feature_info, out_indices)
        self.out_cells = [int(f["cell"]) for f in self.feature_info.get_dicts()]
        self.imagenet = isinstance(net, CellNetImageNet)
        self.stem = net.stem if isinstance(net, CellNetCIFAR) else nn.Identity()
        self.stem0 = net.stem0 if isinstance(net, CellNetImageNet) else nn.Identity()
        self.stem1 = net.stem1 if isinstance(net, CellNetImageNet) else nn.Identity()
        last = max(self.out_cells)
        self.cells = nn.ModuleList(net.cells[:last + 1]) if last >= 0 else nn.ModuleList()

    def forward(self, x: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        if self.imagenet:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
            if -1 in self.out_cells:
                feats.append(s0)
        else:
            s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i in self.out_cells:
                feats.append(s1)
        return feats
