"""Searched models as data: a search's result directory registered into the zoo like a built-in model.

Every search of this project (BCNet/CafeNet width search, DAGGER pruning, ...) writes its network with
:func:`write_searched` as three files in one directory: ``spec.json`` (the architecture, :func:`zoo.spec_from_json` reads it), ``weights.pth`` (a state dict,
the weights inherited from the supernet or fine-tuned) and ``report.json`` (what was searched, how, and the input
the network expects). :func:`register_searched` makes such a directory a zoo model: ``zoo.create_model(name,
pretrained=True)`` (and ``timm.create_model``) builds the spec and loads the weights, whose sha256 is pinned at
registration so a file changed afterwards is refused. :func:`register_searched_dir` registers every result under a
directory. Nothing is registered on import: the caller (or ``mzoo --searched DIR`` / ``$MZOO_SEARCHED``) says which.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.files import prepare_directory, publish, temporary_path, write_json_atomic, write_text_atomic

from .pretrained import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg
from common.jsonfile import read_json_object
from .registry import DuplicateModelError, get_pretrained_cfg, is_model, register_model
from .spec import AnySpec, ArchSpec, CellNetSpec, spec_from_json

SPEC_FILE, WEIGHTS_FILE, REPORT_FILE = "spec.json", "weights.pth", "report.json"
SEARCHED_ENV = "MZOO_SEARCHED"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Which paper a method's result comes from (pretrained_cfg.paper_ids / paper_name).
_PAPERS = {
    "bcnet": ("arXiv:2105.10533", "BCNet: Searching for Network Width with Bilaterally Coupled Network"),
    "cafenet": ("arXiv:2102.05258", "Locally Free Weight Sharing for Network Width Search"),
    "dagger": ("arXiv:2010.15041", "Data Agnostic Filter Gating for Efficient Deep Networks"),
    "mctnas": ("arXiv:2103.11922", "Prioritized Architecture Sampling with Monto-Carlo Tree Search"),
    "mct-nas": ("arXiv:2103.11922", "Prioritized Architecture Sampling with Monto-Carlo Tree Search"),
    "eoinas": ("arXiv:1911.10511", "Exploiting Operation Importance for Differentiable Neural Architecture Search"),
    "darts": ("arXiv:1806.09055", "DARTS: Differentiable Architecture Search"),
    "metakernel": ("arXiv:1912.04749", "Efficient Differentiable Neural Architecture Search with Meta Kernels"),
}


def is_valid_name(name: object) -> bool:
    """Whether ``name`` can name a registered search result: lowercase letters, digits and '_', letter first."""
    return isinstance(name, str) and _NAME.match(name) is not None


class SearchedModelError(InputError):
    """A search result directory is missing a file, holds a corrupt one, or cannot be registered under its name."""


def register_searched(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Register the search result in directory ``path`` (spec.json, weights.pth, report.json); returns its name.

    The name is ``name``, else the report's ``name``. Raises :class:`SearchedModelError` naming the directory and
    what is wrong, and ``zoo.DuplicateModelError`` when the name is taken.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise SearchedModelError(f"search result {str(directory)!r} is not a directory (expected {SPEC_FILE}, "
                                 f"{WEIGHTS_FILE} and {REPORT_FILE} in it)")
    report = _read_json(directory / REPORT_FILE)
    try:
        spec = spec_from_json((directory / SPEC_FILE).read_text())
    except FileNotFoundError:
        raise SearchedModelError(f"search result {str(directory)!r} has no {SPEC_FILE}") from None
    except (ValueError, TypeError, KeyError) as err:
        raise SearchedModelError(f"{str(directory / SPEC_FILE)!r} is not a valid spec: {err}") from None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise SearchedModelError(f"search result {str(directory)!r} has no {WEIGHTS_FILE}")
    chosen = name or report.get("name")
    if not is_valid_name(chosen):
        raise SearchedModelError(f"search result {str(directory)!r}: model name {chosen!r} must be lowercase "
                                 f"letters, digits and '_' starting with a letter (pass name= or set 'name' in "
                                 f"{REPORT_FILE})")
    cfg = searched_cfg(spec, report, weights)

    def spec_fn() -> AnySpec:
        return spec

    spec_fn.__name__ = spec_fn.__qualname__ = chosen
    spec_fn.__module__ = __name__
    spec_fn.__doc__ = cfg.description
    register_model(cfg)(spec_fn)
    return chosen


def write_searched(directory: str | os.PathLike[str], spec: AnySpec, report: Mapping[str, Any],
                   state_dict: Mapping[str, Any] | None = None,
                   extra_files: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write a search result where :func:`register_searched` reads it: ``spec.json``, ``weights.pth`` (when
    ``state_dict`` is given; tensors saved on the CPU) and ``report.json`` with a ``files`` entry naming them (plus
    ``extra_files``, other files the caller wrote there), each atomically. Returns the paths written."""
    out = Path(directory)
    prepare_directory(out)
    paths = {"spec": out / SPEC_FILE, "report": out / REPORT_FILE}
    if state_dict is not None:
        paths["weights"] = out / WEIGHTS_FILE
    write_text_atomic(paths["spec"], spec.to_json(indent=2) + "\n")
    if state_dict is not None:
        import torch  # here: reading results (mzoo --searched DIR list) needs no torch

        with temporary_path(paths["weights"]) as tmp:
            torch.save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state_dict.items()},
                       tmp)
            publish(tmp, paths["weights"])
    files = {k: p.name for k, p in paths.items()} | dict(extra_files or {})
    write_json_atomic(paths["report"], dict(report) | {"files": files})
    return paths


