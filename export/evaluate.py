"""Accuracy of a model and of each of its exported artefacts, each run in its own runtime on the same labelled images.

Owns what ``mzoo eval`` measures: the labelled evaluation set (:class:`EvalSet`: an ImageFolder directory or zip,
optionally one split of it, all of it or a seeded class-balanced subset, preprocessed one batch at a time so that
every runtime sees exactly the same float32 inputs), how a model's outputs are scored against the set's classes
(:class:`LabelMapping`: output *i* is the *i*-th class folder, or, for an ImageNet model on CIFAR-10 photos, the
ImageNet class mapped to CIFAR-10 by :func:`zoo.convert.imagenet_to_cifar10`: "mapped top-1"), one runner per
runtime (eager PyTorch fp32 as the reference, ONNX Runtime for the three ONNX files, the ExecuTorch runtime for
``.pte``; Core ML predicts only on macOS and is listed as such), and the result (:class:`EvalReport`: top-1, top-5,
their drop against PyTorch fp32 in points and top-1 agreement with it, per format, as JSON and Markdown).
Artefacts are made by :func:`export.formats.export_formats`; without an output directory they are made in a
temporary one with the fp16/int8 agreement gates measured but not enforced, so that every format gets a figure and
the row says whether its export gate would have passed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from common.errors import ImageDataError, InputError
from common.files import scratch_directory
from common.images import (ImageFile, ImageReader, default_image_source, eval_transform, list_images,
                           select_images)
from export.errors import ExportError, one_line
from export.formats import ExportOptions, export_formats, parse_formats
from export.onnx_precision import (AgreementThresholds, Fp16Config, Int8Config, default_thresholds, failed_threshold,
                                   measure_agreement)
from export.pipeline import ResolvedModel
from export.runners import LITERT_FORMATS, REFERENCE, Runner, TorchRunner, open_runner
from zoo.convert import CIFAR10_CLASSES, IMAGENET_CLASSES, imagenet_to_cifar10

CIFAR10 = "cifar10"  # the --data preset: the shared CIFAR-10 JPEG zip, test split
DEFAULT_EVAL_FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "coreml", "pte")
AUTO_SPLITS = ("test", "val")  # with split=None, the first of these folders a source has is evaluated
# Gates measured, not enforced: nothing a finite output can score is below these.
UNGATED = AgreementThresholds(top1_agreement=0.0, mean_cosine=-1.0, min_cosine=-1.0, gain_over_constant=-1.0)
Status = Literal["ok", "failed", "needs macOS"]


@dataclass(frozen=True)
class EvalConfig:
    """How many images, which ones, and how they are run.

    ``limit`` None evaluates every image of the split; otherwise that many, class-balanced and chosen by ``seed``
    (:func:`common.images.select_images`). ``crop_pct`` None uses the model's own, except on the shared CIFAR-10
    photos, which are 32×32 and are scaled up whole (1.0) as ``bench/lite_mapped_cifar.py`` does. ``threads`` is
    ONNX Runtime's intra-op thread count (0: its default); PyTorch follows ``torch.get_num_threads()``.
    """

    limit: int | None = None
    seed: int = 0
    batch_size: int = 50
    threads: int = 0
    crop_pct: float | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        for name, flag, low in (("batch_size", "EvalConfig.batch_size", 1), ("threads", "--threads", 0),
                                ("seed", "--seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{flag} must be an int >= {low}, got {value!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise InputError(f"--limit must be a positive number of images, got {self.limit!r}")
        if self.crop_pct is not None and not (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1):
            raise InputError(f"--crop-pct must be in (0, 1], got {self.crop_pct!r}")


# ------------------------------------------------------------------------------------------------ labels


@dataclass(frozen=True)
class LabelMapping:
    """Which of the data's classes each model output stands for; an output standing for none is always wrong.

    ``targets[i]`` is the index into ``classes`` of output ``i``, or None. Top-k is a hit when any of the ``k``
    highest outputs stands for the image's class (for a mapped ImageNet model: any of its top-5 ImageNet classes
    maps to the label).
    """

    name: str  # "direct" or "imagenet->cifar10"
    description: str
    classes: tuple[str, ...]
    targets: tuple[int | None, ...]

    @property
    def mapped(self) -> bool:
        return self.name != "direct"

    def hits(self, logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
        """Per image: whether one of the ``k`` highest outputs stands for its label (a bool array)."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != len(self.targets) or len(logits) != len(labels):
            raise InputError(f"need ({len(labels)}, {len(self.targets)}) logits, got {logits.shape}")
        k = min(k, logits.shape[1])
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        table = np.array([-1 if t is None else t for t in self.targets])
        return np.any(table[top] == np.asarray(labels)[:, None], axis=1)


