"""Search spaces: reproducible sampling, valid mutation, specs that walk and build, and op-key coverage."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from itertools import product

import pytest
import torch

import zoo
from zoo.spaces import (DartsSpace, GeneSpace, HGCNetWidthSpace, MobileNetV2WidthSpace, NBMacroSpace,
                           OFAMobileNetV3Space, ResNet50WidthSpace, SearchSpace, covering_rows, get_space,
                           list_spaces, op_keys, scaled_width)
from zoo.spaces.widths import BCNET_FRACTIONS
from zoo.costs import iter_ops
from zoo.darts import DARTS_V2, cifar_cellnet_spec
from zoo.hgcnet import hgcnet_spec
from zoo.mctnas import MCTNAS_A
from zoo.nbmacro import nbmacro_spec

NAMES = ["darts", "efficientnet_b0_width", "hgcnet_width", "mctnas", "metakernel", "mobilenetv2_width",
         "nbmacro", "ofa_mbv3", "resnet50_width"]
INPUT = {"darts": 32, "nbmacro": 32}  # every other space runs at 224 by default (OFA: one of its resolutions)
N_RANDOM = 200


def _space(name: str) -> SearchSpace:
    if name == "ofa_mbv3":
        pytest.importorskip("zoo.ofa", reason="zoo/ofa.py (ofa_mbv3_spec) is not in this checkout")
    return get_space(name)


@pytest.fixture(scope="module")
def keys_of() -> dict[str, dict]:
    """op_keys per space, computed once for the module (resnet50_width is the slowest, under a second)."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = op_keys(_space(name))
        return cache[name]

    return get  # type: ignore[return-value]


def _arch_keys(space: SearchSpace, arch: tuple) -> set[str]:
    spec, size = space.to_spec(arch)
    return {op.key for op in iter_ops(spec, size)}


def _missing_keys(space: SearchSpace, keys: dict | set, seed: int, n: int = N_RANDOM) -> set[str]:
    rng = random.Random(seed)
    missing: set[str] = set()
    for _ in range(n):
        missing |= _arch_keys(space, space.sample(rng)) - set(keys)
    return missing


def test_list_spaces_names_every_space() -> None:
    assert list_spaces() == NAMES
    assert all(isinstance(get_space(n), SearchSpace) and get_space(n).name == n for n in NAMES)


