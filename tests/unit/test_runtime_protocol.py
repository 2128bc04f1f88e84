"""The v2 tensor codec, checked against tritonclient's own encoder and decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.http._utils import _get_inference_request

from slmops.runtime.protocol import (
    InferRequest,
    ProtocolError,
    decode_infer_request,
    encode_infer_response,
)

pytestmark = pytest.mark.unit


def _client_body(inputs, outputs=None):
    body, header_length = _get_inference_request(
        inputs=inputs,
        request_id="",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )
    return (body if isinstance(body, bytes) else body.encode()), header_length


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP32", np.arange(32, dtype=np.float32).reshape(2, 16) / 3),
        ("INT64", np.array([[1, -2, 3]], dtype=np.int64)),
        ("BOOL", np.array([True, False, True])),
        ("FP16", np.array([0.5, 1.25], dtype=np.float16)),
        ("UINT8", np.array([0, 255], dtype=np.uint8)),
        ("BYTES", np.array([b"hello", "w\u00f6rld".encode()], dtype=np.object_)),
    ],
)
def test_tritonclient_request_decodes_to_the_same_array(binary, datatype, array):
    tensor = triton_http.InferInput("X", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, header_length = _client_body([tensor])
    request = decode_infer_request(body, header_length)
    assert request.input_datatypes == {"X": datatype}
    decoded = request.inputs["X"]
    assert decoded.shape == array.shape
    if datatype == "BYTES":
        assert list(decoded.reshape(-1)) == list(array.reshape(-1))
    else:
        np.testing.assert_array_equal(decoded, array)
    # tritonclient names no outputs: it wants them all, binary
    assert request.requested_outputs is None
    assert request.binary_output_default is True


@pytest.mark.parametrize("binary", [True, False])
def test_response_parses_with_tritonclient(binary):
    request = InferRequest(inputs={}, input_datatypes={}, binary_output_default=binary)
    outputs = {
        "OUT": np.arange(6, dtype=np.float32).reshape(2, 3),
        "TEXT": np.array([b"a", b"bc"], dtype=np.object_),
    }
    encoded = encode_infer_response("m", "1", request, outputs)
    assert (encoded.json_header_length is not None) == binary
    result = triton_http.InferResult.from_response_body(
        encoded.body, header_length=encoded.json_header_length
    )
    np.testing.assert_array_equal(result.as_numpy("OUT"), outputs["OUT"])
    # tritonclient gives bytes for binary BYTES outputs and str for JSON ones
    texts = [e if isinstance(e, bytes) else e.encode() for e in result.as_numpy("TEXT")]
    assert texts == [b"a", b"bc"]
    assert result.get_response()["model_name"] == "m"


def test_requested_outputs_choose_binary_per_output():
    tensor = triton_http.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    body, header_length = _client_body(
        [tensor],
        [triton_http.InferRequestedOutput("A", binary_data=False)],
    )
    request = decode_infer_request(body, header_length)
    encoded = encode_infer_response(
        "m", "1", request, {"A": np.array([2.0], np.float32), "B": np.array([3.0], np.float32)}
    )
    document = json.loads(encoded.body)
    assert [o["name"] for o in document["outputs"]] == ["A"]
    assert document["outputs"][0]["data"] == [2.0]


def test_nested_json_data_is_accepted():
    body = json.dumps(
        {"inputs": [{"name": "X", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    ).encode()
    request = decode_infer_request(body, None)
    np.testing.assert_array_equal(request.inputs["X"], [[1, 2], [3, 4]])


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (_json({"inputs": []}), None, "non-empty 'inputs'"),
        (
            _json({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2], "data": [1]}]}),
            None,
            "needs 2 elements, got 1",
        ),
        (
            _json({"inputs": [{"name": "X", "datatype": "FP99", "shape": [1], "data": [1]}]}),
            None,
            "unsupported datatype",
        ),
        (
            _json({"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [1.5]}]}),
            None,
            "is not a INT32",
        ),
        (
            _json({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": ["a"]}]}),
            None,
            "is not a FP32",
        ),
        (
            _json({"inputs": [{"name": "X", "datatype": "UINT8", "shape": [1], "data": [300]}]}),
            None,
            "does not fit",
        ),
        (
            _json({"inputs": [{"name": "X", "datatype": "FP32", "shape": [-1], "data": []}]}),
            None,
            "integers >= 0",
        ),
        (
            _json({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1]}]}),
            None,
            "neither 'data' nor binary_data_size",
        ),
        (
            _json(
                {
                    "inputs": [
                        {"name": "X", "datatype": "FP32", "shape": [1], "data": [1]},
                        {"name": "X", "datatype": "FP32", "shape": [1], "data": [1]},
                    ]
                }
            ),
            None,
            "appears twice",
        ),
        (b"{}", 50, "does not fit a body"),
    ],
)
def test_malformed_requests_are_protocol_errors(body, header_length, message):
    with pytest.raises(ProtocolError, match=message):
        decode_infer_request(body, header_length)


def _binary_body(size_declared: int, payload: bytes, datatype: str = "FP32") -> tuple[bytes, int]:
    header = _json(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": datatype,
                    "shape": [2],
                    "parameters": {"binary_data_size": size_declared},
                }
            ]
        }
    )
    return header + payload, len(header)


def test_binary_size_that_does_not_match_the_shape_is_rejected():
    body, length = _binary_body(4, b"\0" * 4)
    with pytest.raises(ProtocolError, match="needs 8 bytes, got 4"):
        decode_infer_request(body, length)


def test_binary_size_past_the_end_is_rejected():
    body, length = _binary_body(16, b"\0" * 8)
    with pytest.raises(ProtocolError, match="runs past the end"):
        decode_infer_request(body, length)


def test_binary_bytes_that_belong_to_no_input_are_rejected():
    body, length = _binary_body(8, b"\0" * 12)
    with pytest.raises(ProtocolError, match="4 bytes of binary data"):
        decode_infer_request(body, length)


def test_truncated_bytes_element_is_rejected():
    body, length = _binary_body(6, b"\x05\0\0\0ab", "BYTES")
    with pytest.raises(ProtocolError, match="runs past its data"):
        decode_infer_request(body, length)
