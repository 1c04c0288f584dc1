"""ArchSpec: validation, JSON round trip, schema versioning."""

from __future__ import annotations

import json

import pytest

import zoo
from common.errors import InputError
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


def _mobilenetv2_dict() -> dict:
    return zoo.get_arch_spec("bcnet_mobilenetv2_100").to_dict()


@pytest.mark.parametrize("path, value, message", [
    (("stages", 1, 0, "out_chs"), 20_000, r"BlockSpec\(ir\): out_chs must be an int in \[1, 8,192\], got 20000"),
    (("stages", 1, 0, "out_chs"), 10**9, "out_chs must be an int in"),
    (("stages", 1, 0, "out_chs"), "16", "out_chs must be an int in .* got '16'"),
    (("stages", 1, 0, "kernel"), 10_001, r"kernel must be an int in \[1, 15\], got 10001"),
    (("stages", 1, 0, "expand"), float("inf"), r"expand must be a finite number in \(0, 16\], got inf"),
    (("stages", 1, 0, "expand"), float("nan"), "expand must be a finite number"),
    (("stages", 1, 0, "mid_chs"), 9000, "mid_chs must be an int in"),
    (("stages", 1, 0, "groups"), 10**6, "groups must be an int in"),
    (("head_chs",), 40_000, r"ArchSpec\(mobilenetv2\): head_chs must be an int in \[1, 8,192\], got 40000"),
    (("num_classes",), 400_000, r"num_classes must be an int in \[0, 100,000\], got 400000"),
    (("in_chans",), 10**6, "in_chans must be an int in"),
])
def test_a_spec_file_out_of_bounds_is_refused_naming_the_field(path: tuple, value: object, message: str) -> None:
    data = _mobilenetv2_dict()
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    text = json.dumps(data)  # Infinity and NaN as Python's json writes (and reads) them
    with pytest.raises(InputError, match=message):
        zoo.spec_from_json(text)


def test_fields_within_bounds_that_multiply_past_the_parameter_bound_are_refused_before_building(monkeypatch) -> None:
    import torch

    def no_allocation(*args, **kwargs):
        raise AssertionError("a layer was built")

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", no_allocation)
    data = _mobilenetv2_dict() | {"feature_stages": None, "head_chs": None,
                                  "stages": [[{"kind": "conv", "out_chs": 8192, "kernel": 15}] * 3]}
    with pytest.raises(InputError, match=r"has [\d,]+ parameters, more than 200,000,000 \(.* GiB"):
        zoo.build_model(zoo.spec_from_json(json.dumps(data)))
    wide = _mobilenetv2_dict()
    wide["stages"][1][0] |= {"expand": 16.0, "mid_chs": None}
    wide["stages"][0][-1]["out_chs"] = 4096
    with pytest.raises(InputError, match=r"stages\[1\]\[0\] has a hidden width of 4096 x expand 16"):
        zoo.spec_from_json(json.dumps(wide))


def test_cell_networks_are_bounded() -> None:
    spec = zoo.get_arch_spec("darts_v2_cifar")
    for changes, message in ((dict(init_chs=4096), "init_chs must be an int in"), (dict(layers=10**5), "layers"),
                             (dict(stem_multiplier=1000), "stem_multiplier"), (dict(num_classes=10**6), "num_classes"),
                             (dict(drop_rate=float("inf")), "drop_rate must be a finite number")):
        with pytest.raises(InputError, match=message):
            spec.replace(**changes)


def test_every_registered_model_is_well_inside_the_bounds() -> None:
    from zoo.costs import check_size
    from zoo.spec import MAX_PARAMS

    for name in zoo.list_models():
        spec = zoo.get_arch_spec(name)
        assert zoo.spec_from_json(spec.to_json()) == spec
        assert zoo.count(spec, 224).params < MAX_PARAMS / 5
        check_size(spec)


def test_an_unbounded_spec_is_one_line_at_the_command_line(tmp_path, capsys) -> None:
    from mzoo.cli import main

    data = _mobilenetv2_dict()
    data["stages"][1][0]["expand"] = float("inf")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    assert main(["predict", "--spec", str(path), "--device", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mzoo: error:") and err.count("\n") == 1 and "expand must be a finite number" in err