def test_unknown_space_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'nasnet'") as err:
        get_space("nasnet")
    assert all(n in str(err.value) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_reproducible_and_varies_with_the_seed(name: str) -> None:
    space = _space(name)
    first = [space.sample(random.Random(seed)) for seed in range(6)]
    assert first == [space.sample(random.Random(seed)) for seed in range(6)]
    assert len(set(first)) == len(first)
    assert all(isinstance(a, tuple) and all(type(v) in (int, str) for v in a) for a in first)
    hash(first[0])


@pytest.mark.parametrize("name", NAMES)
def test_to_spec_walks_at_its_input_size_and_survives_json(name: str) -> None:
    space = _space(name)
    arch = space.sample(random.Random(1))
    spec, size = space.to_spec(arch)
    if name == "ofa_mbv3":
        assert size == (3, arch[0], arch[0]) and arch[0] in space.resolutions
    else:
        assert size == (3, INPUT.get(name, 224), INPUT.get(name, 224))
    ops = list(iter_ops(spec, size))
    assert ops[-1].kind == "linear" and ops[0].in_hw == size[1:]
    assert zoo.count(spec, size).macs > 0
    again, _ = space.to_spec(tuple(json.loads(json.dumps(arch))))
    assert again == spec
    assert zoo.spec_from_json(spec.to_json()) == spec


def _smallest(space: SearchSpace) -> tuple:
    if isinstance(space, DartsSpace):
        return space.sample(random.Random(0))
    assert isinstance(space, GeneSpace)
    return tuple(c[0] for c in space.choices())


@pytest.mark.parametrize("name", NAMES)
def test_built_model_runs_at_its_input_size(name: str) -> None:
    # 224² forwards are slow here: the smallest arch of each space (the DARTS search net is small anyway).
    space = _space(name)
    spec, size = space.to_spec(_smallest(space))
    model = zoo.build_model(spec).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, *size))
    assert out.shape == (1, spec.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_mutate_changes_with_prob_one_and_keeps_with_prob_zero(name: str) -> None:
    space = _space(name)
    rng = random.Random(3)
    for _ in range(10):
        arch = space.sample(rng)
        mutated = space.mutate(arch, rng, prob=1.0)
        assert mutated != arch
        space.to_spec(mutated)  # valid: builds a spec (raises on a bad position)
        assert space.mutate(arch, rng, prob=0.0) == arch
    with pytest.raises(ValueError, match="probability"):
        space.mutate(arch, rng, prob=1.5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_archs_are_refused_with_the_position(name: str) -> None:
    space = _space(name)
    arch = list(space.sample(random.Random(0)))
    with pytest.raises(ValueError, match=name):
        space.to_spec(tuple(arch[:-1]))
    arch[1] = "bogus" if isinstance(arch[1], int) else 999
    with pytest.raises(ValueError, match="position 1"):
        space.mutate(tuple(arch), random.Random(0))


@pytest.mark.parametrize("name", NAMES)
def test_op_keys_contain_every_key_of_random_archs(name: str, keys_of) -> None:
    space = _space(name)
    keys = keys_of(name)
    assert all(op.key == key for key, op in keys.items())
    missing = _missing_keys(space, keys, seed=2024)
    assert not missing, f"{len(missing)} op keys of random {name} archs are not in op_keys, e.g. {sorted(missing)[:3]}"
    # Mutants too: search walks from archs by small steps.
    rng = random.Random(7)
    arch = space.sample(rng)
    for _ in range(50):
        arch = space.mutate(arch, rng, prob=0.2)
        assert _arch_keys(space, arch) <= keys.keys()


@pytest.mark.parametrize("name", NAMES)
def test_covering_archs_are_archs_of_the_space(name: str) -> None:
    space = _space(name)
    archs = space.covering_archs()
    assert archs and all(space.check(a) == a for a in archs)
    assert [s for s, _ in space.covering_specs()] == [space.to_spec(a)[0] for a in archs]


def test_the_completeness_check_catches_a_missing_choice() -> None:
    space = NBMacroSpace()
    archs = space.covering_archs()
    partial = set().union(*(_arch_keys(space, a) for a in archs if a != (2,) * 8))
    assert _missing_keys(space, partial, seed=0)


def test_the_completeness_check_catches_a_missing_width_pair() -> None:
    # Drop the covering rows of one (input width, output width) pair of a stage's first block: the keys
    # of the other covering rows miss it, and random archs find it.
    space = MobileNetV2WidthSpace(fractions=(0.5, 1.0))
    archs = space.covering_archs()
    kept = [a for a in archs if not (a[1] == 8 and a[2] == 48)]  # block 0 output 8 (of 16), block 1 hidden 48
    assert len(kept) < len(archs)
    partial = set().union(*(_arch_keys(space, a) for a in kept))
    assert _missing_keys(space, partial, seed=0)


def test_covering_rows_cover_every_scope_combination() -> None:
    rng = random.Random(0)
    for _ in range(20):
        sizes = [rng.randint(1, 4) for _ in range(7)]
        scopes = [tuple(rng.sample(range(7), rng.randint(1, 3))) for _ in range(5)]
        rows = covering_rows(sizes, scopes)
        assert all(0 <= v < s for row in rows for v, s in zip(row, sizes))
        for scope in scopes:
            seen = {tuple(row[g] for g in scope) for row in rows}
            assert seen == set(product(*(range(sizes[g]) for g in scope)))


def test_covering_rows_meet_the_lower_bound_on_a_chain() -> None:
    # Layers whose key reads (input width, own hidden width, own output width): 4 choices → 4³ rows.
    scopes = [(0, 1, 2), (2, 3, 4), (4, 5, 6), (6,), (0,)]
    assert len(covering_rows([4] * 7, scopes)) == 4 ** 3
    assert covering_rows([3, 2], [], fill=[0, 1]) == [(0, 1)]
    with pytest.raises(ValueError, match="gene"):
        covering_rows([2, 2], [(0, 5)])


def test_width_ties_are_bcnets_skip_lists() -> None:
    # papers.md §3.6: BCNet's skip_list for MobileNetV2 and ResNet-50 (stem = block-0 depthwise,
    # expand = depthwise, residual-added outputs).
    mbv2 = [[0, 1], [3, 4], [5, 8], [6, 7], [9, 10], [11, 14, 17], [12, 13], [15, 16], [18, 19], [20, 23, 26, 29],
            [21, 22], [24, 25], [27, 28], [30, 31], [32, 35, 38], [33, 34], [36, 37], [39, 40], [41, 44, 47],
            [42, 43], [45, 46], [48, 49]]
    assert [list(g) for g in MobileNetV2WidthSpace().tied_entries() if len(g) > 1] == mbv2
    r50 = [[3, 4, 7, 10], [13, 14, 17, 20, 23], [26, 27, 30, 33, 36, 39, 42], [45, 46, 49, 52]]
    assert [list(g) for g in ResNet50WidthSpace().tied_entries() if len(g) > 1] == r50


@pytest.mark.parametrize("name,model", [("mobilenetv2_width", "bcnet_mobilenetv2_100"),
                                        ("efficientnet_b0_width", "bcnet_efficientnet_b0"),
                                        ("resnet50_width", "bcnet_resnet50_100")])
def test_full_width_arch_is_the_registered_full_network(name: str, model: str) -> None:
    space = get_space(name)
    spec, size = space.to_spec(tuple(c[-1] for c in space.choices()))
    assert spec == zoo.get_arch_spec(model) and size == zoo.get_pretrained_cfg(model).input_size


def test_width_choices_are_fractions_rounded_as_bcnet() -> None:
    # BCNet's lists keep int(C × p) channels: 30 of 32, 22 of 24, 100 of 144 (zoo.mobilenetv2.BCNET_IMAGENET).
    assert (scaled_width(32, 0.95), scaled_width(24, 0.95), scaled_width(144, 0.7)) == (30, 22, 100)
    assert scaled_width(24, 0.25, divisor=8) == 8 and scaled_width(40, 0.75, divisor=8) == 24
    assert scaled_width(30, 0.5, divisor=8) == 15  # full width not a multiple of 8: left as is
    space = MobileNetV2WidthSpace()
    full = zoo.mobilenetv2.FULL_WIDTH
    for group, allowed in zip(space.tied_entries(), space.choices()):
        assert allowed == tuple(sorted({full[group[0]] * f for f in (0.25, 0.5, 0.75, 1.0)}))
    widths = space.width_list(space.sample(random.Random(0)))
    assert len(widths) == len(full) and widths[0] == widths[1] and widths[11] == widths[14] == widths[17]
    with pytest.raises(ValueError, match="fractions"):
        MobileNetV2WidthSpace(fractions=(0.0, 1.0))


@pytest.mark.parametrize("multiplier", [0.5, 1.0, 1.5, 2.0])
def test_hgcnet_width_uniform_arch_is_the_family_model(multiplier: float) -> None:
    space = HGCNetWidthSpace()
    ref = hgcnet_spec(multiplier)
    rows, firsts = zoo.mobilenetv2.MBV2_SETTINGS, []
    blocks = ref.blocks
    start = 0
    for _, _, n, _ in rows:
        firsts.append(blocks[start].out_chs)
        start += n
    arch = (ref.stem.out_chs, *firsts, ref.head_chs)
    assert space.to_spec(arch) == (ref, (3, 224, 224))


def test_hgcnet_width_groups_must_divide_the_channel_multiple() -> None:
    with pytest.raises(ValueError, match="groups=3"):
        HGCNetWidthSpace(groups=3)
    space = HGCNetWidthSpace(groups=8, layout="cifar")
    spec, size = space.to_spec(space.sample(random.Random(0)))
    assert size == (3, 32, 32) and all(b.groups == 8 for b in spec.blocks)


def test_named_archs_match_the_zoo() -> None:
    assert NBMacroSpace().to_spec((2, 2, 2, 1, 2, 2, 2, 0))[0] == nbmacro_spec("22212220")
    assert get_space("mctnas").to_spec(tuple(MCTNAS_A.split()))[0] == zoo.get_arch_spec("mctnas_a")
    assert "id" not in get_space("metakernel").choices()[0]
    assert "id" in dataclasses.replace(get_space("metakernel"), identity=True).choices()[0]


def test_darts_arch_of_a_genotype_gives_the_same_network() -> None:
    space = DartsSpace()
    arch = space.from_genotype(DARTS_V2)
    spec, size = space.to_spec(arch)
    ours = Counter(op.key for op in iter_ops(spec, size))
    ref = Counter(op.key for op in iter_ops(cifar_cellnet_spec(DARTS_V2, init_chs=16, layers=8), 32))
    assert ours == ref
    with pytest.raises(ValueError, match="distinct"):
        space.to_spec(arch[:1] + (1,) + arch[2:3] + (1,) + arch[4:])
    with pytest.raises(ValueError, match="'none'"):
        DartsSpace(ops=("none", "skip_connect"))


def test_ofa_arch_is_ofa_mbv3_spec() -> None:
    ofa = pytest.importorskip("zoo.ofa", reason="zoo/ofa.py (ofa_mbv3_spec) is not in this checkout")
    space = OFAMobileNetV3Space()
    rng = random.Random(5)
    arch = space.sample(rng)
    depths, kernels, expands = arch[1:6], arch[6:26], arch[26:]
    assert space.to_spec(arch) == (ofa.ofa_mbv3_spec(kernels, expands, depths), (3, arch[0], arch[0]))
    # Slots past a stage's depth do not change the network.
    shallow = (arch[0], 2, 2, 2, 2, 2) + kernels + expands
    changed = list(shallow)
    changed[6 + 3] = 7 if kernels[3] != 7 else 3  # stage 1, slot 4: unused at depth 2
    assert space.to_spec(tuple(changed))[0] == space.to_spec(shallow)[0]


@pytest.mark.parametrize("layout,lists,prefix", [("cifar", "BCNET_CIFAR", "bcnet_mobilenetv2_cifar_"),
                                                 ("imagenet", "BCNET_IMAGENET", "bcnet_mobilenetv2_")])
def test_bcnets_published_widths_are_archs_of_its_20_step_space(layout: str, lists: str, prefix: str) -> None:
    # BCNet's searched lists (papers.md §3.7) keep int(C × p) channels for p in 0.05 … 1.00 with tied widths
    # equal, so each is one arch of the 20-ratio space, whose spec is the registered model's.
    space = MobileNetV2WidthSpace(fractions=BCNET_FRACTIONS, layout=layout)
    assert len(BCNET_FRACTIONS) == 20 and BCNET_FRACTIONS[0] == 0.05 and BCNET_FRACTIONS[-1] == 1.0
    for label, widths in getattr(zoo.mobilenetv2, lists).items():
        arch = space.check(tuple(widths[g[0]] for g in space.tied_entries()))
        assert space.width_list(arch) == tuple(widths)
        assert space.to_spec(arch) == (zoo.get_arch_spec(prefix + label), (3, 32, 32) if layout == "cifar"
                                       else (3, 224, 224))
    r50 = ResNet50WidthSpace(fractions=BCNET_FRACTIONS)
    for label, widths in zoo.resnet.BCNET_RESNET50.items():
        arch = r50.check(tuple(widths[g[0]] for g in r50.tied_entries()))
        assert r50.to_spec(arch)[0] == zoo.get_arch_spec(f"bcnet_resnet50_{label}")


def test_width_spaces_take_classes_resolution_and_explicit_widths() -> None:
    cifar = MobileNetV2WidthSpace(layout="cifar", num_classes=100)
    spec, size = cifar.to_spec(tuple(c[-1] for c in cifar.choices()))
    assert size == (3, 32, 32) and spec == zoo.get_arch_spec("bcnet_mobilenetv2_cifar_100").replace(num_classes=100)
    assert cifar.choices() == MobileNetV2WidthSpace().choices()  # same list and ties in both layouts
    small = ResNet50WidthSpace(resolution=64, num_classes=10)
    spec, size = small.to_spec(small.sample(random.Random(0)))
    assert size == (3, 64, 64) and spec.num_classes == 10
    explicit = MobileNetV2WidthSpace(widths=tuple((c[0], c[-1]) for c in MobileNetV2WidthSpace().choices()))
    assert explicit.choices() == tuple((c[0], c[-1]) for c in MobileNetV2WidthSpace().choices())
    with pytest.raises(ValueError, match=r"widths\[0\]"):
        MobileNetV2WidthSpace(widths=((33,),) + ((8,),) * 24)  # wider than the stem's 32
    with pytest.raises(ValueError, match="one tuple of widths per arch position"):
        MobileNetV2WidthSpace(widths=((8,),))
    with pytest.raises(ValueError, match="layout"):
        ResNet50WidthSpace(layout="cifar")
    hgc = HGCNetWidthSpace(layout="cifar", num_classes=100, widths=((16, 32),) * 8 + ((1280,),))
    spec, _ = hgc.to_spec((32,) * 8 + (1280,))
    assert spec.num_classes == 100 and spec.stem.out_chs == 32 and hgc.choices()[0] == (16, 32)
    with pytest.raises(ValueError, match="multiples of 4"):
        HGCNetWidthSpace(widths=((18,),) * 9)


@pytest.mark.parametrize("name", ["mobilenetv2_width", "hgcnet_width"])
def test_op_keys_cover_every_layout_the_search_accepts(name: str) -> None:
    """`mzoo search width --model mobilenetv2_cifar --latency ...` prices 32×32 networks from the table of
    mobilenetv2_width: the table `mzoo lut build --space mobilenetv2_width` measures must hold their keys."""
    from zoo.spaces import layout_variants

    space = get_space(name)
    variants = layout_variants(space)
    assert [v.layout for v in variants] == ["imagenet", "cifar"] and variants[0] is space
    keys = set(op_keys(space))
    for variant in variants:
        walked = {op.key for spec, size in variant.covering_specs() for op in zoo.iter_ops(spec, size)}
        assert walked <= keys
    cifar = variants[1]
    spec, size = cifar.to_spec(cifar.sample(random.Random(0)))
    assert size == (3, 32, 32) and {op.key for op in zoo.iter_ops(spec, size)} <= keys
