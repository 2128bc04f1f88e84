"""The same tritonclient conversation against our server and a real Triton Inference Server
(from the nvidia-pytriton wheel) serving the same ONNX model through the same onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.serving.fixtures import (  # noqa: F401 (fixtures)
    PLAIN_MODEL_NAME,
    fixture_plain_model,
    fixture_plain_server,
    fixture_serve_logs,
    fixture_triton_server,
)
from tests.serving.processes import RunningServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["slmops", "triton"])
def server(request: pytest.FixtureRequest) -> RunningServer:
    fixture = "plain_server" if request.param == "slmops" else "triton_server"
    running: RunningServer = request.getfixturevalue(fixture)
    return running


@pytest.fixture
def client(server: RunningServer) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url)


def _expected(plain_model: Path, x: np.ndarray) -> np.ndarray:
    return x @ np.load(plain_model / "weight.npy") + np.load(plain_model / "bias.npy")


def test_health_and_metadata(client, server):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(PLAIN_MODEL_NAME)
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata(PLAIN_MODEL_NAME)
    assert metadata["name"] == PLAIN_MODEL_NAME
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}]
    assert metadata["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_infer_json_and_binary(client, plain_model, binary_in, binary_out):
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    tensor = triton_http.InferInput("INPUT0", [3, 16], "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = (
        None
        if binary_out is None
        else [triton_http.InferRequestedOutput("OUTPUT0", binary_data=binary_out)]
    )
    result = client.infer(PLAIN_MODEL_NAME, [tensor], outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), _expected(plain_model, x), rtol=1e-5)
    response = result.get_response()
    assert response["model_name"] == PLAIN_MODEL_NAME
    assert response["id"] == "req-7"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_answers(client, plain_model, algorithm):
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    tensor = triton_http.InferInput("INPUT0", [2, 16], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(
        PLAIN_MODEL_NAME,
        [tensor],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), _expected(plain_model, x), rtol=1e-5)


@pytest.mark.parametrize(
    ("shape", "datatype", "name"),
    [
        ([2, 8], "FP32", "INPUT0"),  # wrong shape
        ([2, 16], "INT32", "INPUT0"),  # wrong datatype
        ([2, 16], "FP32", "NOT_AN_INPUT"),  # wrong name
    ],
)
def test_bad_tensors_are_client_errors_and_the_server_keeps_serving(
    client, server, shape, datatype, name
):
    tensor = triton_http.InferInput(name, shape, datatype)
    dtype = np.float32 if datatype == "FP32" else np.int32
    tensor.set_data_from_numpy(np.zeros(shape, dtype=dtype))
    with pytest.raises(InferenceServerException) as raised:
        client.infer(PLAIN_MODEL_NAME, [tensor])
    assert raised.value.status() == "400"
    assert raised.value.message()
    # same client, same keep-alive connection: the next request is answered correctly
    good = triton_http.InferInput("INPUT0", [1, 16], "FP32")
    good.set_data_from_numpy(np.ones((1, 16), np.float32))
    assert client.infer(PLAIN_MODEL_NAME, [good]).as_numpy("OUTPUT0").shape == (1, 16)


def test_unknown_model_is_an_error_with_a_message(client):
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("no-such-model")
    assert raised.value.status() == "404"
    assert "no-such-model" in raised.value.message()


def test_error_body_is_json_with_error_key(server):
    response = httpx.post(
        f"{server.base}/v2/models/{PLAIN_MODEL_NAME}/infer",
        content=json.dumps(
            {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1]}]}
        ),
    )
    assert response.status_code >= 400
    assert set(response.json()) == {"error"}


def _metric_labels(server: RunningServer) -> dict[str, set[str]]:
    text = httpx.get(server.metrics_url).text
    found: dict[str, set[str]] = {}
    # (the parser names counter samples NAME_total; the family keeps the exposed name)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name.startswith("nv_inference_"):
                found.setdefault(family.name, set()).update(sample.labels)
    return found


def test_our_triton_metrics_have_tritons_names_and_labels(plain_server, triton_server):
    for running in (plain_server, triton_server):
        tensor = triton_http.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        triton_http.InferenceServerClient(running.url).infer(PLAIN_MODEL_NAME, [tensor])
    ours = _metric_labels(plain_server)
    theirs = _metric_labels(triton_server)
    required = {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_pending_request_count",
    }
    assert required <= set(theirs), f"real Triton no longer exposes {required - set(theirs)}"
    for name in required:
        assert name in ours, name
        # every label Triton puts on it, plus the rollout's revision and variant
        assert theirs[name] <= ours[name], (name, theirs[name], ours[name])
        assert {"revision", "variant"} <= ours[name]
    text = httpx.get(plain_server.metrics_url).text
    assert "# TYPE nv_inference_request_success counter" in text
    success = next(
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if f.name == "nv_inference_request_success"
    )
    assert success.value >= 1
