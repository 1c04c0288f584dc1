"""Which device's tables a command predicts latency from, when the user did or did not name one.

Latency tables are per CPU model (and runtime and thread count): another machine's numbers are wrong here by up
to 3x. So a command that was given no ``--device`` uses this machine's own tables, and when this machine has
none it stops before any work and says how to build them and how long that takes; it never falls back to
the tables shipped from another machine. A device named explicitly is the user's target (a phone, the machine
a table was shipped from) and is used as asked, with a warning when the table was measured on other hardware
than this machine, so nobody reads its numbers as this machine's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from latency_tables.table import LatencyTable, NoTablesError, list_devices, table_path, tables_root

# Hardware fields of a table's environment that make its numbers another machine's (software only warns).
HARDWARE_FIELDS = ("cpu_model", "cpu_id", "logical_cores", "machine")
# What one op key costs to measure with the default protocol: warm-up >= 0.3 s, timed runs >= 0.6 s, the
# cooldown, and exporting the op (measured ~0.3-0.5 s); each calibration network about as much as 3 keys.
_SECONDS_PER_KEY = 1.5
_CALIBRATION_NETWORKS = 20


def hardware_differences(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"field 'was' -> 'now'"`` for each hardware field two environments both record and disagree on."""
    return [f"{k} {then.get(k)!r} -> {now.get(k)!r}" for k in HARDWARE_FIELDS
            if then.get(k) is not None and now.get(k) is not None and then.get(k) != now.get(k)]


class NoLocalTablesError(NoTablesError):
    """This machine has no latency table for the space and no ``--device`` was named."""


def this_machine(threads: int = 1) -> str:
    """The device name this machine's ONNX Runtime tables are built under (``mzoo lut build``'s default)."""
    from latency_tables.devices import local_device_name

    return local_device_name("ort", threads)


def build_minutes(space: str, root: Path | None = None) -> int | None:
    """About how many minutes ``mzoo lut build --space SPACE`` takes here, from the key count of any device's
    table of that space (None when no device has one)."""
    for device in list_devices(root):
        path = table_path(device, space, root)
        if path.is_file():
            keys = len(LatencyTable.load(path).entries)
            return max(1, round((keys + 3 * _CALIBRATION_NETWORKS) * _SECONDS_PER_KEY / 60))
    return None


def choose_device(device: str | None, space: str | None, root: str | Path | None = None, *,
                  flag: str = "--device") -> str:
    """The device whose table of ``space`` (None: any space) a command should predict from.

    ``device`` None: this machine's, which must have a table of ``space`` (:class:`NoLocalTablesError` saying how
    to build it otherwise). A named device is returned as given (its table's absence is reported by the
    predictor), with a warning when its table was measured on other hardware than this machine.
    """
    base = Path(root) if root is not None else None
    if device is not None:
        _warn_if_other_hardware(device, space, base)
        return device
    here = this_machine()
    if _has_table(here, space, base):
        return here
    minutes = build_minutes(space, base) if space else None
    duration = f" (about {minutes} min on 2 cores; resumable)" if minutes else ""
    what = f"latency table for space {space!r}" if space else "latency tables"
    build = f"--space {space}" if space else "--space SPACE (see `mzoo lut spaces`)"
    others = ", ".join(d for d in list_devices(base) if _has_table(d, space, base)) or "none"
    raise NoLocalTablesError(
        f"this machine ({here}) has no {what} under {base or tables_root()}: build it with `mzoo lut build "
        f"{build}`{duration}, or predict for another device's tables with {flag} NAME (devices with tables: "
        f"{others}; another machine's numbers are not this machine's)")


def _has_table(device: str, space: str | None, root: Path | None) -> bool:
    if space is not None:
        return table_path(device, space, root).is_file()
    return device in list_devices(root)


def _warn_if_other_hardware(device: str, space: str | None, root: Path | None) -> None:
    if space is None:
        paths = sorted((tables_root() if root is None else root).joinpath(device).glob("*.json"))
        if not paths:
            return
        path = paths[0]
    else:
        path = table_path(device, space, root)
    if not path.is_file():
        return
    table = LatencyTable.load(path)
    if table.environment is None:  # an imported table (e.g. a phone's): plainly not this machine
        return
    from common.environment import current_environment

    differ = hardware_differences(table.environment, current_environment().to_dict())
    if differ:
        which = f"the {space!r} table of {device} was" if space is not None else f"the tables of {device} were"
        warnings.warn(f"{which} measured on other hardware than this machine "
                      f"({'; '.join(differ)}): the latencies are that machine's, not this one's", stacklevel=3)
