"""The oracle driver and the baselines: distinct feasible queries, budgets, targets, traces, MACs/latency windows,
random search without replacement, aging evolution, and a run of every searcher on the published benchmark."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest

import zoo
from latency_tables import Entry, LatencyTable, Predictor
from search.mcts import MCTSConfig
from search.nasbench import NASBenchMacro
from search.budget import CostModel, CostWindow
from search.oracle import (SEARCHERS, BudgetReached, OracleSession, SearchTrace,
                           queries_to_reach, run_oracle_search, target_sets)
from search.random_search import random_order, random_search
from search.regularized_evolution import EvolutionConfig, mutate_one_layer, regularized_evolution
from zoo.spaces import MCTNASSpace, NBMacroSpace, op_keys

from .test_nasbench import fake_benchmark

SPACE = NBMacroSpace()
FAKE_DEVICE = "fake-cpu-t1"


def _hamming(a: tuple, b: tuple) -> int:
    return sum(x != y for x, y in zip(a, b))


def _neighbours(arch: tuple) -> list[tuple]:
    return [arch[:i] + (v,) + arch[i + 1:] for i in range(len(arch)) for v in (0, 1, 2) if v != arch[i]]


@pytest.fixture(scope="module")
def macs_window() -> CostModel:
    """MACs ≤ 40M from the walker, computed once for the module (about half of the space)."""
    feasibility = CostModel.of_windows(SPACE, [CostWindow("macs", high=40e6)])
    for arch in itertools.product((0, 1, 2), repeat=8):
        feasibility(arch)
    return feasibility


def _fake_tables(root: Path) -> None:
    """A latency table for nbmacro on a fake device: every op costs its MACs at 1 GMAC/s plus 10 µs."""
    entries = {key: Entry(op.macs * 1e-6 + 0.01, 3, macs=op.macs, params=op.params, kind=op.kind,
                          min_ms=op.macs * 1e-6 + 0.01) for key, op in op_keys(SPACE).items()}
    table = LatencyTable(device=FAKE_DEVICE, space="nbmacro", source="measured", runtime="fake", runtime_version="0",
                         threads=1, dtype="float32", batch_size=1, protocol={}, environment=None, fingerprint=None,
                         created="2025-01-01T00:00:00+00:00", input_sizes=((3, 32, 32),), entries=entries,
                         overhead=None, complete=True)
    table.save(root / FAKE_DEVICE / "nbmacro.json")


# ----- the session and the trace -------------------------------------------------------------------------------

def test_session_refuses_repeats_infeasible_archs_and_a_spent_budget() -> None:
    bench = fake_benchmark()
    feasibility = CostModel.of_windows(SPACE)
    feasibility._verdicts[(0,) * 8] = False  # a known-infeasible arch without computing a cost
    session = OracleSession(bench, 2, feasibility)
    assert session.query((2,) * 8) == bench.accuracy("22222222")
    with pytest.raises(ValueError, match="'22222222' was already queried"):
        session.query("22222222")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'00000000' is outside"):
        session.query((0,) * 8)
    session.query((1,) * 8)
    assert session.exhausted
    with pytest.raises(BudgetReached, match="'22222221'"):
        session.query((2,) * 7 + (1,))
    assert session.history == [("22222222", bench.accuracy("22222222")), ("11111111", bench.accuracy("11111111"))]


def test_queries_to_reach_and_targets() -> None:
    queries = [("00000000", 1.0), ("11111111", 2.0), ("22222222", 3.0)]
    assert queries_to_reach(queries, frozenset({"22222222", "11111111"})) == 2
    assert queries_to_reach(queries, frozenset({"01010101"})) is None
    bench = fake_benchmark()
    targets = target_sets(bench, list(bench.keys()))
    assert targets["best"] == {"22222222"} and len(targets["top10"]) == 10 and len(targets["top1pct"]) == 66
    assert targets["best"] <= targets["top10"] <= targets["top1pct"]


def test_trace_json_round_trip(tmp_path: Path) -> None:
    trace = run_oracle_search("evolution", 60, 3, oracle=fake_benchmark())
    again = SearchTrace.from_dict(json.loads(trace.to_json()))
    assert again == trace
    path = trace.save(tmp_path / "trace.json")
    assert SearchTrace.load(path) == trace
    assert trace.best() == max(trace.queries, key=lambda q: q[1])
    curve = trace.best_so_far()
    assert len(curve) == 60 and curve == sorted(curve) and curve[-1] == trace.best()[1]  # type: ignore[index]
    with pytest.raises(ValueError, match="absent.json.*does not exist"):
        SearchTrace.load(tmp_path / "absent.json")
    bad = {**trace.to_dict(), "schema_version": 99}
    with pytest.raises(ValueError, match="schema_version 99"):
        SearchTrace.from_dict(bad)


# ----- the entry point ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("searcher", SEARCHERS)
def test_every_searcher_makes_distinct_queries_up_to_the_budget(searcher: str) -> None:
    bench = fake_benchmark()
    trace = run_oracle_search(searcher, 300, 7, oracle=bench)
    keys = [k for k, _ in trace.queries]
    assert len(keys) == 300 == len(set(keys)) and trace.stopped == "budget"
    assert all(acc == bench.accuracy(k) for k, acc in trace.queries)
    assert trace.reached["best"] is None or trace.queries[trace.reached["best"] - 1][0] == "22222222"
    again = run_oracle_search(searcher, 300, 7, oracle=bench)
    other = run_oracle_search(searcher, 300, 8, oracle=bench)
    assert again.queries == trace.queries and other.queries != trace.queries


@pytest.mark.parametrize("searcher", SEARCHERS)
def test_macs_window_is_respected_and_defines_the_best(searcher: str, macs_window: CostModel) -> None:
    bench = fake_benchmark()
    inside = [k for k in bench.keys() if macs_window(bench.arch(k))]
    best_inside = max(inside, key=bench.accuracy)
    trace = run_oracle_search(searcher, 6561, 1, oracle=bench, constraints=macs_window, stop_at_best=True)
    assert trace.feasible == len(inside) and 0 < len(inside) < 6561
    assert all(zoo.count(*SPACE.to_spec(bench.arch(k))).macs <= 40e6 for k, _ in trace.queries[:50])
    assert all(macs_window(bench.arch(k)) for k, _ in trace.queries)
    assert trace.stopped == "best" and trace.queries[-1][0] == best_inside
    assert trace.optimum == bench.accuracy(best_inside) < bench.accuracy("22222222")
    assert trace.reached["top1pct"] <= trace.reached["top10"] <= trace.reached["best"] == len(trace.queries)


@pytest.mark.parametrize("searcher", SEARCHERS)
def test_a_search_that_runs_out_of_feasible_archs_says_so(searcher: str, macs_window: CostModel) -> None:
    trace = run_oracle_search(searcher, 6561, 2, oracle=fake_benchmark(), constraints=macs_window)
    assert trace.stopped == "exhausted" and len(trace.queries) == trace.feasible


def test_latency_window_from_a_table(tmp_path: Path) -> None:
    _fake_tables(tmp_path)
    predictor = Predictor.for_device(FAKE_DEVICE, tmp_path)
    archs = random.Random(0).sample(list(itertools.product((0, 1, 2), repeat=8)), 300)
    latency = {a: predictor.predict_arch(SPACE, a).total_ms for a in archs}
    median = statistics.median(latency.values())
    window = CostWindow("latency", high=median, device=FAKE_DEVICE, tables=str(tmp_path))
    feasibility = CostModel.of_windows(SPACE, [window])
    assert [feasibility(a) for a in archs] == [ms <= median for ms in latency.values()]
    assert [feasibility.cost(0, a) for a in archs[:20]] == [latency[a] for a in archs[:20]]
    assert window.describe() == f"latency on fake-cpu-t1 (ms) ≤ {median:g}"
    assert CostWindow.from_dict(window.to_dict()) == window


@pytest.mark.slow
def test_latency_constrained_search_from_a_table(tmp_path: Path) -> None:
    """A whole run under a latency window predicts all 6561 archs twice (about 20 s on one core)."""
    _fake_tables(tmp_path)
    predictor = Predictor.for_device(FAKE_DEVICE, tmp_path)
    latency = {a: predictor.predict_arch(SPACE, a).total_ms for a in itertools.product((0, 1, 2), repeat=8)}
    median = statistics.median(latency.values())
    window = CostWindow("latency", high=median, device=FAKE_DEVICE, tables=str(tmp_path))
    bench = fake_benchmark()
    trace = run_oracle_search("mcts", 400, 0, oracle=bench, constraints=[window])
    assert trace.feasible == sum(ms <= median for ms in latency.values())
    assert all(latency[bench.arch(k)] <= median for k, _ in trace.queries)
    best_inside = max((k for k in bench.keys() if latency[bench.arch(k)] <= median), key=bench.accuracy)
    assert trace.optimum == bench.accuracy(best_inside)
    assert trace.constraints == (window.to_dict(),)


def test_bad_arguments_are_named() -> None:
    bench = fake_benchmark()
    with pytest.raises(ValueError, match="unknown searcher 'anneal'.*mcts, mcts-hier, random, evolution"):
        run_oracle_search("anneal", 10, 0, oracle=bench)
    with pytest.raises(ValueError, match="budget.*0"):
        run_oracle_search("random", 0, 0, oracle=bench)
    with pytest.raises(ValueError, match="'evolution' takes a EvolutionConfig config, got MCTSConfig"):
        run_oracle_search("evolution", 10, 0, oracle=bench, config=MCTSConfig())
    nothing = CostModel.of_windows(SPACE)
    nothing._verdicts.update({a: False for a in itertools.product((0, 1, 2), repeat=8)})
    with pytest.raises(ValueError, match="no architecture.*unconstrained"):
        run_oracle_search("random", 10, 0, oracle=bench, constraints=nothing)
    with pytest.raises(ValueError, match="latency window needs the device"):
        CostWindow("latency", high=1.0)
    with pytest.raises(ValueError, match="empty"):
        CostWindow("macs", low=2.0, high=1.0)
    with pytest.raises(ValueError, match="unknown constraint metric 'watts'"):
        CostWindow("watts", high=1.0)


# ----- random search and regularised evolution -------------------------------------------------------------------

def test_random_order_is_a_uniform_permutation() -> None:
    order = list(random_order(SPACE, random.Random(0)))
    assert len(order) == 6561 == len(set(order))
    assert order != list(random_order(SPACE, random.Random(1)))
    first = Counter(next(random_order(SPACE, random.Random(seed)))[0] for seed in range(300))
    assert all(70 <= first[v] <= 130 for v in (0, 1, 2)), first  # 100 expected each (sd 8)
    large = random_order(MCTNASSpace(), random.Random(0))  # 7^21 archs: rejection of repeats instead
    assert len({next(large) for _ in range(500)}) == 500


def test_random_search_covers_the_space_once() -> None:
    session = OracleSession(fake_benchmark(), 10_000, CostModel.of_windows(SPACE))
    random_search(session, random.Random(0))
    assert len(session.history) == 6561 == len({k for k, _ in session.history})


def test_one_layer_mutation() -> None:
    rng = random.Random(0)
    children = [mutate_one_layer(SPACE, (2,) * 8, rng) for _ in range(400)]
    assert all(_hamming(c, (2,) * 8) == 1 for c in children)
    assert len(set(children)) == 16  # every neighbour is reachable


def test_aging_evolution_mutates_a_recent_tournament_winner() -> None:
    """Parents are members of the last P queries (aging), children are one layer away (or a fallback)."""
    config = EvolutionConfig(population=10, sample=200)  # S ≫ P: the tournament winner is the population's best
    bench = fake_benchmark()
    session = OracleSession(bench, 400, CostModel.of_windows(SPACE))
    regularized_evolution(session, random.Random(3), config)
    archs = [bench.arch(k) for k, _ in session.history]
    seen: set[tuple] = set(archs[:10])
    fallbacks = 0
    for i in range(10, len(archs)):
        population = list(zip(archs[i - 10:i], (a for _, a in session.history[i - 10:i])))
        best = max(population, key=lambda m: m[1])[0]
        if _hamming(archs[i], best) != 1:
            assert all(n in seen for n in _neighbours(best)), i  # only when every neighbour was queried
            fallbacks += 1
        seen.add(archs[i])
    assert fallbacks < 40
    first = [k for k, _ in session.history[:10]]
    assert len(set(first)) == 10


def test_evolution_with_the_spaces_mutate() -> None:
    session = OracleSession(fake_benchmark(), 100, CostModel.of_windows(SPACE))
    regularized_evolution(session, random.Random(4), EvolutionConfig(mutation_prob=0.3))
    assert len(session.history) == 100 == len({k for k, _ in session.history})
    with pytest.raises(ValueError, match="EvolutionConfig.sample"):
        EvolutionConfig(sample=0)
    with pytest.raises(ValueError, match="mutation_prob"):
        EvolutionConfig(mutation_prob=0.0)


# ----- the published benchmark -----------------------------------------------------------------------------------

@pytest.mark.parametrize("searcher", SEARCHERS)
def test_every_searcher_reaches_the_published_best(bench: NASBenchMacro, searcher: str) -> None:
    trace = run_oracle_search(searcher, 6561, 0, oracle=bench, stop_at_best=True)
    assert trace.stopped == "best" and trace.queries[-1][0] in {"22212220", "22212202"}
    assert trace.optimum == pytest.approx(93.127, abs=1e-3) and trace.targets["best"] == 2
    assert trace.reached["top1pct"] <= trace.reached["top10"] <= trace.reached["best"] == len(trace.queries)
