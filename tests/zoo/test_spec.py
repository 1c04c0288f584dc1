"""ArchSpec: validation, JSON round trip, schema versioning."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.hgcnet import hgcnet_spec
from zoo.spec import ArchSpec, BlockSpec, SESpec, make_divisible


def test_json_round_trip_is_identity() -> None:
    spec = hgcnet_spec(1.5, "cifar", groups=2)
    text = spec.to_json(indent=2)
    assert json.loads(text)["schema_version"] == zoo.SCHEMA_VERSION
    assert ArchSpec.from_json(text) == spec
    assert ArchSpec.from_dict(spec.to_dict()).to_json() == spec.to_json()


def test_spec_is_frozen_and_hashable() -> None:
    spec = hgcnet_spec()
    with pytest.raises(Exception):
        spec.num_classes = 3  # type: ignore[misc]
    assert hash(spec) == hash(hgcnet_spec())
    assert spec.replace(num_classes=3).num_classes == 3 and spec.num_classes == 1000


@pytest.mark.parametrize("bad, message", [
    (dict(stride=3), "stride"), (dict(kernel=4), "kernel"), (dict(out_chs=0), "out_chs"),
    (dict(act="gelu2"), "activation"), (dict(groups=0), "groups"), (dict(expand=0), "expand"),
])
def test_bad_block_fields_are_named(bad: dict, message: str) -> None:
    fields = dict(kind="conv", out_chs=8) | bad
    with pytest.raises(ValueError, match=message):
        BlockSpec(**fields)


def test_unknown_schema_version_is_refused() -> None:
    data = hgcnet_spec().to_dict() | {"schema_version": 999}
    with pytest.raises(ValueError, match="schema_version 999"):
        ArchSpec.from_dict(data)


def test_unknown_and_missing_fields_are_named() -> None:
    data = hgcnet_spec().to_dict()
    with pytest.raises(ValueError, match="unknown fields.*'colour'"):
        ArchSpec.from_dict(data | {"colour": "red"})
    data["stages"][0][0]["dilation"] = 2
    with pytest.raises(ValueError, match="dilation"):
        ArchSpec.from_dict(data)
    missing = hgcnet_spec().to_dict()
    del missing["stem"]
    with pytest.raises(ValueError, match="stem"):
        ArchSpec.from_dict(missing)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_bad_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="ArchSpec"):
        ArchSpec.from_json(text)


def test_empty_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        ArchSpec("x", BlockSpec("conv", 8), ((),))


def test_unknown_block_kind_fails_at_build_and_cost() -> None:
    spec = ArchSpec("x", BlockSpec("conv", 8), ((BlockSpec("warp_drive", 8),),))
    with pytest.raises(ValueError, match="unknown block kind 'warp_drive'"):
        zoo.build_model(spec)
    with pytest.raises(ValueError, match="warp_drive"):
        zoo.count(spec, 32)


@pytest.mark.parametrize("value, expected", [(32 * 0.5, 16), (24 * 0.75, 24), (1280 * 1.5, 1920), (4, 8), (100, 104)])
def test_make_divisible(value: float, expected: int) -> None:
    assert make_divisible(value, 8) == expected


def test_se_round_trips_and_validates() -> None:
    spec = zoo.get_arch_spec("mctnas_a")
    assert any(b.se for b in spec.blocks)
    assert ArchSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="gate"):
        SESpec(gate="tanh")
    data = spec.to_dict()
    data["stages"][1][0]["se"] = {"ratio": 0.25, "colour": 1}
    with pytest.raises(ValueError, match="SESpec"):
        ArchSpec.from_dict(data)


def test_schema_v1_files_still_read() -> None:
    data = hgcnet_spec().to_dict()
    data["schema_version"] = 1
    for stage in data["stages"]:
        for block in stage:
            del block["se"]
    del data["stem"]["se"]
    assert ArchSpec.from_dict(data) == hgcnet_spec()


def test_schema_v2_files_still_read() -> None:
    data = hgcnet_spec().to_dict()
    data["schema_version"] = 2
    del data["layout"], data["stem_pool"]
    for block in [data["stem"]] + [b for stage in data["stages"] for b in stage]:
        del block["inner_chs"]
    assert ArchSpec.from_dict(data) == hgcnet_spec()


def test_resnet_fields_round_trip_and_validate() -> None:
    spec = zoo.get_arch_spec("bcnet_resnet50_2g")
    assert (spec.layout, spec.stem_pool, spec.blocks[0].inner_chs) == ("resnet", "max", (19, 64))
    assert ArchSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown layout 'vgg'"):
        spec.replace(layout="vgg")
    with pytest.raises(ValueError, match="stem_pool"):
        spec.replace(stem_pool="avg")
    with pytest.raises(ValueError, match="inner_chs"):
        BlockSpec("bottleneck", 256, inner_chs=(64, 0))