def register_searched_dir(root: str | os.PathLike[str]) -> list[str]:
    """Register ``root`` itself if it is a result, else every direct subdirectory that holds a ``spec.json``."""
    base = Path(root)
    if not base.is_dir():
        raise SearchedModelError(f"searched-models directory {str(base)!r} does not exist")
    return [register_searched(d) for d in _result_dirs(base)]


def _result_dirs(base: Path) -> list[Path]:
    """``base`` if it is a result directory, else its subdirectories that are (none if it is not a directory)."""
    if (base / SPEC_FILE).exists():
        return [base]
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.is_dir() and (d / SPEC_FILE).exists())


def register_from_env(value: str | None = None) -> list[str]:
    """Register the directories of ``$MZOO_SEARCHED`` (``os.pathsep``-separated).

    A directory already registered (named twice, or by both the flag and the variable) is skipped, so calling it
    twice is harmless; a second directory whose result has a name already taken is refused with
    ``DuplicateModelError`` naming both directories, never silently ignored.
    """
    text = os.environ.get(SEARCHED_ENV, "") if value is None else value
    names: list[str] = []
    for part in filter(None, text.split(os.pathsep)):
        dirs = _result_dirs(Path(part))
        if not dirs:
            raise SearchedModelError(f"${SEARCHED_ENV} names {part!r}, which holds no search result")
        for d in dirs:
            name = str(_read_json(d / REPORT_FILE).get("name"))
            if is_model(name):
                _check_same_result(name, d)
                continue
            names.append(register_searched(d))
    return names


def _check_same_result(name: str, directory: Path) -> None:
    """Pass if ``name`` was registered from ``directory`` itself; ``DuplicateModelError`` naming both otherwise."""
    registered = get_pretrained_cfg(name).file
    mine = str((directory / WEIGHTS_FILE).resolve())
    if registered != mine:
        where = str(Path(registered).parent) if registered else "a built-in zoo model"
        raise DuplicateModelError(f"model {name!r} is already registered from {where}; the search result in "
                                  f"{str(directory.resolve())!r} has the same name (rename one: 'name' in its "
                                  f"{REPORT_FILE})")


def searched_cfg(spec: AnySpec, report: Mapping[str, Any], weights: Path) -> PretrainedCfg:
    """The pretrained cfg of a search result: input and normalisation from the report, weights pinned by sha256."""
    size = report.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(d, int) and d > 0 for d in size)):
        raise SearchedModelError(f"{REPORT_FILE} next to {str(weights)!r} needs 'input_size' as [C, H, W], "
                                 f"got {size!r}")
    small = size[1] <= 64
    mean = tuple(report.get("mean") or (CIFAR10_MEAN if small else IMAGENET_MEAN))
    std = tuple(report.get("std") or (CIFAR10_STD if small else IMAGENET_STD))
    method = str(report.get("method", "search"))
    paper_ids, paper_name = _PAPERS.get(method, (None, None))
    resnet = isinstance(spec, ArchSpec) and spec.layout == "resnet"
    if isinstance(spec, CellNetSpec):
        first_conv = "stem.0" if spec.stem == "cifar" else "stem0.0"
    else:
        first_conv = "conv1" if resnet else "conv_stem"
    summary = ", ".join(f"{k} {report[k]}" for k in ("space", "macs", "score", "data") if k in report)
    return PretrainedCfg(
        input_size=tuple(size), interpolation="bilinear" if small else "bicubic", crop_pct=1.0 if small else 0.875,
        mean=mean, std=std, num_classes=spec.num_classes, first_conv=first_conv,
        classifier="fc" if resnet else "classifier", file=str(weights.resolve()), sha256=_sha256(weights),
        paper_ids=paper_ids, paper_name=paper_name, description=f"{method} search result ({summary})",
        notes=f"registered from {weights.parent.resolve()}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SearchedModelError(f"search result {str(path.parent)!r} has no {path.name}")
    return read_json_object(path, "search result file", SearchedModelError)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