def label_mapping(num_outputs: int, classes: Sequence[str]) -> LabelMapping:
    """The mapping from ``num_outputs`` model outputs to ``classes`` (the data's sorted class folders).

    One output per class maps directly (output ``i`` is the ``i``-th folder, as torchvision's ImageFolder and
    ``search.data`` number them). A 1000-output (ImageNet) model on the CIFAR-10 classes is scored through
    ``zoo/data/imagenet_to_cifar10.json``. Anything else raises ``InputError`` naming both counts.
    """
    classes = tuple(classes)
    if num_outputs == len(classes):
        return LabelMapping("direct", f"output i is class i of the {len(classes)} sorted class folders", classes,
                            tuple(range(num_outputs)))
    if num_outputs == IMAGENET_CLASSES and classes == CIFAR10_CLASSES:
        mapping = imagenet_to_cifar10()
        targets = tuple(None if c is None else classes.index(c) for c in mapping)
        used = sum(t is not None for t in targets)
        return LabelMapping("imagenet->cifar10",
                            f"ImageNet prediction mapped to CIFAR-10 ({used} of 1000 ImageNet classes map to one; "
                            "zoo/data/imagenet_to_cifar10.json): mapped top-1/top-5", classes, targets)
    shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    raise InputError(f"the model has {num_outputs} outputs but the data has {len(classes)} classes ({shown}); "
                     f"evaluation needs one output per class, or an ImageNet model on the CIFAR-10 classes")


# ------------------------------------------------------------------------------------------------ the data


@dataclass(frozen=True)
class EvalSet:
    """The labelled images of one evaluation and how they are preprocessed for one model.

    Holds file names, not pixels: :meth:`batches` decodes and preprocesses them (timm's eval transform, then
    ``(x - mean) / std``, as :func:`common.images.load_images`), so a 10,000-image set at 260×260 needs memory for
    one batch only, and every runtime is given the same arrays.
    """

    source: str
    split: str | None
    classes: tuple[str, ...]
    files: tuple[ImageFile, ...]
    total: int  # images in the split, of which ``files`` were chosen
    seed: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: str

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[f.label] for f in self.files], dtype=np.int64)

    def describe(self) -> str:
        where = self.source + (f" (split {self.split!r})" if self.split else "")
        which = (f"all {len(self)} images" if len(self) == self.total else
                 f"{len(self)} of its {self.total} images (class-balanced, seed {self.seed})")
        return (f"{where}: {which}, {len(self.classes)} classes; resized to {self.input_size[1]}x"
                f"{self.input_size[2]} ({self.interpolation}, crop_pct {self.crop_pct:g}), normalised with the "
                "model's mean/std")

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """The preprocessed float32 NCHW images in order, ``batch_size`` at a time."""
        channels, height, width = self.input_size
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        mode = "RGB" if channels == 3 else "L"
        with ImageReader(Path(self.source)) as reader:
            for start in range(0, len(self.files), batch_size):
                chunk = self.files[start:start + batch_size]
                batch = np.empty((len(chunk), channels, height, width), dtype=np.float32)
                for i, file in enumerate(chunk):
                    pixels = eval_transform(reader.open(file.name, mode), (height, width), self.crop_pct,
                                            self.interpolation)
                    batch[i] = pixels.reshape(height, width, channels).transpose(2, 0, 1)
                batch -= mean
                batch /= std
                yield batch


def data_source(data: str | os.PathLike[str] | None) -> Path:
    """``data`` as an image source path: None or ``"cifar10"`` is the shared CIFAR-10 zip, else the path given.

    Raises ``ImageDataError`` naming ``--data`` when it does not exist (the contents are read by
    :func:`open_eval_set`).
    """
    if data is None or str(data) == CIFAR10:
        shared = default_image_source()
        if shared is None:
            raise ImageDataError("--data cifar10: the shared CIFAR-10 JPEGs are not there (set MZOO_SHARED_DATA to "
                                 "the folder holding cifar10/cifar10_jpg.zip, or pass --data DIR|ZIP)")
        return shared
    path = Path(data)
    if not path.exists():
        raise ImageDataError(f"--data {str(path)!r} does not exist (give an ImageFolder directory, a .zip of one, "
                             f"or {CIFAR10!r})")
    return path


