"""The model registry and factory: ``register_model``, ``create_model``, ``list_models``, ``model_info``.

A zoo model is a named function that returns its spec, an :class:`~zoo.spec.ArchSpec` or a
:class:`~zoo.spec.CellNetSpec` (architectures are data), registered with a :class:`~zoo.pretrained.PretrainedCfg`. ``register_model`` turns it into a
timm-style entrypoint ``name(pretrained=False, **kwargs) -> nn.Module`` and registers that entrypoint
with timm too (see :mod:`zoo.mobile_zoo`), so ``timm.create_model(name)`` works once ``zoo`` is
imported. Names are unique: registering a name twice, here or against a timm model, is an error.

Importing the registry (and so ``zoo``, ``mzoo list``, ``mzoo info``) imports neither torch nor timm: models are
built from their specs only when asked for, and the timm registration waits for timm. If timm is already imported,
a model is registered with it at once; otherwise a hook on ``import timm`` registers every zoo model the moment timm
finishes importing, so ``import zoo; import timm; timm.create_model('hgcnet_1x')`` works as before. A zoo name that
turns out to be timm's (known only once timm is imported) is refused then: :func:`create_model` raises
:class:`DuplicateModelError` for it rather than building either model.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.abc
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from common.errors import InputError
from .costs import check_size, count
from .pretrained import PretrainedCfg, load_pretrained, present_weights
from .spec import AnySpec, CellNetSpec

if TYPE_CHECKING:
    from torch import nn

    from .contract import ZooModel

SpecFn = Callable[[], AnySpec]
# Spec fields a caller may override through create_model keyword arguments (training-time options).
SPEC_KWARGS = ("drop_path_rate", "auxiliary")
EntryPoint = Callable[..., "nn.Module"]


class UnknownModelError(InputError):
    """The requested model name is not registered."""


class DuplicateModelError(InputError):
    """A model name is registered twice."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, spec factory, cfg and defining module."""

    name: str
    spec_fn: SpecFn
    pretrained_cfg: PretrainedCfg
    module: str


_ENTRIES: dict[str, ModelEntry] = {}
# Registered before timm was imported: handed to timm by the import hook below.
_TIMM_PENDING: list[ModelEntry] = []
# Zoo names found to be timm's when the hook ran (create_model refuses them).
_TIMM_CLASHES: dict[str, DuplicateModelError] = {}


def _timm_ready() -> bool:
    """timm is imported and finished importing (not half-way through its own ``__init__``)."""
    module = sys.modules.get("timm")
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _bridge_pending() -> None:
    """Register with timm every zoo model registered before timm was imported."""
    from . import mobile_zoo

    while _TIMM_PENDING:
        entry = _TIMM_PENDING.pop(0)
        try:
            mobile_zoo.check_free(entry.name)
        except DuplicateModelError as err:
            _TIMM_CLASHES[entry.name] = err
            continue
        mobile_zoo.register(entry)


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Finds ``timm`` with the other finders and wraps its loader to run :func:`_bridge_pending` once timm has
    finished importing."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return None

        def exec_then_bridge(module: ModuleType) -> None:
            exec_module(module)
            _remove_hook()
            _bridge_pending()

        loader.exec_module = exec_then_bridge  # type: ignore[union-attr]  # (this spec's loader instance only)
        return spec


_HOOK = _TimmImportHook()


def _remove_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def _bridge_later(entry: ModelEntry) -> None:
    _TIMM_PENDING.append(entry)
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def ensure_timm() -> None:
    """Import timm (registering every pending zoo model with it) and refuse a zoo name that is timm's."""
    import timm  # noqa: F401  (its import hook, or an earlier import, registers the zoo's models)

    _bridge_pending()


