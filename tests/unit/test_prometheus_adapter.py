"""The Prometheus adapter's reading of answers, against a fake transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from slmops.adapters.prometheus import PrometheusClient, PrometheusError

pytestmark = pytest.mark.unit


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> PrometheusClient:
    return PrometheusClient("http://prom.test:9090/", transport=httpx.MockTransport(handler))


def _answer(data: object, status: str = "success", code: int = 200) -> httpx.Response:
    return httpx.Response(code, json={"status": status, "data": data})


def _vector(*values: str) -> dict[str, object]:
    return {
        "resultType": "vector",
        "result": [
            {"metric": {"__name__": "m", "pod": f"p{i}"}, "value": [1.0, v]}
            for i, v in enumerate(values)
        ],
    }


async def test_single_series_is_its_value_and_the_query_is_sent_as_form() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        seen.append(parse_qs(request.content.decode())["query"][0])
        return _answer(_vector("0.25"))

    async with _client(handler) as client:
        assert await client.query('sum(x{a="b"})') == 0.25
    assert seen == ['sum(x{a="b"})']


async def test_scalar_result() -> None:
    async with _client(lambda _: _answer({"resultType": "scalar", "result": [1, "3"]})) as c:
        assert await c.query("scalar(1)") == 3.0


async def test_empty_vector_and_nan_are_no_data() -> None:
    async with _client(lambda _: _answer(_vector())) as client:
        assert await client.query("absent_metric") is None
    async with _client(lambda _: _answer(_vector("NaN"))) as client:
        assert await client.query("histogram_quantile(0.9, nothing)") is None


async def test_infinity_is_a_value_not_no_data() -> None:
    async with _client(lambda _: _answer(_vector("+Inf"))) as client:
        assert await client.query("q") == float("inf")


async def test_several_series_is_an_error_naming_them() -> None:
    async with _client(lambda _: _answer(_vector("1", "2"))) as client:
        with pytest.raises(PrometheusError, match=r"2 series.*sum\(\).*pod=\"p0\""):
            await client.query("m")


async def test_bad_query_is_an_error_with_prometheus_reason() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
        )

    async with _client(handler) as client:
        with pytest.raises(PrometheusError, match=r"bad_data.*parse error at char 5"):
            await client.query("sum((")


async def test_unreachable_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with _client(handler) as client:
        with pytest.raises(PrometheusError, match=r"unreachable.*connection refused"):
            await client.query("up")
        assert await client.is_online() is False


async def test_timeout_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with _client(handler) as client:
        with pytest.raises(PrometheusError, match="did not answer in time"):
            await client.query("up")


async def test_non_json_answer_is_an_error() -> None:
    async with _client(lambda _: httpx.Response(200, text="<html>proxy</html>")) as client:
        with pytest.raises(PrometheusError, match="without JSON"):
            await client.query("up")


async def test_range_vector_and_malformed_samples_are_errors() -> None:
    matrix = {"resultType": "matrix", "result": []}
    async with _client(lambda _: _answer(matrix)) as client:
        with pytest.raises(PrometheusError, match=r"matrix.*rate"):
            await client.query("m[5m]")
    broken = {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "x"]}]}
    async with _client(lambda _: _answer(broken)) as client:
        with pytest.raises(PrometheusError, match="non-numeric"):
            await client.query("m")
    async with _client(lambda _: httpx.Response(200, content=json.dumps([1]))) as client:
        with pytest.raises(PrometheusError, match="not an object"):
            await client.query("m")