def default_calibration() -> str | None:
    """Where int8 is calibrated by default: the shared CIFAR-10 zip (its train split), or None when absent."""
    shared = default_image_source()
    return None if shared is None else str(shared)


def is_shared_cifar10(source: str | os.PathLike[str]) -> bool:
    shared = default_image_source()
    return shared is not None and Path(source).resolve() == shared.resolve()


def open_eval_set(source: str | os.PathLike[str], resolved: ResolvedModel, cfg: EvalConfig = EvalConfig()) -> EvalSet:
    """The images of ``source`` to evaluate ``resolved`` on, chosen and preprocessed as ``cfg`` says.

    The split is ``cfg.split``, or else the source's ``test`` (or ``val``) folder if it has one, or else the whole
    source. Raises ``ImageDataError`` for a source without images or with fewer than ``cfg.limit``.
    """
    path = Path(source)
    split = cfg.split if cfg.split is not None else _auto_split(path)
    every = list_images(path, split)
    count = len(every) if cfg.limit is None else cfg.limit
    if count > len(every):
        raise ImageDataError(f"--limit {count}: {str(path)!r}" + (f" split {split!r}" if split else "")
                             + f" has only {len(every)} images")
    chosen = select_images(every, count, seed=cfg.seed)
    crop = cfg.crop_pct if cfg.crop_pct is not None else (1.0 if is_shared_cifar10(path) else resolved.crop_pct)
    interpolation = str(resolved.model.pretrained_cfg.get("interpolation") or "bilinear")
    return EvalSet(str(path), split, tuple(sorted({f.label for f in every})), tuple(chosen), len(every), cfg.seed,
                   resolved.input_size, resolved.mean, resolved.std, float(crop), interpolation)


def _auto_split(path: Path) -> str | None:
    for split in AUTO_SPLITS:
        with contextlib.suppress(ImageDataError):
            list_images(path, split)
            return split
    return None


# ------------------------------------------------------------------------------------------------ artefacts


