"""Every deployable format of one model, and of the whole zoo: dispatch, reports and the compatibility matrix.

Owns the format names a user types (``onnx``, ``onnx-fp16``, ``onnx-int8``, ``coreml``, ``pte``, ``litert``,
``litert-fp16``, ``litert-int8-dynamic``, ``litert-int8``, ``ncnn``), the
options that reach each exporter, the order they run in (the fp16 and int8 variants are made from the
verified fp32 ONNX file), one ``<artefact>.json`` report beside each artefact, and the model × format
compatibility matrix that ``mzoo export --all`` writes as Markdown and JSON. The exporters themselves live
in :mod:`export.onnx`, :mod:`export.onnx_precision`, :mod:`export.coreml`, :mod:`export.executorch`,
:mod:`export.litert` and :mod:`export.ncnn`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from export.coreml import CoremlExportConfig, export_coreml
from export.errors import CalibrationDataError, ExportError, UnsupportedFormatError, exporter, one_line
from export.executorch import PteExportConfig, export_pte
from export.litert import LitertExportConfig
from export.ncnn import NcnnExportConfig
from common.files import prepare_directory, remove, scratch_directory, write_json_atomic, write_text_atomic
from common.images import check_images, default_image_source, load_images
from export.onnx import OnnxExportConfig, export_onnx
from export.onnx_precision import (FP16_THRESHOLDS, FP16_THRESHOLDS_TRAINED, INT8_THRESHOLDS, INT8_THRESHOLDS_TRAINED,
                                   Fp16Config, Int8Config, convert_fp16, quantize_int8)
from export.pipeline import ResolvedModel, model_metadata

# name -> artefact suffix; the order is the order a model's formats are exported and shown in.
FORMATS: Mapping[str, str] = {
    "onnx": ".onnx",
    "onnx-fp16": ".fp16.onnx",
    "onnx-int8": ".int8.onnx",
    "coreml": ".mlpackage",
    "pte": ".pte",
    # LiteRT (TFLite) and ncnn: the android extra (export.litert, export.ncnn). ncnn's artefact is a directory.
    "litert": ".tflite",
    "litert-fp16": ".fp16.tflite",
    "litert-int8-dynamic": ".int8-dynamic.tflite",
    "litert-int8": ".int8.tflite",
    "ncnn": ".ncnn",
}
# The formats checked on real images (the fp16/int8 gates).
_IMAGE_FORMATS = frozenset({"onnx-fp16", "onnx-int8", "litert-fp16", "litert-int8-dynamic", "litert-int8"})
DEFAULT_FORMATS = ("onnx",)
Status = Literal["ok", "failed", "unsupported"]

# (model pattern, format) -> why that pair cannot work. Each entry must be documented in the README and
# tested (tests/export/test_formats.py checks the pair really fails, so a fixed limitation is noticed).
KNOWN_UNSUPPORTED: Mapping[tuple[str, str], str] = {}


class ArtefactReport(Protocol):
    """What every exporter's report offers the matrix."""

    path: str
    export_seconds: float
    verification: str

    @property
    def summary(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ExportOptions:
    """Per-format configs plus the image sources of the reduced-precision checks.

    ``fp16`` / ``int8`` left as None are chosen per model: random-init models get the thresholds measured
    for random-init networks, models with loaded weights the ``*_THRESHOLDS_TRAINED`` measured on the trained zoo models
    (see :mod:`export.onnx_precision`).

    ``images`` is where the real verification batch for fp16 / int8 comes from (an ImageFolder directory or
    a .zip of one; default: the shared CIFAR-10 test JPEGs). ``calibration`` is int8's calibration set; when
    it is None int8 is calibrated on random data, which the report and matrix say loudly.
    """

    onnx: OnnxExportConfig = OnnxExportConfig()
    fp16: Fp16Config | None = None
    int8: Int8Config | None = None
    coreml: CoremlExportConfig = CoremlExportConfig()
    pte: PteExportConfig = PteExportConfig()
    litert: LitertExportConfig = LitertExportConfig()  # its precision is set by the format name
    ncnn: NcnnExportConfig = NcnnExportConfig()
    images: str | None = None
    calibration: str | None = None


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """``"onnx,coreml"`` or a sequence of names -> known format names in export order, without duplicates."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    if not names:
        raise UnsupportedFormatError(f"no export format given; supported: {', '.join(FORMATS)}")
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise UnsupportedFormatError(f"unknown export format {unknown[0]!r}; supported: {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in names)


def artefact_path(out_dir: str | os.PathLike, model: str, fmt: str) -> Path:
    """Where ``fmt`` of ``model`` is written: ``out_dir/<model><suffix>``; its report adds ``.json``."""
    return Path(out_dir) / f"{model}{FORMATS[fmt]}"


def known_unsupported(model: str, fmt: str) -> str | None:
    """The documented reason ``model`` cannot be exported to ``fmt``, or None."""
    for (pattern, f), reason in KNOWN_UNSUPPORTED.items():
        if f == fmt and fnmatch.fnmatchcase(model, pattern):
            return reason
    return None


@dataclass(frozen=True)
class Cell:
    """One model × format outcome: ``ok`` with a parity summary, ``failed`` with the error, or ``unsupported``."""

    model: str
    format: str
    status: Status
    summary: str = ""
    verification: str = ""
    error: str = ""
    seconds: float = 0.0
    path: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Session:
    """The state one model's formats share: the verified fp32 ONNX file and the real image batches."""

    def __init__(self, resolved: ResolvedModel, out_dir: Path, options: ExportOptions, scratch: Path) -> None:
        self.resolved, self.out_dir, self.options, self.scratch = resolved, out_dir, options, scratch
        self.fp32_onnx: Path | None = None

    def export_fp32(self, path: Path) -> ArtefactReport:
        """Export the verified fp32 ONNX file to ``path``; the fp16 and int8 variants are made from it."""
        r = self.resolved
        report = export_onnx(r.model, path, r.input_size, metadata=model_metadata(r), cfg=self.options.onnx)
        self.fp32_onnx = path
        return report

    def fp32(self) -> Path:
        """The verified fp32 ONNX file, exported to scratch space if ``onnx`` itself was not asked for."""
        if self.fp32_onnx is None:
            self.export_fp32(self.scratch / f"{self.resolved.name}.onnx")
        return self.fp32_onnx

    def reference(self, x: np.ndarray) -> np.ndarray:
        # A re-parameterised network is compared with the training-time one it must equal (export.deploy).
        model = self.resolved.trained_model if self.resolved.trained_model is not None else self.resolved.model
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    def trained_size(self, fmt: str) -> int | None:
        """Bytes of ``fmt`` exported from the training-time network (the size before re-parameterisation), in
        scratch space; the same exporter and verification as the artefact itself."""
        r = self.resolved
        trained = dataclasses.replace(r, model=r.trained_model, deploy=None, deploy_metadata=None, trained_model=None)
        out = self.scratch / f"trained-{fmt}"
        out.mkdir(exist_ok=True)
        path = artefact_path(out, r.name, fmt)
        _EXPORTERS[fmt](_Session(trained, out, self.options, out), path)
        return _size(path)

    def images(self, source: str | os.PathLike, count: int, seed: int, split: str, offset: int = 0) -> np.ndarray:
        """``count`` real images preprocessed for this model; the shared CIFAR-10 zip is read from ``split``.

        A user's folder is taken whole: calibration then starts at ``offset`` of the same seeded order as the
        verification batch, so the two never share an image.
        """
        r = self.resolved
        shared = default_image_source()
        use_split = split if shared is not None and Path(source).resolve() == shared.resolve() else None
        return load_images(source, r.input_size, r.mean, r.std, count=count, seed=seed, split=use_split,
                           offset=0 if use_split else offset, crop_pct=r.crop_pct)

    def verification_images(self, count: int, seed: int) -> tuple[np.ndarray, str]:
        source = self.options.images or default_image_source()
        if source is None:
            raise ExportError("no real images to verify fp16/int8 against: pass --images DIR (an ImageFolder or "
                              "a .zip of one) or set MZOO_SHARED_DATA to the folder holding "
                              "cifar10/cifar10_jpg.zip")
        return self.images(source, count, seed, "test"), str(source)


def _export_onnx(s: _Session, path: Path) -> ArtefactReport:
    return s.export_fp32(path)


def _fp16_config(s: _Session) -> Fp16Config:
    if s.options.fp16 is not None:
        return s.options.fp16
    return Fp16Config(thresholds=FP16_THRESHOLDS if s.resolved.random_init else FP16_THRESHOLDS_TRAINED)


def _int8_config(s: _Session) -> Int8Config:
    if s.options.int8 is not None:
        return s.options.int8
    return Int8Config(thresholds=INT8_THRESHOLDS if s.resolved.random_init else INT8_THRESHOLDS_TRAINED)


def _export_fp16(s: _Session, path: Path) -> ArtefactReport:
    cfg = _fp16_config(s)
    images, source = s.verification_images(cfg.num_images, cfg.seed)
    return convert_fp16(s.fp32(), path, images=images, image_source=source, reference=s.reference, cfg=cfg)


def _export_int8(s: _Session, path: Path) -> ArtefactReport:
    cfg = _int8_config(s)
    images, source = s.verification_images(cfg.num_images, cfg.seed)
    calibration = None  # quantize_int8 then calibrates on random data and says so loudly
    if s.options.calibration:
        same_source = Path(s.options.calibration).resolve() == Path(source).resolve()
        calibration = s.images(s.options.calibration, cfg.num_calibration, cfg.seed, "train",
                               offset=cfg.num_images if same_source else 0)
    return quantize_int8(s.fp32(), path, images=images, image_source=source, calibration=calibration,
                         calibration_source=s.options.calibration, reference=s.reference, cfg=cfg)


def _export_coreml(s: _Session, path: Path) -> ArtefactReport:
    r = s.resolved
    return export_coreml(r.model, path, r.input_size, mean=r.mean, std=r.std, metadata=model_metadata(r),
                         cfg=s.options.coreml)


def _export_pte(s: _Session, path: Path) -> ArtefactReport:
    r = s.resolved
    return export_pte(r.model, path, r.input_size, metadata=model_metadata(r), cfg=s.options.pte)


def _litert_exporter(precision: str) -> Callable[[_Session, Path], ArtefactReport]:
    def export(s: _Session, path: Path) -> ArtefactReport:
        from export.litert import export_litert
        from export.onnx_precision import default_thresholds

        r, trained = s.resolved, not s.resolved.random_init
        cfg = dataclasses.replace(s.options.litert, precision=precision)
        if precision != "fp32" and cfg.thresholds is None:
            cfg = dataclasses.replace(cfg, thresholds=default_thresholds("fp16" if precision == "fp16" else "int8",
                                                                         trained=trained))
        images = source = calibration = calibration_source = None
        if precision != "fp32":
            images, source = s.verification_images(cfg.num_images, cfg.seed)
        if precision == "int8" and s.options.calibration:
            same_source = Path(s.options.calibration).resolve() == Path(source).resolve()
            calibration = s.images(s.options.calibration, cfg.num_calibration, cfg.seed, "train",
                                   offset=cfg.num_images if same_source else 0)
            calibration_source = s.options.calibration
        return export_litert(r.model, path, r.input_size, metadata=model_metadata(r), cfg=cfg, images=images,
                             image_source=source, calibration=calibration, calibration_source=calibration_source,
                             reference=s.reference if precision != "fp32" else None)

    return export


def _export_ncnn(s: _Session, path: Path) -> ArtefactReport:
    from export.ncnn import export_ncnn

    r = s.resolved
    return export_ncnn(r.model, path, r.input_size, metadata=model_metadata(r), cfg=s.options.ncnn)


_EXPORTERS: Mapping[str, Callable[[_Session, Path], ArtefactReport]] = {
    "onnx": _export_onnx,
    "onnx-fp16": _export_fp16,
    "onnx-int8": _export_int8,
    "coreml": _export_coreml,
    "pte": _export_pte,
    "litert": _litert_exporter("fp32"),
    "litert-fp16": _litert_exporter("fp16"),
    "litert-int8-dynamic": _litert_exporter("int8-dynamic"),
    "litert-int8": _litert_exporter("int8"),
    "ncnn": _export_ncnn,
}


@exporter
def export_formats(
    resolved: ResolvedModel,
    out_dir: str | os.PathLike,
    formats: str | Iterable[str] = DEFAULT_FORMATS,
    options: ExportOptions = ExportOptions(),
    *,
    keep_going: bool = False,
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """Export ``resolved`` to each format (verified), writing ``<artefact>.json`` reports beside the artefacts.

    Without ``keep_going`` the first failure raises its ``ExportError``; with it, a failure becomes a
    ``failed`` cell and the remaining formats still run (what ``--all`` needs). A documented
    :data:`KNOWN_UNSUPPORTED` pair is not attempted and yields an ``unsupported`` cell.
    """
    names = parse_formats(formats)
    check_image_sources(names, options)
    out = Path(out_dir)
    cells = []
    with _output_directory(out), scratch_directory("mzoo-export-") as scratch:
        session = _Session(resolved, out, options, scratch)
        for fmt in names:
            cell = _export_cell(session, fmt, keep_going)
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    return cells


def check_image_sources(formats: Iterable[str], options: ExportOptions) -> None:
    """Check, before any export runs, that the image sources the chosen formats will read exist, hold enough
    images, and that the files that will be read are within the image limits (declared sizes only: nothing is
    decoded); ``CalibrationDataError`` naming the source and its option otherwise."""
    names = set(formats)
    if not names & _IMAGE_FORMATS:
        return
    source = options.images or default_image_source()
    if source is None:
        raise ExportError("no real images to verify fp16/int8 against: pass --images DIR (an ImageFolder or "
                          "a .zip of one) or set MZOO_SHARED_DATA to the folder holding cifar10/cifar10_jpg.zip")
    images_option = "--images (ExportOptions.images)"
    for cfg in ([options.fp16 or Fp16Config()] if "onnx-fp16" in names else []) + \
               ([options.int8 or Int8Config()] if "onnx-int8" in names else []):
        _check_source(source, images_option, cfg.num_images, cfg.seed, "test")
    if names & (_IMAGE_FORMATS - {"onnx-fp16", "onnx-int8"}):
        _check_source(source, images_option, options.litert.num_images, options.litert.seed, "test")
    if "litert-int8" in names and options.calibration:
        cfg = options.litert
        same_source = Path(options.calibration).resolve() == Path(source).resolve()
        _check_source(options.calibration, "--calibration (ExportOptions.calibration)", cfg.num_calibration,
                      cfg.seed, "train", offset=cfg.num_images if same_source else 0)
    if "onnx-int8" in names and options.calibration:
        cfg = options.int8 or Int8Config()
        same_source = Path(options.calibration).resolve() == Path(source).resolve()
        _check_source(options.calibration, "--calibration (ExportOptions.calibration)", cfg.num_calibration,
                      cfg.seed, "train", offset=cfg.num_images if same_source else 0)


def _check_source(source: str | os.PathLike, option: str, count: int, seed: int, split: str, offset: int = 0) -> None:
    """What :meth:`_Session.images` will read of ``source``, checked without reading it."""
    shared = default_image_source()
    use_split = split if shared is not None and Path(source).resolve() == shared.resolve() else None
    try:
        check_images(source, count, seed=seed, split=use_split, offset=0 if use_split else offset)
    except CalibrationDataError as err:
        raise CalibrationDataError(f"{option}: {err}") from None


@contextlib.contextmanager
def _output_directory(out: Path) -> Iterator[None]:
    """Create ``out`` for the block; a directory this call created is removed again if it is left empty."""
    created = not out.exists()
    prepare_directory(out)
    try:
        yield
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _export_cell(session: _Session, fmt: str, keep_going: bool) -> Cell:
    name = session.resolved.name
    reason = known_unsupported(name, fmt)
    if reason:
        return Cell(name, fmt, "unsupported", error=reason)
    path = artefact_path(session.out_dir, name, fmt)
    start = time.perf_counter()
    try:
        report = _EXPORTERS[fmt](session, path)
        data = _json_safe(report.to_dict() | {"weights": session.resolved.weights})
        if session.resolved.deploy is not None:
            try:
                data["deploy"] = _json_safe(_deploy_record(session, fmt, path))
            except BaseException:
                remove(path)  # an artefact without its deploy check and report is not left behind
                raise
        write_json_atomic(path.with_name(path.name + ".json"), data)
    except ExportError as err:
        if not keep_going:
            raise
        return Cell(name, fmt, "failed", error=str(err).splitlines()[0], seconds=time.perf_counter() - start)
    except Exception as err:  # an exporter bug must not end a whole-zoo run; it is recorded as a failure
        if not keep_going:
            raise
        return Cell(name, fmt, "failed", error=one_line(err), seconds=time.perf_counter() - start)
    return Cell(name, fmt, "ok", summary=report.summary, verification=report.verification,
                seconds=time.perf_counter() - start, path=str(path), report=data)


def _deploy_record(session: _Session, fmt: str, path: Path) -> dict[str, Any]:
    """The report's ``deploy`` entry: the plan, MACs/params/file size before and after, and the artefact checked
    against the training-time network."""
    from export.deploy import check_artefact

    r = session.resolved
    record = dict(r.deploy or {})
    atol = session.options.pte.atol if fmt == "pte" else session.options.onnx.atol
    record["artefact_max_abs_diff_vs_trained"] = check_artefact(path, fmt, r, atol)
    size = _size(path)
    before = size
    if r.trained_model is not None:
        try:
            before = session.trained_size(fmt)
        except ExportError as err:  # the rewritten network exported; say why the trained one has no size
            before, record["before_note"] = None, f"the training-time network did not export: {one_line(err)}"
    record["before"] = dict(record.get("before", {})) | {"file_size_bytes": before}
    record["after"] = dict(record.get("after", {})) | {"file_size_bytes": size}
    return record


def _size(path: Path) -> int | None:
    """Bytes of a file, or of every file in a package directory (Core ML, ncnn); None if there is nothing there."""
    if not path.exists():
        return None
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))


