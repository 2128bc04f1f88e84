"""Text generation through `slmops serve` on onnxruntime-genai models (fp32 and int8 exports
of the same random-weight Llama), compared with onnxruntime-genai run directly."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime_genai as og
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.serving.fixtures import (  # noqa: F401 (fixtures)
    TEXT_MODEL_NAME,
    fixture_serve_logs,
    fixture_text_model_fp32,
    fixture_text_model_int8,
    fixture_text_server,
)
from tests.serving.processes import RunningServer

pytestmark = pytest.mark.integration

PROMPT = "The licensor grants you"


def _model_dir(server: RunningServer, fp32: Path, int8: Path) -> Path:
    return int8 if str(int8) in server.log() else fp32


def bare_greedy(model_dir: Path, prompt: str, max_tokens: int) -> str:
    """Greedy text straight from onnxruntime-genai, the reference for the server's output."""
    config = og.Config(str(model_dir))
    config.clear_providers()
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    eos = set(int(t) for t in tokenizer.eos_token_ids)
    pieces = []
    while not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in eos:
            break
        pieces.append(stream.decode(token))
    return "".join(pieces)


def _generate(server: RunningServer, **body: object) -> httpx.Response:
    return httpx.post(f"{server.base}/v2/models/{TEXT_MODEL_NAME}/generate", json=body, timeout=60)


def _stream_events(server: RunningServer, **body: object) -> list[dict]:
    events = []
    with httpx.stream(
        "POST",
        f"{server.base}/v2/models/{TEXT_MODEL_NAME}/generate_stream",
        json=body,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def test_greedy_generation_matches_onnxruntime_genai(text_server, text_model_fp32, text_model_int8):
    response = _generate(text_server, text_input=PROMPT, max_tokens=24, temperature=0)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["model_name"] == TEXT_MODEL_NAME
    model_dir = _model_dir(text_server, text_model_fp32, text_model_int8)
    assert document["text_output"] == bare_greedy(model_dir, PROMPT, 24)
    assert document["finish_reason"] in ("stop", "length")
    assert 1 <= document["generated_tokens"] <= 24
    if document["finish_reason"] == "length":
        assert document["generated_tokens"] == 24


def test_stream_pieces_add_up_to_the_whole_answer(text_server):
    whole = _generate(text_server, text_input=PROMPT, max_tokens=16, temperature=0).json()
    events = _stream_events(
        text_server, text_input=PROMPT, parameters={"max_tokens": 16, "temperature": 0}
    )
    *pieces, last = events
    assert len(pieces) >= 2
    assert "".join(p["text_output"] for p in pieces) == whole["text_output"]
    assert last["finish_reason"] == whole["finish_reason"]
    assert last["generated_tokens"] == whole["generated_tokens"]
    assert all(p["model_name"] == TEXT_MODEL_NAME for p in events)


def test_stop_sequence_cuts_the_answer(text_server):
    whole = _generate(text_server, text_input=PROMPT, max_tokens=32, temperature=0).json()
    text = whole["text_output"]
    assert len(text) >= 8, "the random model produced too little text to pick a stop from"
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = _generate(
        text_server, text_input=PROMPT, max_tokens=32, temperature=0, stop=[stop]
    ).json()
    assert cut["text_output"] == text[: text.find(stop)]
    assert cut["finish_reason"] == "stop"
    streamed = _stream_events(
        text_server, text_input=PROMPT, max_tokens=32, temperature=0, stop=[stop]
    )
    assert "".join(e["text_output"] for e in streamed) == cut["text_output"]


def test_seeded_sampling_is_reproducible_and_knobs_are_used(text_server):
    def sample(seed: int) -> str:
        response = _generate(
            text_server,
            text_input=PROMPT,
            max_tokens=24,
            parameters={"temperature": 1.5, "top_k": 200, "top_p": 0.95, "seed": seed},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["text_output"])

    assert sample(11) == sample(11)
    samples = {sample(seed) for seed in range(4)}
    assert len(samples) > 1, "sampling with different seeds gave one answer: knobs ignored?"
    greedy = _generate(text_server, text_input=PROMPT, max_tokens=24, temperature=0).json()
    assert samples != {greedy["text_output"]}


def test_v2_infer_on_the_text_model_with_tritonclient(text_server):
    client = triton_http.InferenceServerClient(text_server.url)
    metadata = client.get_model_metadata(TEXT_MODEL_NAME)
    assert metadata["inputs"][0]["name"] == "text_input"
    assert metadata["platform"] == "onnxruntime_genai"
    prompt = triton_http.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    result = client.infer(
        TEXT_MODEL_NAME, [prompt], parameters={"max_tokens": 12, "temperature": 0}
    )
    text = result.as_numpy("text_output")[0].decode()
    whole = _generate(text_server, text_input=PROMPT, max_tokens=12, temperature=0).json()
    assert text == whole["text_output"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 4}, "text_input"),
        ({"text_input": "x", "max_tokens": -1}, "max_tokens"),
        ({"text_input": "x", "temperature": "hot"}, "temperature"),
        ({"text_input": "word " * 400, "max_tokens": 4}, "context"),
    ],
)
def test_bad_generate_requests_are_400_with_a_reason(text_server, body, message):
    for endpoint in ("generate", "generate_stream"):
        response = httpx.post(
            f"{text_server.base}/v2/models/{TEXT_MODEL_NAME}/{endpoint}", json=body
        )
        assert response.status_code == 400, (endpoint, response.text)
        assert message in response.json()["error"]
    assert _generate(text_server, text_input=PROMPT, max_tokens=2).status_code == 200


def test_generate_on_a_non_text_model_is_rejected(text_server):
    client = triton_http.InferenceServerClient(text_server.url)
    wrong = triton_http.InferInput("text_input", [2], "BYTES")
    wrong.set_data_from_numpy(np.array([b"a", b"b"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="one BYTES element"):
        client.infer(TEXT_MODEL_NAME, [wrong])


def test_generation_metrics_are_labelled_for_the_rollout(text_server):
    _generate(text_server, text_input=PROMPT, max_tokens=8, temperature=0)
    families = {
        f.name: f for f in text_string_to_metric_families(httpx.get(text_server.metrics_url).text)
    }
    generated = families["slmops_generated_tokens"].samples[0]
    assert generated.value >= 1
    assert generated.labels["revision"] == "r1"
    assert generated.labels["variant"] in ("fp32", "int8")
    ttft_count = next(
        s.value
        for s in families["slmops_time_to_first_token_seconds"].samples
        if s.name.endswith("_count")
    )
    assert ttft_count >= 1
    durations = [
        s
        for s in families["slmops_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["endpoint"] == "generate"
    ]
    assert any(s.labels["code"] == "200" and s.value >= 1 for s in durations)
    load = families["slmops_model_load_seconds"].samples[0].value
    assert load > 0
