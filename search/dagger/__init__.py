"""DAGGER: data-agnostic filter gating (papers.md §6), and pruning a trained network to a registered channel list.

Owns the gate layout of a prunable network (which convs produce each width and which BatchNorms each gate
multiplies), the :class:`Dagger` module (weights in, per-filter gates out), :class:`DaggerNetwork` (a trained
zoo model run with its gates, plus the differentiable MACs of the gated network), the joint training step
(:class:`DaggerStep`: cross-entropy + λ·R, R the distance of the soft MACs to the target), the selection of
filters to keep at a target MACs (:func:`select_channels`, also used with L1-norm and uniform scores by the
baselines), the pruned zoo model with inherited weights (:func:`prune`), and the end-to-end
:func:`run_dagger` with its result in the width searches' three-file layout (``spec.json``, ``weights.pth``,
``report.json``: :class:`search.result.SearchResult`).

Structure comes from the width spaces, so a pruned network is a channel list the zoo registers:
MobileNetV2 (BCNet's 52-entry list, CIFAR layout), ResNet-50 (53-entry list; at 32×32 it keeps its ImageNet
layout, which is acceptable for tests and benchmarks only) and HGCNet (one width per MobileNetV2 row, stem
and head, :class:`~zoo.spaces.HGCNetWidthSpace`). Widths tied by the network are one gene and share one
gate vector: residual additions, depthwise = expand, and for HGCNet a row's hidden widths, which are ``t ×``
its input width (hidden channel ``j`` of a group goes with input channel ``j // t``, the width supernet's
rule). :class:`~search.width.supernet.WidthSupernet` supplies the slicing plan, the extraction of the kept
filters' weights, and its exact MACs model: the MACs of every conv are a product of at most two widths, so
the network's MACs are a polynomial of degree ≤ 2 in each width, read off the walker-tested pairwise cost
at three widths per gene and interpolated (Lagrange) at the soft widths Σ gates. At 0/1 gates this equals
:func:`zoo.count` of the pruned spec exactly (tested), so R is the walker's MACs, not a second counter.

Verified mechanism [V]: the Dagger maps the pretrained weights to per-filter gates, pruning follows the
gates, an explicit FLOPs regulariser drives the gated network to the target. Recalled or designed here [R]:
one head per producing conv (two linear layers on each filter's weights, normalised by the layer's weight
std, summed over a tied group's producers, plus a learnt bias per filter started at ``init_logit`` so training
starts from the pretrained function); the sigmoid gate multiplies the BatchNorm output channel-wise (before
the activation); the Dagger reads the weights detached (the network learns from the task only, the
Dagger from both losses); R = |F(g)/F_target − 1| (or squared); the network and the Dagger are trained
jointly, the network by the engine's SGD and the Dagger by Adam (its per-filter gradients are tiny, so a
scale-free optimizer; DARTS does the same for its architecture parameters). Pruning keeps the
highest-gated filters under one global ranking until the MACs of the pruned network are at most the target
(within :attr:`DaggerConfig.tolerance` below it); a grouped slot (HGC) keeps the same positions in every
group, ranked by the mean gate over the groups; the kept gates are folded into their BatchNorms' affine
parameters, so for MobileNetV2 and ResNet-50 the pruned model computes exactly the gated network with the
removed filters' gates at 0 (tested). For HGCNet that is not exact: HGC's hierarchical fusion reads a
group's conv output before its BatchNorm and gate.

The method is split by concern: :mod:`search.dagger.gates` (the gate layout, the Dagger, the gated network and its
training step), :mod:`search.dagger.pruning` (scores, channel selection, folding, the pruned network) and
:mod:`search.dagger.run` (the prunable networks and the end-to-end run).
"""

from __future__ import annotations

from search.dagger.gates import PENALTIES, Dagger, DaggerConfig, DaggerNetwork, DaggerStep, GateLayout
from search.dagger.pruning import (KeepPlacement, Pruned, Selection, folded_state, gate_scores, l1_scores, prune,
                                   select_channels, uniform_scores)
from search.dagger.run import (PRUNABLE, SCORES, RunConfig, finetune, parse_macs, pretrain, prunable_space, result_of,
                               run_dagger, train_dagger)

__all__ = ["Dagger", "DaggerConfig", "DaggerNetwork", "DaggerStep", "GateLayout", "KeepPlacement", "PENALTIES",
           "PRUNABLE", "Pruned", "RunConfig", "SCORES", "Selection", "finetune", "folded_state", "gate_scores",
           "l1_scores", "parse_macs", "pretrain", "prunable_space", "prune", "result_of", "run_dagger",
           "select_channels", "train_dagger", "uniform_scores"]
