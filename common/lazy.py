"""A package's public names, each imported from its home module on first use (PEP 562).

A package whose ``__init__`` re-exports its modules' API pays for every import those modules make (torch, numpy,
a runtime) the moment any of its submodules is imported, e.g. to build the command line's parser. With
:func:`lazy_exports` ``from package import name`` still works, but loads ``name``'s module only then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any],
                 homes: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose globals are ``namespace``; ``homes`` maps each module
    (absolute, or relative to ``package`` with a leading dot) to the public names it defines."""
    where = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # the next lookup is a plain global
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
