"""Session fixtures for the model server's tests: the models, our server on each, and the
real Triton peer. Test modules import the `fixture_*` functions they use; the fixtures are
registered under the names without the prefix (so test parameters do not shadow imports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.processes import (
    RunningServer,
    TritonUnavailableError,
    slmops_serve,
    triton_peer,
)
from tests.serving.tiny_models import TINY, genai_model, plain_onnx_model

PLAIN_MODEL_NAME = "matmul"
TEXT_MODEL_NAME = "tiny-llama"


@pytest.fixture(scope="session", name="plain_model")
def fixture_plain_model() -> Path:
    return plain_onnx_model()


@pytest.fixture(scope="session", name="text_model_fp32")
def fixture_text_model_fp32() -> Path:
    return genai_model(TINY, "fp32")


@pytest.fixture(scope="session", name="text_model_int8")
def fixture_text_model_int8() -> Path:
    return genai_model(TINY, "int8")


@pytest.fixture(scope="session", name="serve_logs")
def fixture_serve_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-logs")


@pytest.fixture(scope="session", name="plain_server")
def fixture_plain_server(plain_model: Path, serve_logs: Path) -> Iterator[RunningServer]:
    with slmops_serve(plain_model, serve_logs, model_name=PLAIN_MODEL_NAME) as server:
        yield server


@pytest.fixture(scope="session", name="triton_server")
def fixture_triton_server(plain_model: Path, serve_logs: Path) -> Iterator[RunningServer]:
    try:
        peer = triton_peer(plain_model / "model.onnx", PLAIN_MODEL_NAME, serve_logs)
        server = peer.__enter__()
    except TritonUnavailableError as error:
        pytest.skip(f"real Triton peer unavailable: {error}")
    try:
        yield server
    finally:
        peer.__exit__(None, None, None)


@pytest.fixture(scope="session", params=["fp32", "int8"], name="text_server")
def fixture_text_server(
    request: pytest.FixtureRequest,
    text_model_fp32: Path,
    text_model_int8: Path,
    serve_logs: Path,
) -> Iterator[RunningServer]:
    model = text_model_fp32 if request.param == "fp32" else text_model_int8
    with slmops_serve(
        model,
        serve_logs,
        model_name=TEXT_MODEL_NAME,
        env={"SLMOPS_VARIANT": request.param},
        extra_args=["--max-concurrency", "2", "--max-queue", "4"],
    ) as server:
        yield server


DEMO_MODEL_NAME = "demo"


@pytest.fixture(scope="session", params=["fp32", "int8"], name="demo_server")
def fixture_demo_server(
    request: pytest.FixtureRequest, serve_logs: Path
) -> Iterator[RunningServer]:
    """`slmops serve` on the project's demo model (trained on first use, then cached)."""
    from tests.serving.tiny_models import demo_genai_model

    with slmops_serve(
        demo_genai_model(request.param),
        serve_logs,
        model_name=DEMO_MODEL_NAME,
        env={"SLMOPS_VARIANT": request.param},
    ) as server:
        yield server
