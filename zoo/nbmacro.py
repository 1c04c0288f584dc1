"""NAS-Bench-Macro: the 3^8 CIFAR-10 macro search space of MCT-NAS, as specs.

Benchmark: Su et al., "Prioritized Architecture Sampling with Monte-Carlo Tree Search", CVPR 2021
(arXiv:2103.11922), data and training code in xiusu/NAS-Bench-Macro (papers.md §4.2, [V]).

An architecture is an 8-character string; character i is the op of searchable layer i: ``0``
identity (1x1 conv stride 2 + BN where the shape changes, else a true identity), ``1`` inverted
residual k3 e3, ``2`` inverted residual k5 e6 (ReLU, no SE). Stages of [2, 3, 3] layers; each stage
starts with stride 2 and doubles channels (64, 128, 256) after a 3x3 stem to 32 (stride 1); head
1x1 conv to 1280, pool, linear to 10. Every one of the 6561 strings builds with
:func:`nbmacro_spec`; the walker's params/MACs equal the benchmark's ``params``/``flops`` for all of
them (``tests/zoo/test_nbmacro.py``). A few notable points are registered as ``nbmacro_<string>``.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import InputError
from .pretrained import CIFAR10_MEAN, CIFAR10_STD, PretrainedCfg
from .registry import register_model
from .spec import ArchSpec, BlockSpec

NUM_LAYERS = 8
STAGE_DEPTHS = (2, 3, 3)
STAGE_CHANNELS = (64, 128, 256)
OPS = {"0": dict(kind="skip"), "1": dict(kind="ir", kernel=3, expand=3.0), "2": dict(kind="ir", kernel=5, expand=6.0)}
# Weights trained here with the benchmark's own recipe (`mzoo train nbmacro_<arch>`; bench/nbmacro_train.py, whose
# table is in BENCHMARKS.md), the last epoch's, as zoo/weights/nbmacro_<arch>.pth with the run's report (settings,
# per-epoch test top-1) beside it as .json. The sha256 pins each file; `bench/nbmacro_train.py --ship` copies a
# finished run in and prints its value for this table.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAINED_SHA256: dict[str, str] = {"00000000": "937939a0280de615752826242cabfcd834220ae658a3935deb48f8afc36e581e",
                                 "00000010": "373c2830194a3956e5a42ebe8993446c943f4a19e65f3fecd4469d7f50f08964",
                                 "00000100": "ef305227d7699b955189e7c3ad39a0b3e1c016494fa9499344b31d6641957199",
                                 "10000000": "98a958d7530bf58b40b6dde7ab4d9f60aa70c61306b42eecb50ed9b66aea250a"}


def nbmacro_spec(arch: str) -> ArchSpec:
    """The spec of a NAS-Bench-Macro architecture string such as ``"22212220"``."""
    if len(arch) != NUM_LAYERS or any(c not in OPS for c in arch):
        raise InputError(f"NAS-Bench-Macro architecture must be {NUM_LAYERS} characters of 0/1/2, got {arch!r}")
    ops = iter(arch)
    stages = []
    for depth, chs in zip(STAGE_DEPTHS, STAGE_CHANNELS):
        stages.append(tuple(BlockSpec(out_chs=chs, stride=2 if i == 0 else 1, act="relu", **OPS[next(ops)])
                            for i in range(depth)))
    return ArchSpec(family="nbmacro", stem=BlockSpec("conv", 32, 1, 3, act="relu"), stages=tuple(stages),
                    head_chs=1280, head_act="relu", num_classes=10)


def _cfg(note: str, arch: str | None = None) -> PretrainedCfg:
    """The CIFAR cfg; with the shipped weights' file and sha256 when ``arch`` was trained here."""
    sha256 = TRAINED_SHA256.get(arch) if arch is not None else None
    cfg = PretrainedCfg(input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0, interpolation="bilinear",
                        mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10, license="apache-2.0",
                        paper_name="Prioritized Architecture Sampling with Monto-Carlo Tree Search (NAS-Bench-Macro)",
                        paper_ids="arXiv:2103.11922", notes=note)
    return cfg.replace(file=str(WEIGHTS_DIR / f"nbmacro_{arch}.pth"), sha256=sha256) if sha256 else cfg


@register_model(_cfg("best of the benchmark: 93.13 % mean CIFAR-10 test accuracy"))
def nbmacro_22212220() -> ArchSpec:
    """NAS-Bench-Macro's best architecture."""
    return nbmacro_spec("22212220")


@register_model(_cfg("every layer MB6 k5: 92.95 % (rank 21 of 6561)"))
def nbmacro_22222222() -> ArchSpec:
    """NAS-Bench-Macro, every layer MB6 k5 (the largest network)."""
    return nbmacro_spec("22222222")


@register_model(_cfg("every layer MB3 k3: 91.93 %"))
def nbmacro_11111111() -> ArchSpec:
    """NAS-Bench-Macro, every layer MB3 k3."""
    return nbmacro_spec("11111111")


@register_model(_cfg("every layer identity (the smallest network): 45.36 %", "00000000"))
def nbmacro_00000000() -> ArchSpec:
    """NAS-Bench-Macro, every layer identity (stride-2 layers become 1x1 conv + BN)."""
    return nbmacro_spec("00000000")


@register_model(_cfg("identity everywhere but MB3 k3 at stage 3's first layer: 70.42 %", "00000100"))
def nbmacro_00000100() -> ArchSpec:
    """NAS-Bench-Macro, one inverted residual (MB3 k3, stride 2) in an otherwise identity network."""
    return nbmacro_spec("00000100")


@register_model(_cfg("MB3 k3 at stage 3's second layer, identity elsewhere: 64.22 %", "00000010"))
def nbmacro_00000010() -> ArchSpec:
    """NAS-Bench-Macro, one inverted residual (MB3 k3, stride 1) at stage 3's second layer, identity elsewhere."""
    return nbmacro_spec("00000010")


@register_model(_cfg("MB6 k5 at stage 3's first layer, identity elsewhere: 75.89 %", "00000200"))
def nbmacro_00000200() -> ArchSpec:
    """NAS-Bench-Macro, one inverted residual (MB6 k5, stride 2) at stage 3's first layer, identity elsewhere."""
    return nbmacro_spec("00000200")


@register_model(_cfg("MB3 k3 at stage 1's first layer, identity elsewhere: 57.25 %", "10000000"))
def nbmacro_10000000() -> ArchSpec:
    """NAS-Bench-Macro, one inverted residual (MB3 k3, stride 2) at stage 1's first layer, identity elsewhere."""
    return nbmacro_spec("10000000")
