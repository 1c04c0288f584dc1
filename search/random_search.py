"""Random search: feasible architectures queried in a uniformly random order, without replacement.

Owns :func:`random_order`, a seeded stream of a space's architectures in uniformly random order without
repeats (a shuffled enumeration when the space is small enough to list, else rejection of repeats from the
space's own ``sample``), which regularised evolution also draws its initial population and fallbacks from,
and :func:`random_search`, which queries the stream's feasible, not yet queried members until the session's
budget is spent or the space is exhausted.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator

from zoo.spaces.base import Arch, SearchSpace

from .query import QuerySession

# Spaces with at most this many architectures are listed and shuffled (NAS-Bench-Macro has 6561).
ENUMERATE_LIMIT = 1 << 20
# Rejection sampling gives up after this many repeats in a row: the space is (nearly) exhausted.
MAX_REPEATS = 100_000


def random_order(space: SearchSpace, rng: random.Random) -> Iterator[Arch]:
    """``space``'s architectures in uniformly random order, each at most once."""
    choices = getattr(space, "choices", None)
    if choices is not None and math.prod(len(c) for c in choices()) <= ENUMERATE_LIMIT:
        archs = list(itertools.product(*choices()))
        rng.shuffle(archs)
        yield from archs
        return
    seen: set[Arch] = set()
    repeats = 0
    while repeats < MAX_REPEATS:
        arch = space.sample(rng)
        if arch in seen:
            repeats += 1
            continue
        repeats = 0
        seen.add(arch)
        yield arch


def random_search(session: QuerySession, rng: random.Random) -> None:
    """Query feasible architectures in :func:`random_order` until the budget is spent or none is left."""
    for arch in random_order(session.space, rng):
        if session.exhausted:
            return
        if not session.queried(arch) and session.feasible(arch):
            session.query(arch)