# ------------------------------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class CompatibilityMatrix:
    """Model × format outcomes of one batch export, with the environment it ran in."""

    formats: tuple[str, ...]
    cells: tuple[Cell, ...]
    environment: dict[str, Any]
    options: dict[str, Any]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(c.model for c in self.cells))

    def cell(self, model: str, fmt: str) -> Cell:
        for c in self.cells:
            if c.model == model and c.format == fmt:
                return c
        raise KeyError(f"no cell for {model!r} × {fmt!r}")

    @property
    def failures(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"formats": list(self.formats), "models": self.models, "environment": self.environment,
                "options": self.options, "cells": [c.to_dict() for c in self.cells]}

    def to_markdown(self) -> str:
        counts = {s: sum(c.status == s for c in self.cells) for s in ("ok", "failed", "unsupported")}
        head = "| model | " + " | ".join(self.formats) + " |"
        lines = ["# Export compatibility matrix", "",
                 f"{len(self.models)} models × {len(self.formats)} formats: {counts['ok']} ok, "
                 f"{counts['failed']} failed, {counts['unsupported']} unsupported (documented).", "",
                 f"Environment: {_describe_env(self.environment)}", "",
                 head, "|---|" + "---|" * len(self.formats)]
        for model in self.models:
            lines.append(f"| {model} | " + " | ".join(_cell_text(self.cell(model, f)) for f in self.formats) + " |")
        lines += ["", "What each format's check is:", ""]
        for fmt in self.formats:
            ok = next((c for c in self.cells if c.format == fmt and c.status == "ok"), None)
            if ok:
                lines.append(f"- `{fmt}`: {ok.verification}")
        problems = [c for c in self.cells if c.status != "ok"]
        if problems:
            lines += ["", "Failures and documented limitations:", ""]
            lines += [f"- {c.model} × {c.format} ({c.status}): {c.error}" for c in problems]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``compatibility.md`` and ``compatibility.json`` into ``out_dir`` (atomically)."""
        out = Path(out_dir)
        md, js = out / "compatibility.md", out / "compatibility.json"
        write_text_atomic(md, self.to_markdown())
        write_json_atomic(js, self.to_dict())
        return md, js


def _cell_text(c: Cell) -> str:
    if c.status == "ok":
        return f"ok · {_figure(c)} · {c.seconds:.0f} s"
    return f"**{c.status}**: {c.error}".replace("|", "\\|")


def _figure(c: Cell) -> str:
    """The cell's parity figure, short enough for a table; the full summary is in the JSON."""
    r = c.report
    try:
        if c.format in ("onnx", "pte"):
            diffs = r["max_abs_diff"]
            text = f"Δ {max(diffs.values() if isinstance(diffs, dict) else diffs):.1e}"
            if r.get("noise_floor"):
                text += " (float64 rule)"
            if c.format == "onnx":
                return f"{text}, {r['num_nodes_exported']}→{r['num_nodes']} nodes"
            return f"{text}, {100 * r['delegation']['fraction']:.0f} % XNNPACK"
        if c.format in ("onnx-fp16", "onnx-int8"):
            return f"top-1 {100 * r['top1_agreement']:.0f} %, cos {r['mean_cosine']:.3f}"
        if c.format == "coreml":
            return f"{'numerical' if r.get('numerical') else 'structural'}, {r['num_ops']} ops"
        if c.format.startswith("litert"):
            ops = r["ops"]
            head = (f"Δ {max(r['max_abs_diff']):.1e}" if c.format == "litert"
                    else f"top-1 {100 * r['top1_agreement']:.0f} %, cos {r['mean_cosine']:.3f}")
            parts = ops["partitions"]
            return f"{head}, {100 * ops['fraction']:.0f} % XNNPACK ({parts} partition{'s' if parts != 1 else ''})"
        if c.format == "ncnn":
            return f"Δ {max(r['max_abs_diff']):.1e}, {r['num_layers']} layers"
    except (KeyError, TypeError, ValueError):
        pass
    return c.summary