def register_model(pretrained_cfg: PretrainedCfg) -> Callable[[SpecFn], EntryPoint]:
    """Decorator: register a spec function under its ``__name__`` and return the model entrypoint."""

    def decorate(spec_fn: SpecFn) -> EntryPoint:
        name = spec_fn.__name__
        if name in _ENTRIES:
            raise DuplicateModelError(f"model {name!r} is already registered by {_ENTRIES[name].module}")
        timm_ready = _timm_ready()
        if timm_ready:
            from . import mobile_zoo  # late: the bridge imports this module

            mobile_zoo.check_free(name)
        entry = ModelEntry(name, spec_fn, pretrained_cfg.replace(architecture=name), spec_fn.__module__)

        def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            return create_model(name, pretrained=pretrained, **kwargs)

        entrypoint.__name__ = entrypoint.__qualname__ = name
        entrypoint.__doc__ = spec_fn.__doc__
        entrypoint.__module__ = spec_fn.__module__
        _ENTRIES[name] = entry
        if timm_ready:
            mobile_zoo.register(entry)
        else:
            _bridge_later(entry)
        return entrypoint

    return decorate


def _entry(name: str) -> ModelEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ENTRIES), n=3, cutoff=0.5)
        owned = [n for n in (f"mz_{name}", f"mz_tf_{name}") if n in _ENTRIES]
        if owned:  # e.g. efficientnet_lite0: timm owns the name, the zoo's models carry mz_
            raise UnknownModelError(f"{name!r} is timm's model, not the zoo's (timm.create_model builds it); the "
                                    f"zoo's are {', '.join(owned)}") from None
        hint = f"; did you mean {', '.join(close)}?" if close else "; see zoo.list_models()"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def is_model(name: str) -> bool:
    return name in _ENTRIES


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The model's cfg, without building the model."""
    return _entry(name).pretrained_cfg


def get_arch_spec(name: str) -> AnySpec:
    """The model's architecture spec, without building the model."""
    return _entry(name).spec_fn()


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(pattern: str | Iterable[str] = "", exclude: str | Iterable[str] = "",
                pretrained: bool = False) -> list[str]:
    """Registered names matching any fnmatch ``pattern`` and none of ``exclude``, naturally sorted.

    ``pretrained=True`` keeps only the models that have weights, as timm's does: a cfg whose weights file is on
    this machine (its ``file`` or an installed package's) or that names a ``url`` (looked for under the cache
    when loaded, never downloaded).
    """
    include = [pattern] if isinstance(pattern, str) else list(pattern)
    leave_out = [exclude] if isinstance(exclude, str) else list(exclude)
    names = [n for n in _ENTRIES if not any(include) or any(fnmatch.fnmatch(n, f) for f in include if f)]
    names = [n for n in names if not any(fnmatch.fnmatch(n, f) for f in leave_out if f)]
    if pretrained:
        names = [n for n in names if _has_weights(_ENTRIES[n].pretrained_cfg)]
    return sorted(names, key=_natural_key)


def _has_weights(cfg: PretrainedCfg) -> bool:
    """A cfg names a ``url`` (looked for under the cache, never downloaded), or a file that is there: its own
    ``file`` or one inside an installed package."""
    return bool(cfg.url) or present_weights(cfg) is not None


def model_info(name: str) -> dict[str, Any]:
    """Name, module, cfg, params and MACs (at the cfg's input size) and spec, without building the model."""
    entry = _entry(name)
    spec = entry.spec_fn()
    cost = count(spec, entry.pretrained_cfg.input_size)
    return {
        "name": name,
        "module": entry.module,
        "family": spec.family,
        "params": cost.params,
        "macs": cost.macs,
        "input_size": entry.pretrained_cfg.input_size,
        "pretrained_cfg": entry.pretrained_cfg.to_dict(),
        "arch_spec": spec.to_dict(),
    }


def _resolve_cfg(entry: ModelEntry, pretrained_cfg: PretrainedCfg | dict[str, Any] | None,
                 overlay: dict[str, Any] | None) -> PretrainedCfg:
    cfg = entry.pretrained_cfg
    if isinstance(pretrained_cfg, PretrainedCfg):
        cfg = pretrained_cfg
    elif isinstance(pretrained_cfg, dict):
        cfg = _patch(cfg, pretrained_cfg)
    elif pretrained_cfg is not None:
        raise TypeError(f"pretrained_cfg must be a PretrainedCfg or dict, got {type(pretrained_cfg).__name__}")
    return _patch(cfg, overlay) if overlay else cfg


