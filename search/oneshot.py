"""Single-path one-shot supernets of the block-wise spaces (NAS-Bench-Macro, MCT-NAS' ImageNet space), from zoo blocks.

Owns :class:`OneShotSupernet`: one network holding, at every searchable layer, one candidate module per op
(a :class:`ChoiceLayer`), with the stem, the fixed blocks, the head and the classifier shared. Every
candidate is the zoo's own block (:func:`zoo.blocks.block_kind` ``.build``) for the :class:`~zoo.spec.BlockSpec`
that the space's spec builder puts at that position for that op, so a path through the supernet computes
exactly what the zoo model of that architecture computes, and :meth:`OneShotSupernet.subnet` extracts it
as that zoo model (``zoo.build_model(space.to_spec(arch))``) holding the path's weights. Which blocks are
searchable is read from the specs themselves (a block position whose BlockSpec changes with the op), not
hard-coded: these spaces fix every layer's shapes by its position, which the constructor checks.

A sub-network runs with :meth:`OneShotSupernet.forward_path` (op indices) or ``forward(x, arch)`` (the space's
values). Training-mode BatchNorm updates only the statistics of the path it runs (SPOS/MCT-NAS' single-path
training); :func:`batch_statistics` runs a path with batch statistics without touching the running ones (the
MCT-NAS search stage's loss on a fixed batch). ``num_classes`` and ``input_size`` adapt a space to the data it
is trained on (e.g. the MCT-NAS ImageNet space on 32×32 CIFAR-10 with 10 classes); costs for constraints are
still those of the space's own networks (:meth:`SearchSpace.to_spec`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from common.errors import InputError
import zoo
from search.mcts import arch_to_path, path_to_arch
from zoo.spaces import Arch, InputSize, MCTNASSpace, NBMacroSpace
from zoo.blocks import block_kind
from zoo.spec import ArchSpec, BlockSpec

BlockwiseSpace = NBMacroSpace | MCTNASSpace
Path = tuple[int, ...]

__all__ = ["BlockwiseSpace", "ChoiceLayer", "OneShotSupernet", "batch_statistics", "flat_blocks"]


class ChoiceLayer(nn.Module):
    """One searchable layer: ``candidates.<j>`` is the zoo block of op ``j``; ``forward(x, op)`` runs one of them."""

    def __init__(self, candidates: Sequence[nn.Module], specs: Sequence[BlockSpec], in_chs: int) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.specs = tuple(specs)
        self.in_chs = in_chs

    def forward(self, x: Tensor, op: int) -> Tensor:
        return self.candidates[op](x)


def flat_blocks(spec: ArchSpec) -> list[tuple[int, int, int, BlockSpec]]:
    """``(stage, index, in_chs, block)`` for every stage block of ``spec``, in execution order."""
    out, chs = [], spec.stem.out_chs
    for s, stage in enumerate(spec.stages):
        for b, block in enumerate(stage):
            out.append((s, b, chs, block))
            chs = block.out_chs
    return out


class OneShotSupernet(nn.Module):
    """The single-path one-shot supernet of a block-wise ``space`` (see the module docstring).

    Args:
        space: :class:`~zoo.spaces.NBMacroSpace` or :class:`~zoo.spaces.MCTNASSpace` (any space whose
            archs pick one op per fixed-shape layer and whose specs use the ``"mobile"`` layout).
        num_classes: classifier outputs (default: the space's).
        input_size: the (C, H, W) the supernet is trained at (default: the space's); informational, the
            network runs at any size its strides allow.

    Raises:
        ValueError: the space's specs are not block-wise (a layer's shapes depend on another layer's op,
            the number of varying blocks is not the number of arch positions, or the layout is not mobile).
    """

    def __init__(self, space: BlockwiseSpace, *, num_classes: int | None = None,
                 input_size: InputSize | None = None) -> None:
        super().__init__()
        self.space = space
        self.choices: tuple[tuple[Any, ...], ...] = tuple(tuple(c) for c in space.choices())
        self.num_classes = num_classes
        refs = [self._space_spec(tuple(c[min(j, len(c) - 1)] for c in self.choices))
                for j in range(max(len(c) for c in self.choices))]
        if refs[0].layout != "mobile" or refs[0].pre_logits_chs is not None:
            raise InputError(f"one-shot supernet: space {space.name!r} builds {refs[0].layout!r}-layout specs "
                             f"(with pre_logits_chs={refs[0].pre_logits_chs}); only the mobile layout with a "
                             f"pre-pool head is supported")
        self.input_size: InputSize = tuple(input_size) if input_size is not None else space.to_spec(
            tuple(c[0] for c in self.choices))[1]  # type: ignore[assignment]
        flats = [flat_blocks(r) for r in refs]
        if len({len(f) for f in flats}) != 1:
            raise InputError(f"one-shot supernet: space {space.name!r} changes the number of blocks with the op")
        # Searchable positions: blocks that differ between the reference archs (op j at every layer).
        self.positions: tuple[tuple[int, int], ...] = tuple(
            (f0[0], f0[1]) for k, f0 in enumerate(flats[0]) if len({f[k][3] for f in flats}) > 1)
        if len(self.positions) != len(self.choices):
            raise InputError(f"one-shot supernet: space {space.name!r} has {len(self.choices)} arch positions but "
                             f"{len(self.positions)} blocks change with the op")
        self.net = zoo.build_model(refs[0])
        index = {(f[0], f[1]): k for k, f in enumerate(flats[0])}
        for layer, (s, b) in enumerate(self.positions):
            k = index[(s, b)]
            in_chs = {f[k][2] for f in flats}
            if len(in_chs) != 1:
                raise InputError(f"one-shot supernet: layer {layer} (blocks.{s}.{b}) of {space.name!r} reads "
                                 f"{sorted(in_chs)} channels depending on the ops: not a block-wise space")
            specs = [flats[min(j, len(flats) - 1)][k][3] for j in range(len(self.choices[layer]))]
            chs = in_chs.pop()
            candidates = [block_kind(spec.kind).build(chs, spec) for spec in specs]
            self.net.blocks[s][b] = ChoiceLayer(candidates, specs, chs)
        self.net.init_weights()  # the zoo's init for the candidates too (and again for the shared parts)

    # -- architectures -----------------------------------------------------------------------------------------

    def _space_spec(self, arch: Arch) -> ArchSpec:
        spec, _ = self.space.to_spec(arch)
        if not isinstance(spec, ArchSpec):
            raise InputError(f"one-shot supernet: space {self.space.name!r} does not build ArchSpecs")
        return spec if self.num_classes is None else spec.replace(num_classes=self.num_classes)

    def path_of(self, arch: Arch) -> Path:
        """The op indices of ``arch`` (the space's values), checked against the space."""
        return arch_to_path(self.choices, self.space.check(arch))

    def arch_of(self, path: Sequence[int]) -> Arch:
        """The space's arch of op indices ``path``."""
        return path_to_arch(self.choices, self._check_path(path))

    def spec_of(self, arch: Arch) -> ArchSpec:
        """The zoo spec of ``arch`` (with this supernet's ``num_classes``)."""
        return self._space_spec(self.space.check(arch))

    def _check_path(self, path: Sequence[int]) -> Path:
        if len(path) != len(self.choices) or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(c) for i, c in zip(path, self.choices)):
            raise InputError(f"{self.space.name}: a path is {len(self.choices)} op indices below "
                             f"{[len(c) for c in self.choices]}, got {tuple(path)!r}")
        return tuple(path)

    # -- forward -----------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        """Logits of the sub-network ``arch`` (the space's values, e.g. ``(2, 2, 2, 1, 2, 2, 2, 0)``)."""
        return self.forward_path(x, self.path_of(arch))

    def forward_path(self, x: Tensor, path: Sequence[int]) -> Tensor:
        """Logits of the sub-network of op indices ``path``; gradients reach that path's weights only."""
        path = self._check_path(path)
        net = self.net
        x = net.stem_pool(net.act1(net.bn1(net.conv_stem(x))))
        layer = 0
        for stage in net.blocks:
            for block in stage:
                if isinstance(block, ChoiceLayer):
                    x = block(x, path[layer])
                    layer += 1
                else:
                    x = block(x)
        x = net.act2(net.bn2(net.conv_head(x)))
        return net.forward_head(x)

    # -- extraction --------------------------------------------------------------------------------------------

    def path_state_dict(self, path: Sequence[int]) -> dict[str, Tensor]:
        """The state dict of the zoo model of ``path``: the shared tensors and each layer's chosen candidate."""
        path = self._check_path(path)
        prefixes = {f"blocks.{s}.{b}.": f"blocks.{s}.{b}.candidates.{path[i]}."
                    for i, (s, b) in enumerate(self.positions)}
        own = self.net.state_dict()
        out: dict[str, Tensor] = {}
        for key, value in own.items():
            head = ".".join(key.split(".")[:3]) + "."
            if head in prefixes:
                if key.startswith(prefixes[head]):
                    out[head + key[len(prefixes[head]):]] = value
            else:
                out[key] = value
        return out

    def subnet(self, arch: Arch) -> nn.Module:
        """The zoo model of ``arch`` holding copies of this supernet's weights for that path (same mode and device).

        Raises ``ValueError`` if the zoo's spec of ``arch`` has a block the supernet's candidate does not match.
        """
        path = self.path_of(arch)
        spec = self.spec_of(arch)
        flat = flat_blocks(spec)
        where = {(s, b): (chs, block) for s, b, chs, block in flat}
        for layer, (s, b) in enumerate(self.positions):
            choice = self.net.blocks[s][b]
            if where[(s, b)] != (choice.in_chs, choice.specs[path[layer]]):
                raise InputError(f"{self.space.name}: arch {arch} builds blocks.{s}.{b} as {where[(s, b)]}, the "
                                 f"supernet's candidate is {(choice.in_chs, choice.specs[path[layer]])}")
        device = next(self.net.parameters()).device
        model = zoo.build_model(spec).to(device)
        model.load_state_dict({k: v.detach().clone() for k, v in self.path_state_dict(path).items()}, strict=True)
        return model.train(self.training)


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in training mode with BatchNorm normalising by the batch's own statistics, leaving every
    running statistic (and the mode) as it was: momentum 0 keeps the running averages unchanged."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    was_training = model.training
    for m in norms:
        m.momentum = 0.0
    model.train()
    try:
        yield model
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        model.train(was_training)