def _describe_env(env: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in env.items() if v)


@exporter
def export_all(
    names: Sequence[str],
    out_dir: str | os.PathLike,
    formats: str | Iterable[str],
    options: ExportOptions = ExportOptions(),
    *,
    resolve: Callable[[str], ResolvedModel],
    on_cell: Callable[[Cell], None] | None = None,
) -> CompatibilityMatrix:
    """Export every model to every format, never stopping at a failure, and write the matrix into ``out_dir``."""
    from common.environment import current_environment

    fmts = parse_formats(formats)
    check_image_sources(fmts, options)
    prepare_directory(Path(out_dir))
    cells: list[Cell] = []
    for name in names:
        try:
            resolved = resolve(name)
        except Exception as err:  # a model that cannot even be built fails every format, with the reason
            for fmt in fmts:
                cell = Cell(name, fmt, "failed", error=f"cannot build the model: {one_line(err)}")
                cells.append(cell)
                if on_cell:
                    on_cell(cell)
            continue
        cells += export_formats(resolved, out_dir, fmts, options, keep_going=True, on_cell=on_cell)
    env = current_environment().to_dict()
    matrix = CompatibilityMatrix(fmts, tuple(cells), env, _options_dict(options))
    matrix.write(out_dir)
    return matrix


def _options_dict(options: ExportOptions) -> dict[str, Any]:
    return _json_safe({f: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                       for f, v in vars(options).items()})
