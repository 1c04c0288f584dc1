"""Mobile Zoo's model zoo: a timm-style registry of mobile CNNs built from architecture specs.

``zoo.create_model('hgcnet_1x')`` builds a registered model; importing ``zoo`` also registers every
zoo model with timm, so ``timm.create_model('hgcnet_1x')`` works afterwards.
"""

from . import (darts, efficientnet, efficientnet_lite, hgcnet, mctnas, mobilenetv2, nbmacro,  # noqa: F401
               resnet)  # (register their families)
from .costs import Cost, OpCost, count, count_module, format_count, iter_ops
from .pretrained import (PretrainedCfg, WeightsError, WeightsHashError, WeightsLoadError,
                         WeightsNotFoundError)
from .registry import (DuplicateModelError, UnknownModelError, build_model, create_model, get_arch_spec,
                       get_pretrained_cfg, is_model, list_models, model_info, register_model)
from .spec import SCHEMA_VERSION, ArchSpec, BlockSpec, CellNetSpec, Genotype, spec_from_dict, spec_from_json

__all__ = [
    "ArchSpec", "BlockSpec", "CellNetSpec", "Cost", "DuplicateModelError", "Genotype", "OpCost", "PretrainedCfg",
    "SCHEMA_VERSION",
    "UnknownModelError", "WeightsError", "WeightsHashError", "WeightsLoadError", "WeightsNotFoundError",
    "build_model", "count", "count_module", "create_model", "format_count", "get_arch_spec",
    "get_pretrained_cfg", "is_model", "iter_ops", "list_models", "model_info", "register_model",
    "spec_from_dict", "spec_from_json",
]
