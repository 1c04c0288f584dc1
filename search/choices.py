"""Choices the search command line offers, apart from the modules that implement them (which import torch), so
building ``mzoo``'s parser imports none of them. Each implementing module imports its tuple from here."""

from __future__ import annotations

ORDERS = ("first", "second")  # DARTS' architecture-gradient approximations (search.differentiable)
EOINAS_SELECTIONS = ("eoinas", "darts")  # EoiNAS' indicator and pruning, or plain DARTS (search.eoinas)
