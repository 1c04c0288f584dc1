"""Model-level export: what the CLI and the benchmarks run.

Resolves a model name (a zoo model, or a timm baseline when the zoo has no such name) with its weights, and
exports it to a verified ONNX file with its report beside it. The per-format work lives in :mod:`export.onnx`
and :mod:`export.formats`; timing the result is :mod:`latency_tables.compare`'s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from common.errors import InputError
import zoo
from zoo import pretrained

from .errors import UnsupportedFormatError, exporter
from common.files import write_json_atomic
from .onnx import OnnxExportConfig, OnnxExportReport, export_onnx

@dataclass(frozen=True)
class ResolvedModel:
    """A built model plus what export needs to know about it."""

    name: str
    source: str  # "zoo" or "timm"
    model: nn.Module
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch_spec_json: str | None
    crop_pct: float = 1.0
    weights_file: str | None = None  # the weights loaded into ``model``; None: random init, calibrated BatchNorm
    weights_sha256: str | None = None
    # Set by export.deploy.deploy: the report's deploy record, the metadata entry, and the training-time network
    # the artefacts must match (None when nothing was rewritten).
    deploy: dict[str, Any] | None = None
    deploy_metadata: str | None = None
    trained_model: nn.Module | None = None

    @property
    def random_init(self) -> bool:
        return self.weights_file is None

    @property
    def weights(self) -> dict[str, str] | str:
        """Where the weights came from, as every artefact's report records it: file and sha256, or "random init"."""
        if self.weights_file is None:
            return "random init (no weights loaded; BatchNorm statistics calibrated on random inputs)"
        return {"file": self.weights_file, "sha256": self.weights_sha256 or ""}


