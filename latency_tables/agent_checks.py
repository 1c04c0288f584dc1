"""What the device agent checks of an upload before it is measured, and the error every refusal is.

An upload must be the runtime's own format (an ExecuTorch program's header, or a self-contained ONNX model that
the ONNX checker accepts; the agent runs these checks on the upload in a directory of its own).
:class:`AgentError` carries the HTTP status and the one-line message the client gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from common.errors import MzooError
from export.errors import one_line

_PTE_MAGIC_OFFSET = 4
_PTE_HEADER_BYTES = 40
_MIN_PTE_BYTES = 32
_TFLITE_IDENTIFIER = b"TFL3"
_MIN_TFLITE_BYTES = 16


class AgentError(MzooError):
    """A request the agent refuses or could not serve: the HTTP status and a one-line message for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check_artefact(runtime: str, path: Path) -> None:
    """Refuse what is not an artefact of ``runtime`` before any runtime parses it: 415 for the wrong kind of
    file, 400 for a broken one. ONNX files must carry their weights inside (external data could name any path)."""
    if runtime == "litert":
        _check_tflite(path)
        return
    if runtime == "xnnpack":
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(_PTE_HEADER_BYTES)
        ident = head[_PTE_MAGIC_OFFSET:_PTE_MAGIC_OFFSET + 4]
        if not (ident[:2] == b"ET" and ident[2:].isdigit()):
            raise AgentError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                             f"upload is not an ExecuTorch program: no 'ET..' identifier at byte 4 (found {ident!r})")
        if size < _MIN_PTE_BYTES:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"upload is a truncated ExecuTorch program ({size} bytes)")
        _check_pte_sizes(head, size)
        return
    _check_onnx(path)


def _check_tflite(path: Path) -> None:
    """A LiteRT flatbuffer: the 'TFL3' file identifier at byte 4, and a root table offset inside the file."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
    if head[4:8] != _TFLITE_IDENTIFIER:
        raise AgentError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                         f"upload is not a LiteRT model: no 'TFL3' identifier at byte 4 (found {head[4:8]!r})")
    root = int.from_bytes(head[:4], "little")
    if size < _MIN_TFLITE_BYTES or root >= size:
        raise AgentError(HTTPStatus.BAD_REQUEST,
                         f"upload is a truncated LiteRT model ({size} bytes, root table at byte {root})")


def _check_pte_sizes(head: bytes, size: int) -> None:
    header = head[8:40]
    if header[:4] != b"eh00":
        return
    program_size = int.from_bytes(header[8:16], "little")
    segment_base = int.from_bytes(header[16:24], "little")
    segment_size = int.from_bytes(header[24:32], "little")
    expected = max(program_size, segment_base + segment_size if segment_base else 0)
    if size < expected:
        raise AgentError(HTTPStatus.BAD_REQUEST,
                         f"upload is a truncated ExecuTorch program: its header promises {expected} bytes, got {size}")


def _check_onnx(path: Path) -> None:
    """External data is refused before the checker runs, with one message whatever it names: the checker looks
    the names up on disk, and different answers would tell a client which files exist there. The checker then
    reads the upload from its own directory, so that any name it still resolves is looked up there, not in the
    agent's working directory."""
    import onnx

    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as err:
        raise AgentError(HTTPStatus.BAD_REQUEST, f"upload is not a valid ONNX model: {one_line(err)}") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL or t.external_data for t in _onnx_tensors(model)):
        raise AgentError(HTTPStatus.BAD_REQUEST, "upload refers to external tensor data; send a self-contained "
                                                 "ONNX file (weights inside)")
    if not model.graph.node:
        raise AgentError(HTTPStatus.BAD_REQUEST, "upload is not a valid ONNX model: its graph has no nodes")
    del model
    try:
        onnx.checker.check_model(str(path))
    except Exception as err:
        raise AgentError(HTTPStatus.BAD_REQUEST, f"upload is not a valid ONNX model: {one_line(err)}") from None


def _onnx_tensors(model: Any) -> Iterator[Any]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
            yield from (sparse.values for sparse in attr.sparse_tensors)
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


# ------------------------------------------------------------------------------------- measuring process