def artefact_format(path: str | os.PathLike[str]) -> str:
    """The format of an artefact file: ONNX files by their ``mzoo.variant`` metadata (fp32 when absent), the
    others by suffix. Raises ``InputError`` for anything else."""
    p = Path(path)
    if p.name.endswith(".mlpackage"):
        return "coreml"
    if p.suffix == ".pte":
        return "pte"
    if p.suffix == ".onnx":
        from export.onnx import onnx_metadata

        variant = onnx_metadata(p).get("mzoo.variant")
        formats = {None: "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}
        if variant not in formats:
            raise InputError(f"{str(p)!r} has an unknown mzoo.variant {variant!r} (expected fp16 or int8)")
        return formats[variant]
    if p.suffix == ".tflite":
        from export.litert import litert_metadata

        precision = litert_metadata(p).get("mzoo.precision", "fp32")
        fmt = "litert" if precision == "fp32" else f"litert-{precision}"
        if fmt not in LITERT_FORMATS:
            raise InputError(f"{str(p)!r} has an unknown mzoo.precision {precision!r}")
        return fmt
    if p.suffix == ".ncnn" and p.is_dir():
        return "ncnn"
    raise InputError(f"{str(p)!r} is not an artefact mzoo eval can run (.onnx, .pte, .tflite, .ncnn, .mlpackage)")


def artefact_metadata(path: str | os.PathLike[str], fmt: str) -> dict[str, str]:
    """The model metadata an exporter stored in the artefact (``model_name``, ``weights``, ``input_size``, ...)."""
    if fmt == "pte":
        from export.executorch import pte_metadata

        return pte_metadata(path)
    if fmt.startswith("onnx"):
        from export.onnx import onnx_metadata

        return onnx_metadata(path)
    if fmt in LITERT_FORMATS:
        from export.litert import litert_metadata

        return litert_metadata(path)
    if fmt == "ncnn":
        from export.ncnn import ncnn_metadata

        return ncnn_metadata(path)
    raise InputError(f"{str(path)!r}: the model behind a {fmt} artefact cannot be read here; evaluate it by "
                     "model name instead")


def check_artefact_matches(path: str | os.PathLike[str], fmt: str, resolved: ResolvedModel) -> None:
    """Refuse an artefact that was not exported from ``resolved`` as built here: another model, input size or
    preprocessing, or other weights (compared by sha256). A random-init artefact has no PyTorch reference that
    can be rebuilt, so it is refused too. Raises ``InputError`` naming what differs."""
    import json

    meta = artefact_metadata(path, fmt)
    where = f"artefact {str(path)!r}"
    if meta.get("model_name") != resolved.name:
        raise InputError(f"{where} was exported from model {meta.get('model_name')!r}, not {resolved.name!r}")
    for key, ours in (("input_size", list(resolved.input_size)), ("mean", list(resolved.mean)),
                      ("std", list(resolved.std))):
        theirs = json.loads(meta.get(key, "null"))
        if theirs is None or not np.allclose(theirs, ours):
            raise InputError(f"{where} has {key} {theirs}, the model {ours}")
    weights = json.loads(meta.get("weights", "null"))
    if not isinstance(weights, dict):
        raise InputError(f"{where} was exported at random init ({weights!r}); its PyTorch reference cannot be "
                         "rebuilt, so its accuracy cannot be compared")
    if resolved.random_init or weights.get("sha256") != resolved.weights_sha256:
        raise InputError(f"{where} was exported with weights {weights.get('file')!r} (sha256 "
                         f"{str(weights.get('sha256'))[:12]}...), the model resolves to {resolved.weights}; "
                         f"pass --checkpoint {weights.get('file')}")


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class FormatAccuracy:
    """One row: a format run in its runtime, or why it was not.

    Accuracies are fractions; ``top1_drop``/``top5_drop`` are PyTorch fp32 minus this format, in percentage
    points (positive: the format lost accuracy); ``top1_drop_se`` is its standard error over images (paired:
    only images that one of the two gets right and the other wrong contribute). ``agreement`` is the fraction of images whose top output
    equals PyTorch fp32's. ``gate`` is the fp16/int8 export gate's verdict on this artefact ("" where there is
    none): "passed", "passed (enforced)" (exported with the gate on), or "FAILED: <metric> <value> < <minimum>"
    against the thresholds the export applies to this model by default.
    """

    format: str
    runtime: str
    status: Status
    top1: float | None = None
    top5: float | None = None
    top1_drop: float | None = None
    top5_drop: float | None = None
    top1_drop_se: float | None = None  # standard error of top1_drop (points), from the images scored differently
    agreement: float | None = None
    gate: str = ""
    path: str = ""
    run_seconds: float = 0.0
    export_seconds: float = 0.0
    note: str = ""
    given: bool = False  # an existing artefact passed by path (its row is looked up by that path)
    export_report: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.path if self.given else self.format

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalReport:
    """Per-format accuracy of one model on one evaluation set, with what was run and where."""

    model: str
    weights: dict[str, str] | str
    data: str
    num_images: int
    mapping: str
    mapping_description: str
    calibration: str
    gates: str
    rows: tuple[FormatAccuracy, ...]
    environment: dict[str, Any]

    def row(self, key: str) -> FormatAccuracy:
        """The row of format ``key``, or of the given artefact at path ``key``."""
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(f"no row for {key!r}; rows: {[r.key for r in self.rows]}")

    @property
    def reference(self) -> FormatAccuracy:
        return self.row(REFERENCE)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = [r.to_dict() for r in self.rows]
        return data

    def to_markdown(self, heading: bool = True) -> str:
        top = "mapped top" if self.mapping != "direct" else "top"
        lines = [f"### {self.model}: accuracy of each format", ""] if heading else []
        lines += [f"- data: {self.data}", f"- labels: {self.mapping_description}",
                  f"- weights: {_describe_weights(self.weights)}", f"- int8 calibration: {self.calibration}",
                  f"- export gates: {self.gates}", "",
                  f"| format | runtime | {top}-1 | {top}-5 | {top}-1 drop (pts) | {top}-5 drop (pts) "
                  "| top-1 agreement with fp32 | export gate | run s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [_markdown_row(r) for r in self.rows]
        notes = [f"- {r.format}: {r.note}" for r in self.rows if r.note]
        return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _markdown_row(r: FormatAccuracy) -> str:
    name = f"{r.format} `{Path(r.path).name}`" if r.given else r.format
    if r.status != "ok":
        return f"| {name} | {r.runtime} | **{r.status}** | | | | | {r.gate} | |"
    drops = [("—" if r.format == REFERENCE else f"{d:+.2f}") for d in (r.top1_drop, r.top5_drop)]
    if r.format != REFERENCE and r.top1_drop_se is not None:
        drops[0] += f" ± {r.top1_drop_se:.2f}"
    return (f"| {name} | {r.runtime} | {_percent(r.top1)} | {_percent(r.top5)} | {drops[0]} | {drops[1]} "
            f"| {_percent(r.agreement)} | {r.gate or '—'} | {r.run_seconds:.1f} |")


def _percent(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _describe_weights(weights: dict[str, str] | str) -> str:
    if isinstance(weights, dict):
        return f"{Path(weights['file']).name} (sha256 {weights['sha256'][:12]})"
    return weights


# ------------------------------------------------------------------------------------------------ evaluating


Progress = Callable[[str, int], None]  # (stage, amount): "export" per format done, "images" per batch done


def eval_export_options(options: ExportOptions, resolved: ResolvedModel, gated: bool) -> ExportOptions:
    """``options`` with the fp16/int8 gates of every format (ONNX's and LiteRT's) switched off unless ``gated``
    (other settings kept): the gate's verdict is then measured and shown, and the file is scored either way."""
    if gated:
        return options
    fp16 = options.fp16 or Fp16Config(thresholds=default_thresholds("fp16", trained=not resolved.random_init))
    int8 = options.int8 or Int8Config(thresholds=default_thresholds("int8", trained=not resolved.random_init))
    return replace(options, fp16=replace(fp16, thresholds=UNGATED), int8=replace(int8, thresholds=UNGATED),
                   litert=replace(options.litert, thresholds=UNGATED))


def evaluate(
    resolved: ResolvedModel,
    eval_set: EvalSet,
    formats: str | Sequence[str] = DEFAULT_EVAL_FORMATS,
    *,
    options: ExportOptions = ExportOptions(),
    artefacts: Sequence[str | os.PathLike[str]] = (),
    out_dir: str | os.PathLike[str] | None = None,
    cfg: EvalConfig = EvalConfig(),
    on_progress: Progress | None = None,
) -> EvalReport:
    """Accuracy of ``resolved`` in eager PyTorch fp32 and of each format, on the same preprocessed images.

    Each of ``formats`` is exported by :func:`export.formats.export_formats` (``coreml`` is not: Core ML predicts
    only on macOS, and its row says so). With ``out_dir`` the artefacts are exported there exactly as
    ``mzoo export`` would (gates enforced: a variant that fails its gate is a failed row without figures) and
    kept; without it they are made in a temporary directory with the fp16/int8 gates measured but not enforced
    (the row's ``gate`` gives the verdict against the thresholds the export would apply). ``artefacts`` are
    existing files to evaluate as well, each keyed by its path; each must have been exported from ``resolved``
    (:func:`check_artefact_matches`). An export or runtime failure becomes a failed row naming the error.
    """
    from common.environment import current_environment

    names = parse_formats(formats) if formats else ()
    prepared = (eval_set.input_size, tuple(eval_set.mean), tuple(eval_set.std))
    if prepared != (resolved.input_size, tuple(resolved.mean), tuple(resolved.std)):
        raise InputError(f"the evaluation set was preprocessed for input {prepared[0]}, mean {prepared[1]}, std "
                         f"{prepared[2]}, but {resolved.name} takes {resolved.input_size}, {resolved.mean}, "
                         f"{resolved.std}; open it with open_eval_set(source, resolved)")
    given = [(artefact_format(p), str(p)) for p in artefacts]
    for fmt, path in given:
        if fmt != "coreml":
            check_artefact_matches(path, fmt, resolved)
    mapping = label_mapping(num_outputs(resolved), eval_set.classes)
    gated = out_dir is not None
    rows: dict[str, FormatAccuracy] = {}
    runners: dict[str, Runner] = {REFERENCE: TorchRunner(resolved.model)}
    with contextlib.ExitStack() as stack:
        directory = Path(out_dir) if gated else stack.enter_context(scratch_directory("mzoo-eval-"))
        exportable = tuple(f for f in names if f != "coreml")
        cells = []
        if exportable:
            cells = export_formats(resolved, directory, exportable, eval_export_options(options, resolved, gated),
                                   keep_going=True, on_cell=lambda cell: on_progress and on_progress("export", 1))
        for cell in cells:
            if cell.status != "ok":
                rows[cell.format] = FormatAccuracy(cell.format, _RUNTIME_NAMES[cell.format], "failed",
                                                   note=f"export {cell.status}: {cell.error}",
                                                   export_seconds=cell.seconds)
            else:
                row = FormatAccuracy(cell.format, "", "ok", path=cell.path, export_seconds=cell.seconds,
                                     export_report=cell.report, gate=_gate(cell.format, cell.report, resolved, gated))
                _add_runner(cell.format, row, cfg.threads, rows, runners)
        for fmt, path in given:
            row = FormatAccuracy(fmt, _RUNTIME_NAMES[fmt], "ok", path=path, given=True)
            if fmt == "coreml":
                rows[path] = replace(_coreml_row(path), given=True)
            else:
                _add_runner(path, row, cfg.threads, rows, runners)
        if "coreml" in names:
            rows["coreml"] = _coreml_row("")
        logits, seconds, errors = run_runners(runners, eval_set, cfg.batch_size, on_progress)
    rows |= score_rows(rows, runners, logits, seconds, errors, eval_set.labels, mapping)
    order = [REFERENCE, *names, *(p for _, p in given)]
    return EvalReport(
        model=resolved.name, weights=resolved.weights, data=eval_set.describe(), num_images=len(eval_set),
        mapping=mapping.name, mapping_description=mapping.description,
        calibration=_calibration(names, options),
        gates=(f"enforced, as by mzoo export (artefacts kept in {out_dir})" if gated else
               "measured, not enforced (artefacts made in a temporary directory); the column gives each verdict"),
        rows=tuple(rows[k] for k in order if k in rows), environment=current_environment().to_dict())


_RUNTIME_NAMES = {"onnx": "ONNX Runtime CPU", "onnx-fp16": "ONNX Runtime CPU", "onnx-int8": "ONNX Runtime CPU",
                  "pte": "ExecuTorch", "coreml": "Core ML", **dict.fromkeys(LITERT_FORMATS, "LiteRT XNNPACK"),
                  "ncnn": "ncnn"}


def num_outputs(resolved: ResolvedModel) -> int:
    """How many outputs (classes) the model has, from one forward pass of zeros."""
    with torch.inference_mode():
        return int(resolved.model(torch.zeros(1, *resolved.input_size)).shape[-1])


def _add_runner(key: str, row: FormatAccuracy, threads: int, rows: dict[str, FormatAccuracy],
                runners: dict[str, Runner]) -> None:
    """Open the runner of ``row``'s artefact under ``key``, or record why it cannot be loaded."""
    try:
        runner = open_runner(row.format, row.path, threads)
    except ExportError as err:
        rows[key] = replace(row, status="failed", note=f"cannot load: {str(err).splitlines()[0]}")
        return
    runners[key] = runner
    rows[key] = replace(row, runtime=runner.runtime)


def _coreml_row(path: str) -> FormatAccuracy:
    if sys.platform == "darwin":
        note = "Core ML evaluation is not implemented yet; `mzoo export --format coreml` verifies it numerically"
    else:
        note = "Core ML predicts only on macOS (coremltools converts here but cannot run the model)"
    return FormatAccuracy("coreml", "Core ML", "needs macOS", path=path, note=note)


GATED_FORMATS = ("onnx-fp16", "onnx-int8", "litert-fp16", "litert-int8-dynamic", "litert-int8")


def _gate(fmt: str, report: Mapping[str, Any], resolved: ResolvedModel, gated: bool) -> str:
    if fmt not in GATED_FORMATS:
        return ""
    if gated:
        return "passed (enforced)"
    thresholds = default_thresholds("fp16" if fmt.endswith("fp16") else "int8", trained=not resolved.random_init)
    failed = failed_threshold(report["top1_agreement"], report["mean_cosine"], report["min_cosine"],
                              report["constant_output_cosine"], thresholds)
    return "passed" if failed is None else f"FAILED: {failed[0]} {failed[1]:.4g} < {failed[2]:.4g}"


def _calibration(names: Sequence[str], options: ExportOptions) -> str:
    if "onnx-int8" not in names and "litert-int8" not in names:
        return "none exported here (no onnx-int8 or litert-int8 in --formats)"
    n = (options.int8 or Int8Config()).num_calibration if "onnx-int8" in names else options.litert.num_calibration
    if not options.calibration:
        return f"{n} random-noise inputs (no calibration images given)"
    split = " (train split)" if is_shared_cifar10(options.calibration) else ""
    return f"{n} images of {options.calibration}{split}"


def run_runners(runners: Mapping[str, Runner], eval_set: EvalSet, batch_size: int,
                on_progress: Progress | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """Every runner on every batch of ``eval_set``: logits, run seconds and error (one line) by runner key.

    A runner that raises stops being run (its error is kept); the others go on.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in runners}
    seconds = dict.fromkeys(runners, 0.0)
    errors: dict[str, str] = {}
    for batch in eval_set.batches(batch_size):
        for key, runner in runners.items():
            if key in errors:
                continue
            start = time.perf_counter()
            try:
                parts[key].append(runner(batch))
            except Exception as err:  # a runtime failing on real images is a result, recorded in its row
                errors[key] = one_line(err)
            seconds[key] += time.perf_counter() - start
        if on_progress:
            on_progress("images", len(batch))
    logits = {k: np.concatenate(p) for k, p in parts.items() if k not in errors}
    return logits, seconds, errors


def score_rows(rows: Mapping[str, FormatAccuracy], runners: Mapping[str, Runner], logits: Mapping[str, np.ndarray],
               seconds: Mapping[str, float], errors: Mapping[str, str], labels: np.ndarray,
               mapping: LabelMapping) -> dict[str, FormatAccuracy]:
    """The reference row and each run row with its accuracy, drop against the reference and agreement with it."""
    if REFERENCE in errors:
        raise ExportError(f"eager PyTorch, the reference, failed on the evaluation images: {errors[REFERENCE]}")
    reference = logits[REFERENCE]
    ref_hits = mapping.hits(reference, labels, 1)
    ref_top1, ref_top5 = float(ref_hits.mean()), float(mapping.hits(reference, labels, 5).mean())
    out = {REFERENCE: FormatAccuracy(REFERENCE, runners[REFERENCE].runtime, "ok", top1=ref_top1, top5=ref_top5,
                                     top1_drop=0.0, top5_drop=0.0, agreement=1.0, run_seconds=seconds[REFERENCE])}
    for key in runners:
        if key == REFERENCE:
            continue
        row = replace(rows[key], run_seconds=seconds[key])
        if key in errors:
            out[key] = replace(row, status="failed", note=f"runtime error: {errors[key]}")
            continue
        got = logits[key]
        if got.shape != reference.shape or not np.all(np.isfinite(got)):
            what = f"output shape {got.shape}, PyTorch {reference.shape}" if got.shape != reference.shape else \
                "non-finite logits"
            out[key] = replace(row, status="failed", note=what)
            continue
        hits = mapping.hits(got, labels, 1)
        top1, top5 = float(hits.mean()), float(mapping.hits(got, labels, 5).mean())
        out[key] = replace(row, top1=top1, top5=top5, top1_drop=100 * (ref_top1 - top1),
                           top5_drop=100 * (ref_top5 - top5), top1_drop_se=paired_se(ref_hits, hits),
                           agreement=measure_agreement(reference, got).top1_agreement)
    return out


def paired_se(reference: np.ndarray, other: np.ndarray) -> float:
    """Standard error, in points, of the difference of two accuracies measured on the same images.

    ``reference`` and ``other`` are per-image hits. Only discordant images carry information: with ``b`` right
    only in the reference and ``c`` right only in the other, the difference is (b - c) / n and its variance
    ((b + c) - (b - c)² / n) / n².
    """
    n = len(reference)
    b = int(np.sum(reference & ~other))
    c = int(np.sum(~reference & other))
    return 100 * float(np.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0))) / n