def calibrate_batchnorm(model: nn.Module, input_size: tuple[int, int, int], steps: int = 4, batch: int = 8,
                        seed: int = 0) -> nn.Module:
    """Set BatchNorm running statistics from seeded random inputs, then return the model in eval mode.

    A random-init model keeps BN's default statistics (mean 0, var 1), so in eval mode its activations
    drift by orders of magnitude through the network; SE gates and (h)swish shrink them ~4× a block, and
    logits near 1e-5 would make an absolute export tolerance meaningless. Calibrated statistics give
    every BN a unit-scale output, as in a trained network. Weights are untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    gen = torch.Generator().manual_seed(seed)
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(steps):
                model(torch.randn(batch, *input_size, generator=gen))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model


RANDOM_INIT_SEED = 0


def resolve_model(name: str, checkpoint_path: str | os.PathLike | None = None) -> ResolvedModel:
    """Build ``name`` from the zoo, or from timm if only timm knows it, in eval mode, with its weights.

    The weights are ``checkpoint_path`` if given, else those the zoo's cfg names (a search result's
    ``weights.pth``, a shipped or installed file): a model that has weights is never exported without them,
    and a missing, changed or corrupt file is an error. Only a model with no weights anywhere is built at
    random init, its BatchNorm statistics calibrated on random inputs (:func:`calibrate_batchnorm`) so exports
    are verified on realistically scaled outputs; ``ResolvedModel.weights`` says which it was.

    The random init is drawn from ``RANDOM_INIT_SEED`` (the caller's global RNG is left as it was), so a model
    without weights is the same network on every export: the compatibility matrix and a bug report reproduce.

    Raises:
        zoo.UnknownModelError: neither the zoo nor timm has ``name`` (zoo names are suggested).
        zoo.WeightsError: the weights are missing, corrupt, changed since registration or do not fit.
    """
    weights = None
    if zoo.is_model(name):
        record = zoo.get_pretrained_cfg(name)
        if checkpoint_path is not None or record.has_weights:
            weights = pretrained.resolve_weights(name, record, checkpoint_path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = zoo.create_model(name, pretrained=weights is not None, checkpoint_path=checkpoint_path)
        spec, source = model.arch_spec.to_json(), "zoo"
    elif timm.is_model(name):
        weights = Path(checkpoint_path) if checkpoint_path is not None else None
        if weights is not None:  # read it ourselves first: timm's loader reports a corrupt file without its name
            if not weights.is_file():
                raise pretrained.WeightsNotFoundError(f"checkpoint file {str(weights)!r} does not exist")
            pretrained.read_state_dict(weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(name, pretrained=False, checkpoint_path=checkpoint_path)
        spec, source = None, "timm"
    else:
        zoo.get_pretrained_cfg(name)  # raises UnknownModelError with close zoo matches
        raise AssertionError("unreachable")
    cfg = model.pretrained_cfg  # a plain dict for zoo and timm models alike
    input_size, mean, std = tuple(cfg["input_size"]), tuple(cfg["mean"]), tuple(cfg["std"])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    if weights is None:
        calibrate_batchnorm(model, input_size)
    return ResolvedModel(name, source, model.eval(), input_size, mean, std, spec, crop_pct,
                         **_provenance(weights))


def _provenance(weights: Path | None) -> dict[str, str | None]:
    if weights is None:
        return {"weights_file": None, "weights_sha256": None}
    return {"weights_file": str(weights.resolve()), "weights_sha256": pretrained.sha256_of(weights)}


def resolve_spec(spec_path: str | os.PathLike, checkpoint_path: str | os.PathLike | None = None, *,
                 name: str | None = None, input_size: tuple[int, int, int] | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> ResolvedModel:
    """Build a model from a spec JSON file (a search result), with local weights if given, in eval mode.

    The spec says nothing about preprocessing, so ``input_size`` defaults to 224×224 for 1000 classes and
    32×32 otherwise, and mean/std to ImageNet's or CIFAR-10's accordingly. Without weights, BatchNorm is
    calibrated as in :func:`resolve_model`.

    Raises:
        FileNotFoundError / ValueError: the spec file is missing or not a valid spec.
        zoo.WeightsError: the weights file is missing, corrupt or does not fit the spec.
    """
    path = Path(spec_path)
    try:
        text = path.read_text()
    except OSError as err:
        raise FileNotFoundError(f"cannot read spec file {str(path)!r}: {err.strerror or err}") from err
    try:
        spec = zoo.spec_from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{str(path)!r} is not a valid architecture spec: {str(err).splitlines()[0]}") from err
    imagenet = spec.num_classes == 1000
    side = 224 if imagenet else 32
    cfg = zoo.PretrainedCfg(
        input_size=input_size or (spec.in_chans, side, side),
        mean=mean or (pretrained.IMAGENET_MEAN if imagenet else pretrained.CIFAR10_MEAN),
        std=std or (pretrained.IMAGENET_STD if imagenet else pretrained.CIFAR10_STD),
        num_classes=spec.num_classes, crop_pct=0.875 if imagenet else 1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)  # as resolve_model: a spec without weights exports reproducibly
        model = zoo.build_model(spec)
    label = name or path.name.removesuffix(".json")
    weights = None
    if checkpoint_path is not None:
        weights = pretrained.load_pretrained(model, label, cfg, num_classes=spec.num_classes, in_chans=spec.in_chans,
                                             checkpoint_path=checkpoint_path)
    else:
        calibrate_batchnorm(model, cfg.input_size)
    return ResolvedModel(label, "spec", model.eval(), cfg.input_size, cfg.mean, cfg.std, spec.to_json(),
                         cfg.crop_pct, **_provenance(weights))


def model_metadata(resolved: ResolvedModel) -> dict[str, str]:
    meta = {"model_name": resolved.name, "source": resolved.source,
            "input_size": json.dumps(list(resolved.input_size)),
            "mean": json.dumps(list(resolved.mean)), "std": json.dumps(list(resolved.std)),
            "weights": json.dumps(resolved.weights)}
    if resolved.arch_spec_json:
        meta["arch_spec"] = resolved.arch_spec_json
    if resolved.deploy_metadata:
        meta["deploy"] = resolved.deploy_metadata  # the plan; arch_spec stays the training-time spec
    return meta


@exporter
def export_model(resolved: ResolvedModel, out_dir: str | os.PathLike, fmt: str = "onnx",
                 cfg: OnnxExportConfig = OnnxExportConfig()) -> OnnxExportReport:
    """Export to a verified ``out_dir/<name>.onnx`` and write the report as ``<name>.onnx.json``.

    The one-format shortcut the latency comparison uses; :func:`export.formats.export_formats` does
    every format.
    """
    if fmt != "onnx":
        raise UnsupportedFormatError(f"export_model writes ONNX only, got {fmt!r}; use export.formats.export_formats")
    path = Path(out_dir) / f"{resolved.name}.onnx"
    report = export_onnx(resolved.model, path, resolved.input_size, metadata=model_metadata(resolved), cfg=cfg)
    write_json_atomic(path.with_name(path.name + ".json"), report.to_dict() | {"weights": resolved.weights})
    return report
