"""The server on the project's demo model (a small Llama trained here) and its int8 export:
the same protocol checks as on the random test model, on weights that produce real text."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.integration.test_runtime_generation import bare_greedy
from tests.serving.fixtures import (  # noqa: F401 (fixtures)
    DEMO_MODEL_NAME,
    fixture_demo_server,
    fixture_serve_logs,
)
from tests.serving.processes import RunningServer
from tests.serving.tiny_models import demo_genai_model

pytestmark = pytest.mark.integration

PROMPT = "def read_file(path):\n    with open(path"


def _variant(server: RunningServer) -> str:
    return "int8" if str(demo_genai_model("int8")) in server.log() else "fp32"


def test_demo_model_greedy_text_equals_onnxruntime_genai(demo_server):
    response = httpx.post(
        f"{demo_server.base}/v2/models/{DEMO_MODEL_NAME}/generate",
        json={"text_input": PROMPT, "max_tokens": 32, "temperature": 0},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    text = response.json()["text_output"]
    assert text == bare_greedy(demo_genai_model(_variant(demo_server)), PROMPT, 32)
    assert text.strip(), "the trained demo model should continue Python code"


def test_demo_model_stream_and_tritonclient_infer_agree(demo_server):
    events = []
    with httpx.stream(
        "POST",
        f"{demo_server.base}/v2/models/{DEMO_MODEL_NAME}/generate_stream",
        json={"text_input": PROMPT, "max_tokens": 16, "temperature": 0},
        timeout=120,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
    streamed = "".join(json.loads(e[6:])["text_output"] for e in events)
    client = triton_http.InferenceServerClient(demo_server.url, network_timeout=120)
    prompt = triton_http.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    result = client.infer(
        DEMO_MODEL_NAME, [prompt], parameters={"max_tokens": 16, "temperature": 0}
    )
    assert result.as_numpy("text_output")[0].decode() == streamed
