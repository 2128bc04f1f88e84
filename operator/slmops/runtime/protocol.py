"""The KServe Open Inference Protocol v2 tensor codec, JSON and the binary tensor extension.

Pure: bytes in, numpy arrays out and back. The binary extension puts a JSON header of
`Inference-Header-Content-Length` bytes first and the raw tensor bytes after it, in the order
of the inputs (or outputs) that carry `parameters.binary_data_size`. tritonclient sends its
inputs that way by default and asks for binary outputs when it names no outputs.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# v2 datatype -> numpy dtype. BF16 has no numpy dtype, so it is not accepted.
DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

ONNX_TYPE_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_BYTES_LENGTH = struct.Struct("<I")


class ProtocolError(ValueError):
    """The request is malformed; answered with 400 and `{"error": message}`."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, npt.NDArray[Any]]
    # Datatype each input was declared with, so the model can reject a mismatch by name.
    input_datatypes: dict[str, str]
    request_id: str | None = None
    requested_outputs: tuple[RequestedOutput, ...] | None = None
    binary_output_default: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    # Set when the body carries binary tensors after the JSON header.
    json_header_length: int | None


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def decode_infer_request(body: bytes, json_header_length: int | None) -> InferRequest:
    if json_header_length is None:
        header_bytes, binary = body, b""
    else:
        if json_header_length < 0 or json_header_length > len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length {json_header_length} does not fit a body of "
                f"{len(body)} bytes"
            )
        header_bytes, binary = body[:json_header_length], body[json_header_length:]
    header = _parse_json_object(header_bytes)

    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request needs a non-empty 'inputs' list")
    inputs: dict[str, npt.NDArray[Any]] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise ProtocolError(f"inputs[{index}] must be an object")
        name, datatype, shape = _tensor_head(raw, f"inputs[{index}]")
        if name in inputs:
            raise ProtocolError(f"input '{name}' appears twice")
        parameters = raw.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ProtocolError(f"input '{name}': 'parameters' must be an object")
        binary_size = parameters.get("binary_data_size")
        if binary_size is not None:
            if "data" in raw:
                raise ProtocolError(f"input '{name}' has both 'data' and binary_data_size")
            if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be an integer >= 0")
            if offset + binary_size > len(binary):
                raise ProtocolError(
                    f"input '{name}': binary_data_size {binary_size} runs past the end of the "
                    f"body ({len(binary) - offset} bytes left)"
                )
            array = decode_binary_tensor(
                binary[offset : offset + binary_size], datatype, shape, name
            )
            offset += binary_size
        else:
            if "data" not in raw:
                raise ProtocolError(f"input '{name}' has neither 'data' nor binary_data_size")
            array = decode_json_tensor(raw["data"], datatype, shape, name)
        inputs[name] = array
        datatypes[name] = datatype
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input"
        )

    parameters = header.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    binary_output_default = bool(parameters.get("binary_data_output", False))
    requested = _requested_outputs(header.get("outputs"), binary_output_default)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(
        inputs=inputs,
        input_datatypes=datatypes,
        request_id=request_id,
        requested_outputs=requested,
        binary_output_default=binary_output_default,
        parameters=parameters,
    )


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"request body is not valid JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise ProtocolError("request body must be a JSON object")
    return parsed


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body, or ProtocolError."""
    return _parse_json_object(raw)


def _tensor_head(raw: Mapping[str, Any], where: str) -> tuple[str, str, tuple[int, ...]]:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}: 'name' must be a non-empty string")
    datatype = raw.get("datatype")
    if datatype not in DATATYPE_TO_NUMPY:
        raise ProtocolError(
            f"input '{name}': unsupported datatype {datatype!r} "
            f"(one of {', '.join(DATATYPE_TO_NUMPY)})"
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of integers >= 0")
    return name, datatype, tuple(shape)


def _requested_outputs(raw: Any, binary_output_default: bool) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProtocolError("'outputs' must be a list")
    requested = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{index}] must be an object with a 'name'")
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ProtocolError(f"outputs[{index}]: 'parameters' must be an object")
        if parameters.get("classification"):
            raise ProtocolError("the classification extension is not supported")
        binary = bool(parameters.get("binary_data", binary_output_default))
        requested.append(RequestedOutput(name=item["name"], binary=binary))
    return tuple(requested)


def decode_json_tensor(
    data: Any, datatype: str, shape: tuple[int, ...], name: str
) -> npt.NDArray[Any]:
    flat = _flatten(data, name)
    expected = element_count(shape)
    if len(flat) != expected:
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} needs {expected} elements, got {len(flat)}"
        )
    if datatype == "BYTES":
        elements = []
        for value in flat:
            if isinstance(value, str):
                elements.append(value.encode())
            else:
                raise ProtocolError(f"input '{name}': BYTES elements must be strings in JSON")
        array = np.empty(len(elements), dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    dtype = DATATYPE_TO_NUMPY[datatype]
    for value in flat:
        if datatype == "BOOL":
            fits = isinstance(value, bool)
        elif dtype.kind in "iu":
            fits = isinstance(value, int) and not isinstance(value, bool)
        else:
            fits = isinstance(value, int | float) and not isinstance(value, bool)
        if not fits:
            raise ProtocolError(f"input '{name}': element {value!r} is not a {datatype}")
    try:
        return np.asarray(flat, dtype=dtype).reshape(shape)
    except OverflowError as error:
        raise ProtocolError(f"input '{name}': a value does not fit {datatype}: {error}") from error


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"input '{name}': 'data' must be a list")
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def decode_binary_tensor(
    raw: bytes, datatype: str, shape: tuple[int, ...], name: str
) -> npt.NDArray[Any]:
    expected = element_count(shape)
    if datatype == "BYTES":
        elements = deserialize_bytes(raw, name)
        if len(elements) != expected:
            raise ProtocolError(
                f"input '{name}': shape {list(shape)} needs {expected} elements, "
                f"got {len(elements)}"
            )
        array = np.empty(len(elements), dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    dtype = DATATYPE_TO_NUMPY[datatype]
    if len(raw) != expected * dtype.itemsize:
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} of {datatype} needs "
            f"{expected * dtype.itemsize} bytes, got {len(raw)}"
        )
    # frombuffer shares the request's bytes (read-only), which is what a session input needs.
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def deserialize_bytes(raw: bytes, name: str) -> list[bytes]:
    elements = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input '{name}': truncated BYTES length prefix")
        (length,) = _BYTES_LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input '{name}': BYTES element runs past its data")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def serialize_bytes(array: npt.NDArray[Any]) -> bytes:
    chunks = []
    for element in array.reshape(-1):
        data = element if isinstance(element, bytes) else str(element).encode()
        chunks.append(_BYTES_LENGTH.pack(len(data)))
        chunks.append(data)
    return b"".join(chunks)


def datatype_of(array: npt.NDArray[Any]) -> str:
    if array.dtype.kind in "OSU":
        return "BYTES"
    for datatype, dtype in DATATYPE_TO_NUMPY.items():
        if dtype == array.dtype:
            return datatype
    raise ProtocolError(f"output dtype {array.dtype} has no v2 datatype")


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, npt.NDArray[Any]],
) -> EncodedResponse:
    if request.requested_outputs is None:
        selection = [RequestedOutput(name, request.binary_output_default) for name in outputs]
    else:
        selection = list(request.requested_outputs)
    tensors: list[dict[str, Any]] = []
    binary_chunks: list[bytes] = []
    for wanted in selection:
        array = outputs[wanted.name]
        datatype = datatype_of(array)
        tensor: dict[str, Any] = {
            "name": wanted.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if wanted.binary:
            raw = (
                serialize_bytes(array)
                if datatype == "BYTES"
                else np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            )
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary_chunks.append(raw)
        elif datatype == "BYTES":
            tensor["data"] = [
                e.decode(errors="replace") if isinstance(e, bytes) else str(e)
                for e in array.reshape(-1)
            ]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    document: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": tensors,
    }
    if request.request_id is not None:
        document["id"] = request.request_id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not binary_chunks:
        return EncodedResponse(body=header, json_header_length=None)
    return EncodedResponse(body=b"".join([header, *binary_chunks]), json_header_length=len(header))