def _patch(cfg: PretrainedCfg, changes: dict[str, Any]) -> PretrainedCfg:
    """``cfg`` with ``changes``; a new weights ``file``/``url`` drops the registered file's sha256 (it pins that
    file, not the caller's), unless the changes give one."""
    if ({"file", "url"} & set(changes)) and "sha256" not in changes:
        changes = {**changes, "sha256": None}
    return cfg.replace(**changes)


def create_model(
    model_name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_rate: float | None = None,
    global_pool: str = "avg",
    features_only: bool = False,
    out_indices: Iterable[int] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    pretrained_cfg: PretrainedCfg | dict[str, Any] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (timm's signature).

    Args:
        model_name: a name from :func:`list_models`.
        pretrained: load weights from the local file the cfg names (nothing is downloaded).
        num_classes: classifier outputs (default: the cfg's); 0 removes the classifier.
        in_chans: image channels (default 3); pretrained first-conv weights are adapted.
        drop_rate: dropout before the classifier.
        global_pool: ``"avg"`` or ``""``.
        features_only: return a model whose forward gives the stage outputs in ``out_indices``.
        checkpoint_path: a local weights file to load instead of the cfg's (implies loading).
        pretrained_cfg, pretrained_cfg_overlay: replace / patch the registered cfg.
        cache_dir: where ``url``-named weights are looked for (default ``$MZOO_CACHE``).
        **kwargs: training-time spec fields the model has (``drop_path_rate``, ``auxiliary`` of cell
            networks).

    Raises:
        UnknownModelError: ``model_name`` is not registered (close matches are suggested).
        TypeError: an argument this model does not take.
        zoo.pretrained.WeightsError: weights requested but missing, corrupt or mismatched.
    """
    entry = _entry(model_name)
    ensure_timm()
    if model_name in _TIMM_CLASHES:
        raise _TIMM_CLASHES[model_name]
    spec = entry.spec_fn()
    unknown = sorted(k for k in kwargs if k not in SPEC_KWARGS or not hasattr(spec, k))
    if unknown:
        raise TypeError(f"{model_name}: unexpected arguments {unknown}")
    cfg = _resolve_cfg(entry, pretrained_cfg, pretrained_cfg_overlay)
    overrides = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans),
                                   ("drop_rate", drop_rate)) if v is not None} | kwargs
    spec = spec.replace(**overrides) if overrides else spec
    model = build_model(spec, global_pool=global_pool)
    if pretrained or checkpoint_path is not None:
        load_pretrained(model, model_name, cfg, num_classes=spec.num_classes, in_chans=spec.in_chans,
                        checkpoint_path=checkpoint_path, cache=Path(cache_dir) if cache_dir else None)
    result: nn.Module = features_model(model, list(out_indices) if out_indices is not None else None) \
        if features_only else model
    # timm's models carry their cfg as a plain dict under both names (timm's tests and data helpers index it).
    result.pretrained_cfg = result.default_cfg = cfg.model_dict()  # type: ignore[assignment]
    return result


def build_model(spec: AnySpec, *, global_pool: str = "avg") -> ZooModel:
    """Build a model straight from a spec of either type (e.g. a search result loaded from JSON); a spec with more
    than ``zoo.spec.MAX_PARAMS`` parameters is refused before any layer is built (:func:`zoo.costs.check_size`)."""
    from .cells import build_cellnet
    from .specnet import SpecNet, SpecResNet

    check_size(spec)
    if isinstance(spec, CellNetSpec):
        return build_cellnet(spec, global_pool)
    if spec.layout == "resnet":
        return SpecResNet(spec, global_pool=global_pool)
    return SpecNet(spec, global_pool=global_pool)


def features_model(model: ZooModel, out_indices: list[int] | None = None) -> nn.Module:
    """The ``features_only`` form of a built model (shares its modules and state-dict keys)."""
    from .cells import CellNet, CellNetFeatures
    from .specnet import SpecFeatures, SpecResNet, SpecResNetFeatures

    if isinstance(model, CellNet):
        return CellNetFeatures(model, out_indices)
    if isinstance(model, SpecResNet):
        return SpecResNetFeatures(model, out_indices)
    return SpecFeatures(model, out_indices)
