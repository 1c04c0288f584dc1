"""NAS-Bench-Macro query API: the published facts (papers.md §4.2), the walker's counts, look-ups, ranks, bad files."""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

import zoo
from search.nasbench import NUM_ARCHS, NUM_NETWORKS, MacroRecord, NASBenchError, NASBenchMacro, network_of
from zoo.spaces import NBMacroSpace

ALL_KEYS = ["".join(p) for p in itertools.product("012", repeat=8)]


def fake_accuracy(key: str) -> float:
    """A synthetic landscape: more capacity is better, with a deterministic per-string wiggle; '22222222' is best."""
    return 60.0 + 4.0 * key.count("2") + 2.0 * key.count("1") + (int(key, 3) % 97) / 1000.0


def fake_records(accuracy: Callable[[str], float] = fake_accuracy) -> dict[str, dict]:
    """The JSON form of a synthetic benchmark over all 6561 strings."""
    out = {}
    for key in ALL_KEYS:
        mean = accuracy(key)
        runs = [mean - 0.25, mean, mean + 0.25]
        out[key] = {"test_acc": runs, "mean_acc": mean, "std": 0.25 * math.sqrt(2 / 3),
                    "params": 1000 + int(key, 3), "flops": 5000 + 7 * int(key, 3)}
    return out


@functools.lru_cache(maxsize=4)
def fake_benchmark(accuracy: Callable[[str], float] = fake_accuracy) -> NASBenchMacro:
    """A synthetic benchmark built in memory (cached: it is immutable)."""
    records = {k: MacroRecord(k, tuple(v["test_acc"]), v["mean_acc"], v["std"], v["params"], v["flops"])
               for k, v in fake_records(accuracy).items()}
    return NASBenchMacro(records, "fake")


# ----- the published file -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, mean, runs, params, macs, rank", [
    ("22212220", 93.127, (93.28, 93.33, 92.77), 1_985_514, 85_164_544, 1),
    ("22212202", 93.127, (93.28, 93.33, 92.77), 1_985_514, 85_164_544, 1),
    ("00000000", 45.363, None, 387_882, 7_713_280, NUM_ARCHS),
    ("22222222", 92.953, None, 2_932_586, 105_660_928, 21),
    ("11111111", 91.930, None, 1_588_874, 53_246_464, None),
])
def test_published_facts(bench: NASBenchMacro, key: str, mean: float, runs: tuple | None, params: int, macs: int,
                         rank: int | None) -> None:
    assert bench.accuracy(key) == pytest.approx(mean, abs=1e-3)
    if runs is not None:
        assert bench.accuracies(key) == pytest.approx(runs, abs=1e-2)
    assert (bench.params(key), bench.macs(key)) == (params, macs)
    if rank is not None:
        assert bench.rank(key) == rank


def test_published_statistics(bench: NASBenchMacro) -> None:
    accs = [bench.accuracy(k) for k in bench.keys()]
    assert len(bench) == NUM_ARCHS == 6561
    assert statistics.mean(accs) == pytest.approx(90.247, abs=1e-3)
    assert statistics.median(accs) == pytest.approx(90.99, abs=1e-2)
    assert min(bench.macs(k) for k in bench.keys()) == 7_713_280
    assert max(bench.macs(k) for k in bench.keys()) == 105_660_928


def test_3969_networks_and_equivalent_strings_share_records(bench: NASBenchMacro) -> None:
    assert bench.num_networks() == NUM_NETWORKS == 3969
    by_network: dict[str, MacroRecord] = {}
    for key in bench.keys():
        record = bench.record(key)
        first = by_network.setdefault(network_of(key), record)
        assert (record.test_acc, record.params, record.macs) == (first.test_acc, first.params, first.macs), key


def test_best_and_top_sets_count_every_equivalent_string(bench: NASBenchMacro) -> None:
    assert bench.optimal() == {"22212220", "22212202"}
    top10 = bench.top_k(10)
    assert len(top10) == 10
    # The next best distinct networks quoted in papers.md §4.2.
    assert {"22222221", "22222200", "22211222", "21222200"} <= top10
    assert all(bench.rank(k) <= 10 for k in top10)
    top1 = bench.top_fraction(0.01)
    assert all(bench.rank(k) <= 66 for k in top1)
    assert len(top1) >= 66 and top10 <= top1
    assert max(bench.rank(k) for k in top1) <= 66 < min(bench.rank(k) for k in set(bench.keys()) - top1)


