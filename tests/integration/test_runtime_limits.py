"""Bad input, overload, client disconnects and SIGTERM, against `slmops serve` processes.

A slowed-down server (the SLMOPS_SIM_SLOWDOWN test hook) makes each generation take long
enough that requests overlap for sure, without any timing in the assertions."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.serving.fixtures import (  # noqa: F401 (fixtures)
    PLAIN_MODEL_NAME,
    TEXT_MODEL_NAME,
    fixture_plain_model,
    fixture_serve_logs,
    fixture_text_model_fp32,
)
from tests.serving.processes import RunningServer, slmops_serve

pytestmark = pytest.mark.integration

BODY_LIMIT = 64 * 1024
# Each model step of the tiny model takes this many times as long: tens of ms a token.
SLOWDOWN = "200"
PROMPT = "The licensor grants you"


@pytest.fixture(scope="module")
def limited_server(plain_model: Path, serve_logs: Path) -> Iterator[RunningServer]:
    with slmops_serve(
        plain_model,
        serve_logs,
        model_name=PLAIN_MODEL_NAME,
        extra_args=["--max-body-bytes", str(BODY_LIMIT)],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def slow_text_server(text_model_fp32: Path, serve_logs: Path) -> Iterator[RunningServer]:
    with slmops_serve(
        text_model_fp32,
        serve_logs,
        model_name=TEXT_MODEL_NAME,
        extra_args=["--max-concurrency", "1", "--max-queue", "1"],
        env={"SLMOPS_SIM_SLOWDOWN": SLOWDOWN},
    ) as server:
        yield server


def _metric(server: RunningServer, family: str, **labels: str) -> float:
    text = httpx.get(server.metrics_url).text
    total = 0.0
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _good_infer_body() -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
    ).encode()


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, headers=None):
    connection.request("POST", path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{this is not json", {}, "not valid JSON"),
        (b"\xff\xfe\x00garbage", {}, "not valid JSON"),
        (json.dumps({"inputs": "nope"}).encode(), {}, "inputs"),
        (_good_infer_body(), {"Inference-Header-Content-Length": "abc"}, "non-negative integer"),
        (_good_infer_body(), {"Inference-Header-Content-Length": "99999"}, "does not fit"),
        (b"x" * (BODY_LIMIT + 1), {}, "exceeds the limit"),
    ],
)
def test_bad_bodies_get_400_and_the_connection_keeps_working(
    limited_server, body, headers, message
):
    connection = http.client.HTTPConnection("127.0.0.1", int(limited_server.url.split(":")[1]))
    path = f"/v2/models/{PLAIN_MODEL_NAME}/infer"
    status, raw = _post(connection, path, body, headers)
    assert status == 400
    assert message in json.loads(raw)["error"]
    # the same keep-alive connection answers the next, valid request
    status, raw = _post(connection, path, _good_infer_body())
    assert status == 200, raw
    assert json.loads(raw)["outputs"][0]["shape"] == [1, 16]
    connection.close()


def test_oversized_chunked_body_is_refused(limited_server):
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * (BODY_LIMIT // 4)

    response = httpx.post(
        f"{limited_server.base}/v2/models/{PLAIN_MODEL_NAME}/infer", content=chunks()
    )
    assert response.status_code == 400
    assert "exceeds the limit" in response.json()["error"]


def test_tritonclient_with_a_too_large_tensor_gets_400_then_works(limited_server):
    client = triton_http.InferenceServerClient(limited_server.url)
    rows = BODY_LIMIT // 64 + 1
    big = triton_http.InferInput("INPUT0", [rows, 16], "FP32")
    big.set_data_from_numpy(np.zeros((rows, 16), np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer(PLAIN_MODEL_NAME, [big])
    assert raised.value.status() == "400"
    small = triton_http.InferInput("INPUT0", [2, 16], "FP32")
    small.set_data_from_numpy(np.ones((2, 16), np.float32))
    assert client.infer(PLAIN_MODEL_NAME, [small]).as_numpy("OUTPUT0").shape == (2, 16)
    assert _metric(limited_server, "nv_inference_request_failure", reason="OTHER") >= 1


def test_overload_is_refused_fast_with_503(slow_text_server):
    """One slot and one queue place: of six simultaneous generations two are served and the
    rest are refused at once instead of queueing without bound."""
    url = f"{slow_text_server.base}/v2/models/{TEXT_MODEL_NAME}/generate"
    body = {"text_input": PROMPT, "max_tokens": 12, "temperature": 0}
    rejected_before = _metric(slow_text_server, "nv_inference_request_failure", reason="REJECTED")
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: httpx.post(url, json=body, timeout=60), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 503, 503, 503, 503], [r.text for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    assert all("capacity" in r.json()["error"] for r in refused)
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    rejected = _metric(slow_text_server, "nv_inference_request_failure", reason="REJECTED")
    assert rejected - rejected_before == 4
    assert httpx.post(url, json=body, timeout=60).status_code == 200


def test_health_and_metrics_answer_while_a_generation_runs(slow_text_server):
    """The model runs in a worker thread: while a (slowed) generation streams, the event
    loop answers health checks, and /metrics itself reports the generation as running."""
    with httpx.stream(
        "POST",
        f"{slow_text_server.base}/v2/models/{TEXT_MODEL_NAME}/generate_stream",
        json={"text_input": PROMPT, "max_tokens": 40, "temperature": 0},
        timeout=60,
    ) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        next(lines)
        ready = httpx.get(f"{slow_text_server.base}/v2/health/ready").status_code
        running = _metric(slow_text_server, "slmops_inflight_requests")
        rest = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert ready == 200
    assert running == 1, "the generation was not running while /metrics answered"
    assert rest[-1]["finish_reason"] in ("stop", "length")


def test_client_disconnect_cancels_a_stream(slow_text_server):
    tokens_before = _metric(slow_text_server, "slmops_generated_tokens")
    with httpx.stream(
        "POST",
        f"{slow_text_server.base}/v2/models/{TEXT_MODEL_NAME}/generate_stream",
        json={"text_input": PROMPT, "max_tokens": 200, "temperature": 0.8, "top_k": 5},
        timeout=60,
    ) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert "text_output" in first
    # the client is gone; the server notices, stops generating and frees the slot
    _wait_for(
        lambda: (
            _metric(
                slow_text_server,
                "slmops_request_errors",
                endpoint="generate_stream",
                reason="cancelled",
            )
            >= 1
        ),
        "the cancelled stream to be counted",
    )
    _wait_for(
        lambda: _metric(slow_text_server, "slmops_inflight_requests") == 0, "the slot to free"
    )
    generated = _metric(slow_text_server, "slmops_generated_tokens") - tokens_before
    assert 1 <= generated < 200 / 2
    assert _metric(slow_text_server, "nv_inference_request_failure", reason="CANCELED") >= 1


def test_client_timeout_cancels_a_plain_generate(slow_text_server):
    tokens_before = _metric(slow_text_server, "slmops_generated_tokens")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{slow_text_server.base}/v2/models/{TEXT_MODEL_NAME}/generate",
            json={"text_input": PROMPT, "max_tokens": 200, "temperature": 0.8, "top_k": 5},
            timeout=httpx.Timeout(60, read=0.5),
        )
    _wait_for(
        lambda: (
            _metric(
                slow_text_server, "slmops_request_errors", endpoint="generate", reason="cancelled"
            )
            >= 1
        ),
        "the abandoned generate to be counted as cancelled",
    )
    _wait_for(
        lambda: _metric(slow_text_server, "slmops_inflight_requests") == 0, "the slot to free"
    )
    assert _metric(slow_text_server, "slmops_generated_tokens") - tokens_before < 100


def test_sigterm_drains_in_flight_requests_then_exits_zero(text_model_fp32, serve_logs):
    with slmops_serve(
        text_model_fp32,
        serve_logs,
        model_name=TEXT_MODEL_NAME,
        env={"SLMOPS_SIM_SLOWDOWN": SLOWDOWN},
    ) as server:
        url = f"{server.base}/v2/models/{TEXT_MODEL_NAME}/generate"
        results: list[httpx.Response] = []
        in_flight = threading.Thread(
            target=lambda: results.append(
                httpx.post(
                    url,
                    json={"text_input": PROMPT, "max_tokens": 16, "temperature": 0},
                    timeout=60,
                )
            )
        )
        in_flight.start()
        _wait_for(lambda: _metric(server, "slmops_inflight_requests") == 1, "the request to run")
        server.process.send_signal(signal.SIGTERM)
        _wait_for(
            lambda: httpx.get(f"{server.base}/v2/health/ready").status_code == 503,
            "readiness to drop",
        )
        refused = httpx.post(url, json={"text_input": PROMPT, "max_tokens": 2}, timeout=10)
        assert refused.status_code == 503
        assert "shutting down" in refused.json()["error"]
        in_flight.join(timeout=60)
        assert server.process.wait(timeout=30) == 0
        assert [r.status_code for r in results] == [200]
        assert results[0].json()["generated_tokens"] >= 1
        assert "draining in-flight requests" in server.log()


def test_live_at_once_ready_only_after_warm_up(text_model_fp32, serve_logs):
    """Slowed down, the warm-up takes seconds: meanwhile the process is live, not ready, and
    refuses model requests with 503 instead of queueing them."""
    with slmops_serve(
        text_model_fp32,
        serve_logs,
        model_name=TEXT_MODEL_NAME,
        env={"SLMOPS_SIM_SLOWDOWN": "1000"},
        wait_ready=False,
    ) as server:

        def live() -> bool:
            try:
                return httpx.get(f"{server.base}/v2/health/live").status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(live, "the listener", timeout_s=60)
        assert httpx.get(f"{server.base}/v2/health/ready").status_code == 503
        early = httpx.post(
            f"{server.base}/v2/models/{TEXT_MODEL_NAME}/generate",
            json={"text_input": PROMPT, "max_tokens": 1},
        )
        assert early.status_code == 503
        assert "not ready" in early.json()["error"]
        _wait_for(
            lambda: httpx.get(f"{server.base}/v2/health/ready").status_code == 200,
            "readiness after warm-up",
            timeout_s=120,
        )
        assert "ready: model" in server.log()
