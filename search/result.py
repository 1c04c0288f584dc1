"""The result every network search and pruning method returns: the chosen network (spec and weights), what it
costs, how it was found, and :meth:`SearchResult.save`, which writes it with :func:`zoo.searched.write_searched`
(the one writer beside the reader that registers it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from zoo.searched import write_searched
from zoo.spaces import Arch, InputSize
from zoo.spec import ArchSpec


@dataclass
class SearchResult:
    """A searched network, what it costs and the weights it inherits: the result of a width search (BCNet,
    CafeNet), MCT-NAS or DAGGER, saved in the layout :mod:`zoo.searched` registers (:meth:`save`)."""

    method: str
    space: str
    arch: Arch
    spec: ArchSpec
    input_size: InputSize
    macs: int
    params: int
    latency_ms: float | None
    device: str | None
    score: float
    placement: dict[str, Any]
    model: nn.Module
    budget: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The JSON report: everything but the model (the spec's JSON is the ``spec`` field)."""
        return {"method": self.method, "space": self.space, "arch": list(self.arch), "family": self.spec.family,
                "input_size": list(self.input_size), "macs": self.macs, "params": self.params,
                "latency_ms": self.latency_ms, "device": self.device, "score": self.score,
                "placement": self.placement, "budget": self.budget, "history": self.history, **self.extra}

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``spec.json``, ``weights.pth`` and ``report.json`` into ``directory`` (:func:`zoo.searched.write_searched`)."""
        return write_searched(directory, self.spec, self.report(), self.model.state_dict())
