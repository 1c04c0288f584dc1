"""MCT-NAS' Monte-Carlo tree (papers.md §4.4): rewards, node communication, UCT, prioritized and hierarchical picks.

Owns the search space as a tree (depth = number of searchable layers, one child per op of the layer below,
leaves = architectures; every node keeps visits n and summed reward W), the reward tracker (an EMA L̃ of
the loss, reward Q = L̃ / L), the node-communication table G[d][o] shared by every node that takes op o at
layer d, the UCT score, prioritized sampling (a softmax of UCT / τ), hierarchical node selection for the
search stage, leaf removal, and checkpointing (``state_dict`` / ``load_state_dict``). The constants and
their quirks follow the official code (xiusu/BCNetV2 ``edgenn/algorithm/utils/mct.py``, ``mct_sampler.py``,
``mct_searcher.py``), re-implemented here: L̃ starts at 0, so the first rewards after the warm-up are about
1 − β and climb towards 1 over a few dozen updates; the exploration term uses ``n + 0.1`` and vanishes at a
parent with no visits; hierarchical selection exploits with C1 = 0. One object serves both stages: during
supernet training :class:`MCTSampler` draws paths (uniform, then prioritized within a MACs/latency window)
and is told each path's training loss; at search time :meth:`MCTSampler.search` runs hierarchical node
selection with evaluator callbacks. :func:`mcts_search` is the same tree driven by a benchmark oracle
(NAS-Bench-Macro mode), where the loss is the queried architecture's error rate (100 − accuracy, %), so
the reward is L̃ / L on error rates, and every queried leaf is removed so that no architecture is queried twice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from common.errors import InputError
from zoo.spaces.base import Arch, SearchSpace

from .query import QuerySession

Path = tuple[int, ...]
SELECTIONS = ("prioritized", "hierarchical")


@dataclass(frozen=True)
class MCTSConfig:
    """MCT-NAS' hyper-parameters. The constants default to the official values (the ImageNet and the
    NAS-Bench-Macro configs share them); the phase counters default to 0 and the caller sets its schedule.

    ``c1`` weighs exploration and ``c2`` node communication in UCT; ``tau`` is the softmax temperature of
    prioritized sampling (the official searcher uses the same for hierarchical selection); ``beta`` the EMA
    of the loss, ``gamma`` the EMA of G; ``n_thrd`` the visits per op a node needs before hierarchical
    selection descends past it; ``max_tries`` how many draws training-time sampling makes to land in the
    window. ``warmup_iters``: losses observed before it are ignored; ``mct_start_iter``: paths are drawn
    uniformly before it, from the tree after (official NAS-Bench-Macro: 4900 and 5880, 196 iterations an
    epoch; ImageNet: 72180 and 102255). ``ema_start``: the initial L̃ (the official 0.0, which is the
    warm-up quirk), or None to start L̃ at the first loss observed.
    """

    c1: float = 0.1
    c2: float = 0.2
    tau: float = 0.0025
    beta: float = 0.96
    gamma: float = 0.96
    n_thrd: int = 6
    max_tries: int = 100
    warmup_iters: int = 0
    mct_start_iter: int = 0
    ema_start: float | None = 0.0

    def __post_init__(self) -> None:
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise InputError(f"MCTSConfig.tau must be a positive number, got {self.tau!r}")
        for name in ("beta", "gamma"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"MCTSConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("n_thrd", "max_tries", "warmup_iters", "mct_start_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "max_tries" else 0):
                raise InputError(f"MCTSConfig.{name} must be an int >= {1 if name == 'max_tries' else 0}, "
                                 f"got {value!r}")
        if self.ema_start is not None and not (self.ema_start >= 0 and math.isfinite(self.ema_start)):
            raise InputError(f"MCTSConfig.ema_start must be a number >= 0 or None, got {self.ema_start!r}")


# Oracle mode's default: the official constants, and 200 uniform queries that build the tree before it is used
# (the analogue of the training stage's uniform phase, which the official NAS-Bench-Macro config runs for 980
# iterations). Without them the tree exhausts the subtree of its first query before trying any other: an
# unvisited child scores W/n = 0, and C1 = 0.1 times the exploration term cannot match a visited child's
# W/n ≈ 1. 200 was chosen in a 20-seed pilot over {50, 100, 200, 400}; bench/mcts_nbmacro.py shows 0 and 980.
ORACLE_CONFIG = MCTSConfig(mct_start_iter=200)


def uct(reward: float, visits: int, parent_visits: int, c1: float, c2: float, g: float) -> float:
    """UCT = W/n + C1·sqrt(ln N / (n + 0.1)) + C2·G, with W/n := 0 when n = 0 and the sqrt term := 0 when N = 0."""
    exploit = reward / visits if visits else 0.0
    explore = math.sqrt(math.log(parent_visits) / (visits + 0.1)) if parent_visits else 0.0
    return exploit + c1 * explore + c2 * g


def softmax_choice(scores: Sequence[float], tau: float, rng: random.Random) -> int:
    """An index drawn with probability softmax(scores / tau) (the max is subtracted first, for stability)."""
    top = max(scores)
    weights = [math.exp((s - top) / tau) for s in scores]
    return _weighted_index(weights, rng)


def _weighted_index(weights: Sequence[float], rng: random.Random) -> int:
    point = rng.random() * sum(weights)
    running = 0.0
    for i, w in enumerate(weights):
        running += w
        if point < running:
            return i
    # Rounding can leave ``point`` a hair above the last partial sum: take the last index with weight.
    return max(i for i, w in enumerate(weights) if w > 0)


class RewardTracker:
    """The reward of a path: Q = L̃ / L, where L̃ is an EMA (β) of the losses seen, updated before Q is formed.

    ``start`` is L̃'s initial value: the official 0.0 makes the first rewards ≈ 1 − β (the warm-up quirk);
    None starts L̃ at the first loss. :meth:`ratio` forms Q with L̃ frozen, as the search stage does.
    """

    def __init__(self, beta: float = 0.96, start: float | None = 0.0) -> None:
        self.beta = beta
        self.tilde: float | None = start
        self.updates = 0

    def update(self, loss: float) -> float:
        """Fold ``loss`` into L̃ and return L̃ / loss."""
        _check_loss(loss)
        self.tilde = loss if self.tilde is None else self.beta * self.tilde + (1.0 - self.beta) * loss
        self.updates += 1
        return self.tilde / loss

    def ratio(self, loss: float) -> float:
        """L̃ / loss without updating L̃."""
        _check_loss(loss)
        if self.tilde is None:
            raise InputError("RewardTracker.ratio needs L̃: no loss has been observed yet")
        return self.tilde / loss

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "tilde": self.tilde, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta, self.tilde, self.updates = float(state["beta"]), state["tilde"], int(state["updates"])


def _check_loss(loss: float) -> None:
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not (loss > 0 and math.isfinite(loss)):
        raise InputError(f"a reward needs a finite loss > 0, got {loss!r}")


class _Node:
    """Visits n, summed reward W, how many leaves below exist (were created) and how many are removed."""

    __slots__ = ("visits", "reward", "leaves", "removed", "children")

    def __init__(self, width: int) -> None:
        self.visits = 0
        self.reward = 0.0
        self.leaves = 0
        self.removed = 0
        self.children: list[_Node | None] = [None] * width


class MCTree:
    """The tree over ``choices[d]`` ops per layer, with G and the UCT constants of ``config``.

    Nodes are created on demand (by :meth:`sample`, :meth:`update` and :meth:`remove`, as in the official
    code). A removed leaf is never drawn again; unlike the official code, which deletes removed nodes, their
    statistics are kept (no removed node can be selected, so nothing that decides a draw differs). A child
    is *open* while some leaf below it is not removed, and *live* while some existing leaf below it is not
    removed: the official hierarchical selection walks live children only (the ones the tree has seen).
    """

    def __init__(self, choices: Sequence[int], config: MCTSConfig = MCTSConfig()) -> None:
        if not choices or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in choices):
            raise InputError(f"MCTree needs a positive number of ops for every layer, got {list(choices)!r}")
        self.choices = tuple(choices)
        self.config = config
        self.depth = len(self.choices)
        # Leaves below a node at depth d: the product of the remaining layers' op counts.
        self._below = [math.prod(self.choices[d:]) for d in range(self.depth + 1)]
        self.root = _Node(self.choices[0])
        self.G = [[0.0] * c for c in self.choices]

    # ----- bookkeeping -------------------------------------------------------------------------------------
    def _check_path(self, path: Sequence[int]) -> Path:
        if len(path) != self.depth or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < c
                                          for i, c in zip(path, self.choices)):
            raise InputError(f"a path of this tree is {self.depth} op indices below {list(self.choices)}, "
                             f"got {path!r}")
        return tuple(path)

    def _create(self, path: Path) -> list[_Node]:
        """The nodes from the root to ``path``'s leaf, created where missing."""
        nodes, node = [self.root], self.root
        new_leaf = False
        for d, idx in enumerate(path):
            child = node.children[idx]
            if child is None:
                child = _Node(self.choices[d + 1] if d + 1 < self.depth else 0)
                node.children[idx] = child
                new_leaf = d + 1 == self.depth
            nodes.append(child)
            node = child
        if new_leaf:
            for n in nodes:
                n.leaves += 1
        return nodes

    def _node(self, prefix: Sequence[int]) -> _Node | None:
        node: _Node | None = self.root
        for idx in prefix:
            if node is None:
                return None
            node = node.children[idx]
        return node

    def _open(self, node: _Node | None, depth: int) -> bool:
        return node is None or node.removed < self._below[depth]

    @staticmethod
    def _live(node: _Node | None) -> bool:
        return node is not None and node.leaves > node.removed

    def _open_children(self, node: _Node, depth: int) -> list[int]:
        return [i for i, c in enumerate(node.children) if self._open(c, depth + 1)]

    @property
    def remaining(self) -> int:
        """How many leaves are not removed."""
        return self._below[0] - self.root.removed

    @property
    def size(self) -> int:
        """How many leaves have been visited (the official tree's ``size``)."""
        def count(node: _Node, depth: int) -> int:
            if depth == self.depth:
                return int(node.visits > 0)
            return sum(count(c, depth + 1) for c in node.children if c is not None)
        return count(self.root, 0)

    def visits(self, prefix: Sequence[int] = ()) -> int:
        """Visits of the node at ``prefix`` (0 for a node that does not exist)."""
        node = self._node(prefix)
        return 0 if node is None else node.visits

    def reward(self, prefix: Sequence[int] = ()) -> float:
        """Summed reward W of the node at ``prefix``."""
        node = self._node(prefix)
        return 0.0 if node is None else node.reward

    def is_removed(self, path: Sequence[int]) -> bool:
        node = self._node(self._check_path(path))
        return node is not None and node.removed == 1

    # ----- updates -----------------------------------------------------------------------------------------
    def update(self, path: Sequence[int], reward: float) -> None:
        """Back up ``reward``: n += 1 and W += Q on the root and every node of ``path``; G[d][o] ← γG + (1−γ)Q."""
        path = self._check_path(path)
        if not math.isfinite(reward):
            raise InputError(f"MCTree.update needs a finite reward, got {reward!r}")
        gamma = self.config.gamma
        for node in self._create(path):
            node.visits += 1
            node.reward += reward
        for d, idx in enumerate(path):
            self.G[d][idx] = gamma * self.G[d][idx] + (1.0 - gamma) * reward

    def remove(self, path: Sequence[int]) -> None:
        """Never draw the leaf ``path`` again (evaluated, or outside the window). Removing twice is a no-op."""
        nodes = self._create(self._check_path(path))
        if nodes[-1].removed:
            return
        for node in nodes:
            node.removed += 1

    # ----- drawing paths -----------------------------------------------------------------------------------
    def scores(self, prefix: Sequence[int] = (), c1: float | None = None) -> list[float]:
        """UCT of every child of the node at ``prefix`` (removed ones included)."""
        node = self._node(prefix)
        depth = len(prefix)
        c1 = self.config.c1 if c1 is None else c1
        parent = 0 if node is None else node.visits
        out = []
        for idx in range(self.choices[depth]):
            child = None if node is None else node.children[idx]
            w, n = (0.0, 0) if child is None else (child.reward, child.visits)
            out.append(uct(w, n, parent, c1, self.config.c2, self.G[depth][idx]))
        return out

    def sample(self, rng: random.Random) -> Path | None:
        """Prioritized sampling: at each layer draw a child from softmax(UCT / τ) over the open children.

        Creates the drawn path's nodes (as the official code does); None when every leaf is removed.
        """
        if not self._open(self.root, 0):
            return None
        path: list[int] = []
        node: _Node | None = self.root
        for depth in range(self.depth):
            candidates = list(range(self.choices[depth])) if node is None else self._open_children(node, depth)
            scores = self.scores(path)
            # The softmax runs over the open children only, with their own max subtracted (the official code
            # normalises over all children first, which underflows when the max is a removed one).
            pick = candidates[softmax_choice([scores[i] for i in candidates], self.config.tau, rng)]
            path.append(pick)
            node = None if node is None else node.children[pick]
        self._create(tuple(path))
        return tuple(path)

    def sample_uniform(self, rng: random.Random) -> Path | None:
        """A leaf drawn uniformly among the leaves not removed (per layer uniform when nothing is removed)."""
        if not self._open(self.root, 0):
            return None
        path: list[int] = []
        node: _Node | None = self.root
        for depth in range(self.depth):
            weights = []
            for idx in range(self.choices[depth]):
                child = None if node is None else node.children[idx]
                weights.append(self._below[depth + 1] - (0 if child is None else child.removed))
            pick = _weighted_index(weights, rng)
            path.append(pick)
            node = None if node is None else node.children[pick]
        return tuple(path)

    def hierarchical_select(self, rng: random.Random, evaluate: Callable[[Path], float | None], *,
                            expand: bool = False, remove_evaluated: bool = False) -> Path | None:
        """Hierarchical node selection: descend from the root, refining each node before choosing its child.

        At depth d, while the current node's visits / (ops at d) < ``n_thrd``, a *hierarchical node update*
        completes the path below the current prefix by drawing uniformly among the node's children,
        calls ``evaluate(path)``, which returns the reward Q (None when the leaf is outside the window: it is
        removed), and backs Q up (``remove_evaluated`` also removes the evaluated leaf). Then the child is
        drawn from softmax((W/n + C2·G) / τ) (UCT with C1 = 0). When the current node has no leaf left the
        descent restarts at the root. ``expand=False`` is the official search stage: only live children
        (ones the training stage created) are walked and chosen. ``expand=True`` lets node updates reach
        any open child, for a tree built from scratch (oracle mode); the choice is then among the open
        children with visits (all open children if none has any). Returns a leaf, or None if none is left.
        """
        n_thrd = self.config.n_thrd
        usable = (lambda c, d: self._open(c, d)) if expand else (lambda c, d: self._live(c))
        while usable(self.root, 0):
            prefix: list[int] = []
            for depth in range(self.depth):
                node = self._node(prefix)
                while usable(node, depth) and (node is None or node.visits / self.choices[depth] < n_thrd):
                    self._node_update(rng, prefix, evaluate, usable, remove_evaluated)
                    node = self._node(prefix)
                if not usable(node, depth):
                    break  # every leaf below was removed: restart at the root
                prefix.append(self._exploit(node, prefix, usable, expand, rng))
            else:
                return tuple(prefix)
        return None

    def _node_update(self, rng: random.Random, prefix: Sequence[int], evaluate: Callable[[Path], float | None],
                     usable: Callable[[_Node | None, int], bool], remove_evaluated: bool) -> None:
        path = list(prefix)
        node: _Node | None = self._node(prefix)
        for depth in range(len(prefix), self.depth):
            options = [i for i in range(self.choices[depth])
                       if usable(None if node is None else node.children[i], depth + 1)]
            pick = rng.choice(options)
            path.append(pick)
            node = None if node is None else node.children[pick]
        leaf = tuple(path)
        reward = evaluate(leaf)
        if reward is None:
            self.remove(leaf)
            return
        self.update(leaf, reward)
        if remove_evaluated:
            self.remove(leaf)

    def _exploit(self, node: _Node | None, prefix: Sequence[int], usable: Callable[[_Node | None, int], bool],
                 expand: bool, rng: random.Random) -> int:
        depth = len(prefix)
        kids: list[_Node | None] = [None] * self.choices[depth] if node is None else node.children
        candidates = [i for i, c in enumerate(kids) if usable(c, depth + 1)]
        if expand:
            visited = [i for i in candidates if kids[i] is not None and kids[i].visits > 0]  # type: ignore[union-attr]
            candidates = visited or candidates
        scores = self.scores(prefix, c1=0.0)
        return candidates[softmax_choice([scores[i] for i in candidates], self.config.tau, rng)]

    # ----- checkpointing -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: choices, config, G and every node's statistics."""
        def dump(node: _Node) -> list[Any]:
            kids = {str(i): dump(c) for i, c in enumerate(node.children) if c is not None}
            return [node.visits, node.reward, node.leaves, node.removed, kids]
        return {"choices": list(self.choices), "config": asdict(self.config), "G": [list(g) for g in self.G],
                "root": dump(self.root)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a tree over the same choices (``ValueError`` otherwise)."""
        if list(state.get("choices", ())) != list(self.choices):
            raise InputError(f"MCTree state is for choices {state.get('choices')!r}, this tree has "
                             f"{list(self.choices)}")
        G = state["G"]
        if [len(g) for g in G] != list(self.choices):
            raise InputError(f"MCTree state holds G of shape {[len(g) for g in G]}, expected {list(self.choices)}")

        def build(data: list[Any], depth: int) -> _Node:
            node = _Node(self.choices[depth] if depth < self.depth else 0)
            node.visits, node.reward, node.leaves, node.removed = int(data[0]), float(data[1]), int(data[2]), \
                int(data[3])
            for key, child in data[4].items():
                node.children[int(key)] = build(child, depth + 1)
            return node

        self.root = build(state["root"], 0)
        self.G = [[float(v) for v in g] for g in G]


@dataclass(frozen=True)
class Draw:
    """A path drawn by :meth:`MCTSampler.sample`: ``accepted`` is False when no draw landed in the window
    (the official sampler then trains the last one drawn); ``tries`` counts draws; ``uniform`` marks the
    uniform phases."""

    path: Path
    accepted: bool
    tries: int
    uniform: bool


class MCTSampler:
    """The training-stage sampler and search-stage selector around one :class:`MCTree`.

    Phases follow the official sampler, counted in calls to :meth:`sample`: draws before ``mct_start_iter``
    are uniform (and ignore the window, as the official code does), later ones are prioritized and retry up
    to ``max_tries`` times to land inside the window ``accept``. :meth:`observe` backs up L̃ / loss once the
    ``warmup_iters``-th draw has been made (the official counter is incremented before the check).
    """

    def __init__(self, choices: Sequence[int], config: MCTSConfig = MCTSConfig()) -> None:
        self.config = config
        self.tree = MCTree(choices, config)
        self.rewards = RewardTracker(config.beta, config.ema_start)
        self.iteration = 0

    def sample(self, rng: random.Random, accept: Callable[[Path], bool] | None = None, *,
               remove_rejected: bool = False) -> Draw | None:
        """The next path. ``remove_rejected`` removes every drawn path outside the window and draws again,
        without a limit, in every phase (oracle mode: nothing outside the window may be evaluated).
        None when ``remove_rejected`` has removed every leaf."""
        uniform = self.iteration < self.config.mct_start_iter
        tries = 0
        while True:
            path = self.tree.sample_uniform(rng) if uniform else self.tree.sample(rng)
            if path is None:
                return None
            tries += 1
            if accept is None or accept(path):
                accepted = True
                break
            if remove_rejected:
                self.tree.remove(path)
                continue
            if uniform or tries >= self.config.max_tries:
                accepted = False
                break
        self.iteration += 1
        return Draw(path, accepted, tries, uniform)

    def observe(self, path: Sequence[int], loss: float) -> float | None:
        """Back up the reward of ``path`` for a batch ``loss``; None (nothing learnt) during the warm-up."""
        if self.iteration < self.config.warmup_iters:
            return None
        reward = self.rewards.update(loss)
        self.tree.update(path, reward)
        return reward

    def select(self, rng: random.Random, loss_of: Callable[[Path], float],
               accept: Callable[[Path], bool] | None = None) -> Path | None:
        """One search-stage leaf by hierarchical selection; node updates score ``loss_of(path)`` against the
        frozen L̃ and drop leaves outside ``accept``."""
        def evaluate(path: Path) -> float | None:
            if accept is not None and not accept(path):
                return None
            return self.rewards.ratio(loss_of(path))
        return self.tree.hierarchical_select(rng, evaluate)

    def search(self, rng: random.Random, loss_of: Callable[[Path], float], score_of: Callable[[Path], float],
               count: int, accept: Callable[[Path], bool] | None = None) -> list[tuple[Path, float]]:
        """The official search loop: select leaves until ``count`` distinct ones inside the window have been
        scored with ``score_of`` (e.g. validation top-1), removing each from the tree; best first."""
        scored: dict[Path, float] = {}
        while len(scored) < count:
            leaf = self.select(rng, loss_of, accept)
            if leaf is None:
                break
            if leaf not in scored and (accept is None or accept(leaf)):
                scored[leaf] = score_of(leaf)
            self.tree.remove(leaf)
        return sorted(scored.items(), key=lambda kv: -kv[1])

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "rewards": self.rewards.state_dict(), "tree": self.tree.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tree.load_state_dict(state["tree"])
        self.rewards.load_state_dict(state["rewards"])
        self.iteration = int(state["iteration"])


def space_choices(space: SearchSpace) -> tuple[tuple[Any, ...], ...]:
    """The allowed values of every layer of ``space`` (spaces with one independent choice per position)."""
    choices = getattr(space, "choices", None)
    if choices is None:
        raise TypeError(f"MCTS needs a space with one independent choice per layer (a GeneSpace with choices()); "
                        f"{getattr(space, 'name', space)!r} has none")
    return tuple(tuple(c) for c in choices())


def path_to_arch(choices: Sequence[Sequence[Any]], path: Iterable[int]) -> Arch:
    return tuple(c[i] for c, i in zip(choices, path))


def arch_to_path(choices: Sequence[Sequence[Any]], arch: Iterable[Any]) -> Path:
    return tuple(c.index(v) for c, v in zip(choices, arch))


def mcts_search(session: QuerySession, rng: random.Random, config: MCTSConfig = ORACLE_CONFIG,
                selection: str = "prioritized") -> None:
    """Search ``session`` (a query oracle with a budget and a window) with the MCT-NAS tree.

    The loss of a queried architecture is its error rate, 100 − accuracy (%), and its reward is L̃ / L on
    error rates (the official form; L̃ starts at ``config.ema_start``). One query is one official iteration:
    the first ``mct_start_iter`` queries are uniform (backed up from ``warmup_iters`` on), which builds the
    tree; after them ``selection="prioritized"`` draws each query as the training stage draws a path
    (softmax(UCT/τ)), and ``"hierarchical"`` as the search stage does, each hierarchical node update being
    one query (with ``expand=True``: the rollouts may reach leaves the tree has not seen). Every queried leaf
    and every leaf found outside the window is removed from the tree, so nothing is queried twice and nothing
    infeasible is queried. Returns when the session stops it (budget) or no feasible leaf is left.
    """
    if selection not in SELECTIONS:
        raise InputError(f"unknown MCTS selection {selection!r}; known: {', '.join(SELECTIONS)}")
    choices = space_choices(session.space)
    sampler = MCTSampler([len(c) for c in choices], config)

    def feasible(path: Path) -> bool:
        return session.feasible(path_to_arch(choices, path))

    def accuracy(path: Path) -> float:
        return session.query(path_to_arch(choices, path))

    if selection == "prioritized":
        while not session.exhausted:
            draw = sampler.sample(rng, feasible, remove_rejected=True)
            if draw is None:
                return
            sampler.observe(draw.path, _error(accuracy(draw.path)))
            sampler.tree.remove(draw.path)
        return

    def evaluate(path: Path) -> float | None:
        # None (the leaf is removed, nothing backed up) outside the window, and during the warm-up, in which
        # the official schedule draws paths without updating the tree.
        if not feasible(path):
            return None
        sampler.iteration += 1  # one query is one official iteration
        error = _error(accuracy(path))
        return None if sampler.iteration < config.warmup_iters else sampler.rewards.update(error)

    # The training stage's uniform phases build the tree before the search stage selects from it.
    while not session.exhausted and sampler.iteration < config.mct_start_iter:
        draw = sampler.sample(rng, feasible, remove_rejected=True)
        if draw is None:
            return
        sampler.observe(draw.path, _error(accuracy(draw.path)))
        sampler.tree.remove(draw.path)
    while not session.exhausted:
        leaf = sampler.tree.hierarchical_select(rng, evaluate, expand=True, remove_evaluated=True)
        if leaf is None:
            return
        reward = evaluate(leaf)
        if reward is not None:
            sampler.tree.update(leaf, reward)
        sampler.tree.remove(leaf)


def _error(accuracy: float) -> float:
    # An oracle accuracy of 100 % would make the loss 0: floor the error at a tiny positive value.
    return max(100.0 - accuracy, 1e-6)
