"""timm's view of the zoo: every zoo model is registered with timm from here.

timm finds a model's pretrained cfg through the ``default_cfgs`` dict of the module its entrypoint
lives in, so this module holds that dict and timm sees our models as the module ``mobile_zoo``
(``timm.list_models(module='mobile_zoo')``). The entrypoints forward to :func:`zoo.create_model`,
which accepts timm's factory arguments. Registration happens when ``zoo`` is imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import timm.models
from torch import nn

from .pretrained import present_weights
from .registry import DuplicateModelError, ModelEntry

default_cfgs: dict[str, dict[str, Any]] = {}

_TIMM_FIELDS = frozenset(f.name for f in dataclasses.fields(timm.models.PretrainedCfg))


def check_free(name: str) -> None:
    """Refuse a name timm already knows (timm itself would only warn and overwrite)."""
    if timm.models.is_model(name) and name not in default_cfgs:
        raise DuplicateModelError(f"model name {name!r} is already a timm model; choose another name")


def register(entry: ModelEntry) -> None:
    """Register ``entry`` with timm under the same name, with its cfg translated to timm's fields."""
    from .registry import create_model

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_model(entry.name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = __name__
    cfg = {k: v for k, v in entry.pretrained_cfg.to_dict().items() if k in _TIMM_FIELDS}
    # timm knows a model has weights by its cfg's file/url; weights inside an installed package are a file too.
    present = present_weights(entry.pretrained_cfg)
    if present is not None:
        cfg["file"] = str(present)
    default_cfgs[entry.name] = cfg
    timm.models.register_model(entrypoint)
