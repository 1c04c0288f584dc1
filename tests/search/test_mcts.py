"""MCT-NAS' tree (papers.md §4.4): UCT, the L̃/L reward and its warm-up quirk, G, softmax sampling, removal,
hierarchical selection, the training-stage phases, checkpointing, and MCTS against an oracle."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from collections import Counter

import pytest

from search.mcts import (ORACLE_CONFIG, MCTree, MCTSampler, MCTSConfig, RewardTracker, arch_to_path, mcts_search,
                         path_to_arch, space_choices, uct)
from search.budget import CostModel
from search.oracle import OracleSession
from zoo.spaces import MCTNASSpace

from .test_nasbench import fake_benchmark

DRAWS = 4000


def test_uct_formula() -> None:
    # W/n + C1·sqrt(ln N / (n + 0.1)) + C2·G
    assert uct(2.0, 4, 10, 0.1, 0.2, 0.5) == pytest.approx(0.5 + 0.1 * math.sqrt(math.log(10) / 4.1) + 0.1)
    # An unvisited child: W/n := 0, and the +0.1 keeps the exploration term finite.
    assert uct(0.0, 0, 10, 0.1, 0.2, 0.5) == pytest.approx(0.1 * math.sqrt(math.log(10) / 0.1) + 0.1)
    # A parent with no visits (or one: ln 1 = 0) explores nothing.
    assert uct(0.0, 0, 0, 0.1, 0.2, 0.5) == pytest.approx(0.1)
    assert uct(3.0, 1, 1, 0.1, 0.0, 0.0) == pytest.approx(3.0)


def test_reward_warm_up_quirk_and_frozen_ratio() -> None:
    tracker = RewardTracker(beta=0.96)
    rewards = [tracker.update(2.0) for _ in range(50)]
    # L̃ starts at 0: with a constant loss the k-th reward is 1 − β^k (0.04 first, ≈ 0.87 after 50).
    assert rewards == pytest.approx([1 - 0.96 ** k for k in range(1, 51)])
    assert tracker.ratio(1.0) == pytest.approx(2 * (1 - 0.96 ** 50))
    assert tracker.updates == 50  # ratio() did not update
    lower = tracker.update(1.0)  # a batch below the average earns more than its predecessors
    assert lower > rewards[-1]
    no_quirk = RewardTracker(beta=0.96, start=None)
    assert no_quirk.update(2.0) == 1.0 and no_quirk.update(1.0) == pytest.approx((0.96 * 2 + 0.04) / 1.0)


@pytest.mark.parametrize("loss", [0.0, -1.0, float("nan"), float("inf"), True])
def test_reward_refuses_bad_losses(loss: float) -> None:
    with pytest.raises(ValueError, match="loss"):
        RewardTracker().update(loss)


def test_update_backs_up_the_path_and_node_communication() -> None:
    tree = MCTree((3, 2, 3))
    tree.update((1, 0, 2), 0.5)
    tree.update((1, 1, 2), 2.0)
    assert tree.visits() == 2 and tree.reward() == pytest.approx(2.5)
    assert tree.visits((1,)) == 2 and tree.visits((1, 0)) == 1 and tree.visits((1, 0, 2)) == 1
    assert tree.reward((1, 1, 2)) == 2.0 and tree.visits((0,)) == 0
    g1 = 0.04 * 0.5
    assert tree.G[0] == pytest.approx([0.0, 0.96 * g1 + 0.04 * 2.0, 0.0])
    assert tree.G[1] == pytest.approx([g1, 0.04 * 2.0])
    assert tree.G[2] == pytest.approx([0.0, 0.0, 0.96 * g1 + 0.04 * 2.0])
    scores = tree.scores((1,))
    n_parent = 2
    assert scores[0] == pytest.approx(uct(0.5, 1, n_parent, 0.1, 0.2, tree.G[1][0]))
    assert scores[1] == pytest.approx(uct(2.0, 1, n_parent, 0.1, 0.2, tree.G[1][1]))
    assert tree.size == 2
    with pytest.raises(ValueError, match="3 op indices"):
        tree.update((1, 2, 0), 1.0)


def _tree_with_scores(tau: float) -> MCTree:
    # One layer, C1 = C2 = 0: UCT is W/n = 0.10, 0.05 and 0 (unvisited).
    tree = MCTree((3,), MCTSConfig(c1=0.0, c2=0.0, tau=tau))
    tree.update((0,), 0.10)
    tree.update((1,), 0.05)
    return tree


def test_prioritized_sampling_is_softmax_of_uct_over_tau() -> None:
    tree, rng = _tree_with_scores(tau=0.05), random.Random(0)
    counts = Counter(tree.sample(rng) for _ in range(DRAWS))
    weights = [math.exp(2.0), math.exp(1.0), 1.0]
    for leaf, w in zip([(0,), (1,), (2,)], weights):
        assert counts[leaf] / DRAWS == pytest.approx(w / sum(weights), abs=0.03)
    # The official τ = 0.0025 makes a gap of 0.05 a near-certain choice.
    sharp = _tree_with_scores(tau=0.0025)
    assert {sharp.sample(rng) for _ in range(500)} == {(0,)}


def test_removed_leaves_are_never_drawn() -> None:
    tree, rng = MCTree((2, 2)), random.Random(1)
    tree.update((0, 0), 5.0)  # the best-looking subtree...
    tree.remove((0, 0))
    tree.remove((0, 1))  # ...is fully removed: its statistics stay, it is not drawn
    assert tree.remaining == 2 and tree.is_removed((0, 1)) and not tree.is_removed((1, 0))
    # Only (1, 0) is ever drawn: it shares op 0 at layer 1 with (0, 0), whose reward G[1][0] remembers.
    assert {tree.sample(rng) for _ in range(200)} == {(1, 0)}
    assert tree.visits((0,)) == 1
    tree.remove((0, 1))
    assert tree.remaining == 2  # removing twice changes nothing
    tree.remove((1, 0))
    tree.remove((1, 1))
    assert tree.remaining == 0 and tree.sample(rng) is None and tree.sample_uniform(rng) is None


def test_uniform_sampling_is_uniform_over_remaining_leaves() -> None:
    tree, rng = MCTree((2, 3)), random.Random(2)
    tree.remove((0, 0))
    tree.remove((0, 1))
    counts = Counter(tree.sample_uniform(rng) for _ in range(DRAWS))
    # Per-layer uniform sampling would give (0, 2) half of the draws; over the 4 remaining leaves it is 1/4.
    assert set(counts) == {(0, 2), (1, 0), (1, 1), (1, 2)}
    assert all(c / DRAWS == pytest.approx(0.25, abs=0.03) for c in counts.values())


def _trained_tree(choices: tuple[int, ...], leaves: list[tuple[int, ...]], config: MCTSConfig) -> MCTree:
    tree = MCTree(choices, config)
    for leaf in leaves:
        tree.update(leaf, 1.0 + sum(leaf) / 10)
    return tree


def test_hierarchical_selection_official_mode_walks_existing_nodes_only() -> None:
    config = MCTSConfig(n_thrd=3)
    existing = [(0, 0), (1, 1), (1, 2), (2, 2)]
    tree, rng = _trained_tree((3, 3), existing, config), random.Random(3)
    evaluated: list[tuple[int, ...]] = []

    def evaluate(path: tuple[int, ...]) -> float:
        evaluated.append(path)
        return 1.0 + sum(path) / 10

    leaf = tree.hierarchical_select(rng, evaluate)
    assert set(evaluated) <= set(existing)  # node updates never expand the tree
    assert tree.visits() >= 3 * 3  # the root was refined to n_thrd visits per op before descending
    assert tree.visits(leaf[:1]) >= 3 * 3
    # C1 = 0, τ = 0.0025: the descent exploits; (2, 2) has the highest rewards.
    assert leaf == (2, 2)


def test_hierarchical_selection_drops_leaves_outside_the_window() -> None:
    tree, rng = _trained_tree((2, 2), [(0, 0), (0, 1), (1, 0), (1, 1)], MCTSConfig(n_thrd=2)), random.Random(4)
    leaf = tree.hierarchical_select(rng, lambda p: None if p == (1, 1) else 1.0 + sum(p))
    assert tree.is_removed((1, 1)) and leaf != (1, 1)
    assert leaf == (1, 0)  # the best leaf left inside the window


def test_hierarchical_selection_expands_from_scratch_and_never_repeats() -> None:
    tree, rng = MCTree((3, 3, 3), MCTSConfig(n_thrd=1)), random.Random(5)
    evaluated: list[tuple[int, ...]] = []

    def evaluate(path: tuple[int, ...]) -> float:
        evaluated.append(path)
        return 1.0 + path.count(2)

    # A last-layer node needs n_thrd × 3 visits but has 3 leaves: with every evaluated leaf removed, node
    # updates query all of them and the descent restarts, until no leaf is left.
    assert tree.hierarchical_select(rng, evaluate, expand=True, remove_evaluated=True) is None
    assert sorted(evaluated) == sorted(itertools.product(range(3), repeat=3))
    # Exploitation: after the root's rollouts, subtrees of the best first op are emptied before the worst's.
    order = {p: i for i, p in enumerate(evaluated)}
    mean_position = [statistics.mean(i for p, i in order.items() if p[0] == op) for op in range(3)]
    assert mean_position[2] < mean_position[0]
    assert MCTree((2, 2)).hierarchical_select(rng, lambda p: None, expand=True) is None  # all outside


def test_sampler_phases_follow_the_official_counters() -> None:
    sampler, rng = MCTSampler((3, 3), MCTSConfig(warmup_iters=3, mct_start_iter=5)), random.Random(7)
    learnt = []
    for _ in range(7):
        draw = sampler.sample(rng)
        assert draw is not None
        learnt.append((draw.uniform, sampler.observe(draw.path, 2.0) is not None))
    # Draws 1-5 are uniform; the counter is incremented before the warm-up check, so the 3rd draw is learnt.
    assert learnt == [(True, False), (True, False), (True, True), (True, True), (True, True),
                      (False, True), (False, True)]
    assert sampler.tree.visits() == 5 and sampler.rewards.updates == 5


def test_sampler_window_retries_then_keeps_the_last_draw() -> None:
    config = MCTSConfig(mct_start_iter=1, max_tries=7)
    sampler, rng = MCTSampler((3, 3), config), random.Random(8)
    first = sampler.sample(rng, accept=lambda p: False)
    assert first is not None and first.uniform and not first.accepted and first.tries == 1  # uniform: no window
    draw = sampler.sample(rng, accept=lambda p: False)
    assert draw is not None and not draw.accepted and draw.tries == 7
    inside = sampler.sample(rng, accept=lambda p: p == (2, 1), remove_rejected=True)
    assert inside is not None and inside.path == (2, 1) and inside.accepted
    assert sampler.tree.remaining == 9 - (inside.tries - 1)  # every rejected draw was removed


def test_state_dict_round_trip_resumes_identically() -> None:
    def run(sampler: MCTSampler, rng: random.Random, steps: int) -> list[tuple[int, ...]]:
        paths = []
        for _ in range(steps):
            draw = sampler.sample(rng)
            assert draw is not None
            sampler.observe(draw.path, 1.0 + 0.3 * draw.path.count(0))
            paths.append(draw.path)
        return paths

    config = MCTSConfig(warmup_iters=2, mct_start_iter=10)
    original, rng = MCTSampler((3, 2, 4), config), random.Random(9)
    run(original, rng, 25)
    original.tree.remove((0, 0, 0))
    state = json.loads(json.dumps(original.state_dict()))
    resumed = MCTSampler((3, 2, 4), config)
    resumed.load_state_dict(state)
    rng_state = rng.getstate()
    expected = run(original, rng, 40)
    rng.setstate(rng_state)
    assert run(resumed, rng, 40) == expected
    assert resumed.tree.G == original.tree.G and resumed.rewards.tilde == original.rewards.tilde
    with pytest.raises(ValueError, match="choices"):
        MCTSampler((3, 3, 4)).load_state_dict(state)


def test_search_stage_returns_distinct_leaves_inside_the_window() -> None:
    sampler, rng = MCTSampler((3, 3, 3), MCTSConfig(n_thrd=1, mct_start_iter=200)), random.Random(10)
    for _ in range(200):  # a "trained" tree: every path seen (uniform phase) with a reward that favours op 2
        draw = sampler.sample(rng)
        sampler.observe(draw.path, 4.0 - draw.path.count(2))  # type: ignore[union-attr]
    inside = lambda p: p[0] != 2  # noqa: E731
    found = sampler.search(rng, lambda p: 4.0 - p.count(2), lambda p: float(p.count(2)), count=5, accept=inside)
    assert len(found) == 5 and len({p for p, _ in found}) == 5
    assert all(inside(p) for p, _ in found)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert found[0][1] == 2.0  # exploitation finds the best leaf inside the window, (x, 2, 2)
    assert all(sampler.tree.is_removed(p) for p, _ in found)


def test_paths_and_archs_convert() -> None:
    choices = space_choices(MCTNASSpace())
    arch = MCTNASSpace().sample(random.Random(11))
    assert path_to_arch(choices, arch_to_path(choices, arch)) == arch
    with pytest.raises(TypeError, match="choices"):
        space_choices(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [dict(tau=0.0), dict(beta=1.0), dict(gamma=-0.1), dict(n_thrd=-1),
                                 dict(max_tries=0), dict(ema_start=-1.0)])
def test_config_validation_names_the_field(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        MCTSConfig(**bad)


# ----- oracle mode --------------------------------------------------------------------------------------------

def _session(budget: int, feasibility: CostModel | None = None) -> OracleSession:
    bench = fake_benchmark()
    return OracleSession(bench, budget, feasibility or CostModel.of_windows(bench.space))


@pytest.mark.parametrize("selection", ["prioritized", "hierarchical"])
def test_oracle_mcts_queries_every_feasible_arch_once(selection: str) -> None:
    bench = fake_benchmark()
    window = CostModel.of_windows(bench.space)
    window._verdicts.update({bench.arch(k): k[0] != "0" for k in bench.keys()})  # a cheap known window
    session = _session(10_000, window)
    mcts_search(session, random.Random(12), MCTSConfig(mct_start_iter=50), selection)  # the session refuses repeats
    keys = [k for k, _ in session.history]
    assert len(keys) == 2 * 3 ** 7 and all(k[0] != "0" for k in keys)


@pytest.mark.parametrize("selection", ["prioritized", "hierarchical"])
def test_oracle_mcts_stops_at_the_budget(selection: str) -> None:
    session = _session(123)
    mcts_search(session, random.Random(13), ORACLE_CONFIG, selection)
    assert len(session.history) == 123 == len({k for k, _ in session.history})


def test_oracle_mcts_beats_random_order_on_a_structured_landscape() -> None:
    """On the synthetic landscape (capacity pays), MCTS needs far fewer queries than the ~3280 expected of random."""
    bench = fake_benchmark()
    needed = []
    for seed in range(5):
        session = _session(6561)
        session.stop_at = frozenset({"22222222"})
        mcts_search(session, random.Random(seed), ORACLE_CONFIG)
        needed.append(len(session.history))
    assert bench.optimal() == {"22222222"}
    assert statistics.median(needed) < 1000, needed
