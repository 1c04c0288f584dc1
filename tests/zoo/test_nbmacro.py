"""NAS-Bench-Macro: every one of the 6561 strings builds and reproduces the benchmark's counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import zoo
from zoo.nbmacro import nbmacro_spec

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))
BENCH = DATA / "nas-bench-macro" / "nas-bench-macro_cifar10.json"


@pytest.fixture(scope="module")
def benchmark() -> dict[str, dict]:
    if not BENCH.is_file():
        pytest.skip(f"NAS-Bench-Macro file not found at {BENCH} (set MZOO_SHARED_DATA to the shared data folder)")
    return json.loads(BENCH.read_text())


def test_all_6561_strings_match_benchmark_params_and_macs(benchmark: dict[str, dict]) -> None:
    assert len(benchmark) == 3 ** 8
    wrong = []
    for arch, record in benchmark.items():
        cost = zoo.count(nbmacro_spec(arch), 32)
        if (cost.params, cost.macs) != (record["params"], record["flops"]):
            wrong.append((arch, cost, record["params"], record["flops"]))
    assert not wrong, f"{len(wrong)} strings differ, e.g. {wrong[:3]}"


@pytest.mark.parametrize("arch", ["00000000", "22212220", "01201201", "10000222"])
def test_built_models_match_benchmark(benchmark: dict[str, dict], arch: str) -> None:
    model = zoo.build_model(nbmacro_spec(arch))
    cost = zoo.count_module(model, (3, 32, 32))
    assert (cost.params, cost.macs) == (benchmark[arch]["params"], benchmark[arch]["flops"])
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_published_examples_without_the_file() -> None:
    """The two counts shared/README.md quotes, checked even where the benchmark file is absent."""
    assert zoo.count(nbmacro_spec("00000000"), 32) == zoo.Cost(387_882, 7_713_280)
    assert zoo.count(nbmacro_spec("22212220"), 32) == zoo.Cost(1_985_514, 85_164_544)


@pytest.mark.parametrize("bad", ["2221222", "222122203", "22212a20", ""])
def test_bad_strings_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="NAS-Bench-Macro architecture"):
        nbmacro_spec(bad)


def test_registered_points_are_the_specs() -> None:
    assert zoo.get_arch_spec("nbmacro_22212220") == nbmacro_spec("22212220")
    assert zoo.model_info("nbmacro_22212220")["macs"] == 85_164_544