def test_tuple_and_string_lookups_agree(bench: NASBenchMacro) -> None:
    assert bench.record((2, 2, 2, 1, 2, 2, 2, 0)) == bench.record("22212220")
    assert bench.arch("22212220") == (2, 2, 2, 1, 2, 2, 2, 0)
    assert (2, 2, 2, 1, 2, 2, 2, 0) in bench and "22212220" in bench and "2221222" not in bench


def test_benchmark_counts_equal_the_walker_on_a_sample(bench: NASBenchMacro) -> None:
    space, rng = NBMacroSpace(), random.Random(0)
    for key in rng.sample(list(bench.keys()), 40) + ["00000000", "22222222"]:
        spec, size = space.to_spec(bench.arch(key))
        assert zoo.count(spec, size) == zoo.Cost(bench.params(key), bench.macs(key)), key


# ----- behaviour on synthetic files ---------------------------------------------------------------------------

def test_network_of_moves_inner_identities_to_the_stage_end() -> None:
    assert network_of("22212202") == "22212220"
    assert network_of("20102010") == "20120010"
    assert network_of("00000000") == "00000000"
    with pytest.raises(KeyError, match="'2221'"):
        network_of("2221")


def test_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "nbm.json"
    path.write_text(json.dumps(fake_records()))
    loaded = NASBenchMacro.load(path)
    assert loaded.source == str(path)
    assert loaded.accuracy("22222222") == pytest.approx(fake_accuracy("22222222"))
    assert loaded.optimal() == {"22222222"} and loaded.rank("22222222") == 1
    assert loaded.macs("00000010") == 5000 + 7 * 3


def test_missing_truncated_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(NASBenchError, match="absent.json.*does not exist"):
        NASBenchMacro.load(missing)
    text = json.dumps(fake_records())
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(NASBenchError, match="truncated.json.*not valid JSON"):
        NASBenchMacro.load(truncated)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(NASBenchError, match="list.json.*JSON object"):
        NASBenchMacro.load(listed)


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d.pop("01201201"), "6560 strings"),
    (lambda d: d["01201201"].pop("flops"), "'01201201'.*missing field.*flops"),
    (lambda d: d["01201201"].update(test_acc=[90.0, 91.0]), "'01201201'.*test_acc"),
    (lambda d: d["01201201"].update(mean_acc=12.5), "'01201201'.*not the mean"),
    (lambda d: d["01201201"].update(params=-3), "'01201201'.*params"),
    (lambda d: d.update({"0120120x": d.pop("01201201")}), "'0120120x'.*not an architecture"),
])
def test_invalid_records_are_named(tmp_path: Path, corrupt: Callable[[dict], object], message: str) -> None:
    data = fake_records()
    corrupt(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NASBenchError, match=message):
        NASBenchMacro.load(path)


@pytest.mark.parametrize("bad", ["2221222", "222122203", "2221a220", (2, 2, 2), (2, 2, 2, 1, 2, 2, 2, 3),
                                 (True, 2, 2, 1, 2, 2, 2, 0)])
def test_bad_lookups_name_the_input(bad: object) -> None:
    with pytest.raises(KeyError, match="NAS-Bench-Macro architecture"):
        fake_benchmark().record(bad)  # type: ignore[arg-type]


def test_ties_share_a_rank_and_enter_top_sets_together() -> None:
    def accuracy(key: str) -> float:
        return 99.0 if key in ("22222222", "11111111") else 98.5 if key == "22222221" else fake_accuracy(key) - 20
    bench = fake_benchmark(accuracy)
    assert bench.rank("22222222") == bench.rank("11111111") == 1
    assert bench.rank("22222221") == 3
    assert bench.optimal() == {"22222222", "11111111"}
    assert bench.top_k(2) == {"22222222", "11111111"}
    assert bench.top_k(3) == {"22222222", "11111111", "22222221"}
    assert len(bench.top_fraction(0.01)) == 66  # ceil(65.61), no tie at the boundary here


def test_targets_within_a_subset() -> None:
    bench = fake_benchmark()
    subset = [k for k in ALL_KEYS if k.count("2") <= 3]
    best = max(subset, key=bench.accuracy)
    assert bench.optimal(subset) == {best}
    top = bench.top_k(10, subset)
    assert len(top) == 10 and top <= set(subset)
    assert min(bench.accuracy(k) for k in top) >= max(bench.accuracy(k) for k in set(subset) - top)
    assert len(bench.top_fraction(0.01, subset)) == -(-len(subset) // 100)
    with pytest.raises(ValueError, match="fraction"):
        bench.top_fraction(0.0)
    with pytest.raises(ValueError, match="k >= 1"):
        bench.top_k(0)
