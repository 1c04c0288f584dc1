"""The training engine's checkpoints: the file format (a versioned dict of plain data and tensors), safe reading,
atomic writing, and the random-number state a resumed run restores so it continues bit for bit.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import MzooError, OutputError
from common.files import prepare_directory, publish, temporary_path
from zoo.pretrained import load_error_reason

CHECKPOINT_FORMAT = "mobile-zoo/search-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(MzooError, RuntimeError):
    """A checkpoint is missing, unreadable, not ours, or was made by a different run (config, data, ranks)."""


def read_checkpoint(path: str | os.PathLike[str], map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's contents (safe loading: tensors and plain data only), or :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist" if not path.exists()
                              else f"checkpoint {str(path)!r} is not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {load_error_reason(err)}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a search training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has version {state.get('version')!r}, "
                              f"this code reads version {CHECKPOINT_VERSION}")
    return state


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    try:
        prepare_directory(path.parent)
        with temporary_path(path) as tmp:
            with open(tmp, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())  # the rename must not land before the data does
            publish(tmp, path)
    except OutputError as err:
        raise CheckpointError(str(err)) from err


def rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
