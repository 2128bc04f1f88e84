"""Prometheus instant queries for rollout analysis.

The seam is Flagger's: one query in, one number out. What matters is what the number
means when it is not a number. An empty result is "no data" (None) and the analysis policy
decides; an unreachable server, a bad query or a query returning several series raises
`PrometheusError` so the analysis records an Error — never a silent pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_TIMEOUT_SECONDS = 5.0


class PrometheusError(Exception):
    """The query could not be answered with one value; the message says why, for people."""


@dataclass(frozen=True)
class QueryAnswer:
    """One instant query's answer: a value, or None for an empty result."""

    value: float | None
    series: int


class PrometheusClient:
    """Instant queries against one Prometheus HTTP API.

    `transport` lets unit tests answer requests without a server (httpx.MockTransport);
    everywhere else it is the real network.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            # Analysis talks to one server over and over; a proxy from the environment
            # would only ever be wrong for an in-cluster Prometheus.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def query(self, promql: str) -> float | None:
        """The query's single value now; None if the result is empty."""
        return (await self.answer(promql)).value

    async def answer(self, promql: str) -> QueryAnswer:
        try:
            response = await self._client.post("/api/v1/query", data={"query": promql})
        except httpx.TimeoutException as error:
            raise PrometheusError(
                f"Prometheus at {self.base_url} did not answer in time ({type(error).__name__})"
            ) from error
        except httpx.HTTPError as error:
            raise PrometheusError(
                f"Prometheus at {self.base_url} is unreachable: {error or type(error).__name__}"
            ) from error
        body = _json_body(response, self.base_url)
        if response.status_code != 200 or body.get("status") != "success":
            error_type = body.get("errorType") or f"HTTP {response.status_code}"
            detail = body.get("error") or response.text[:300]
            raise PrometheusError(f"Prometheus rejected the query ({error_type}): {detail}")
        return parse_result(body.get("data"))

    async def is_online(self) -> bool:
        """Whether the server answers its readiness endpoint."""
        try:
            response = await self._client.get("/-/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def _json_body(response: httpx.Response, base_url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as error:
        raise PrometheusError(
            f"{base_url} answered HTTP {response.status_code} without JSON "
            f"(is it a Prometheus?): {response.text[:200]!r}"
        ) from error
    if not isinstance(body, dict):
        raise PrometheusError(f"{base_url} answered JSON that is not an object")
    return body


def parse_result(data: object) -> QueryAnswer:
    """Turn the `data` of a query answer into one value.

    NaN counts as no data: it is what `histogram_quantile` and ratios give when nothing
    was observed, i.e. the same situation as an empty vector.
    """
    if not isinstance(data, dict):
        raise PrometheusError("Prometheus answered without a data object")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        return QueryAnswer(_sample_value(result), series=1)
    if result_type == "vector":
        if not isinstance(result, list):
            raise PrometheusError("Prometheus answered a vector without a result list")
        if not result:
            return QueryAnswer(None, series=0)
        if len(result) > 1:
            described = ", ".join(_describe_series(item) for item in result[:3])
            raise PrometheusError(
                f"the query returned {len(result)} series, expected one "
                f"(aggregate it, e.g. with sum() or max()): {described}"
                + (" …" if len(result) > 3 else "")
            )
        item = result[0]
        if not isinstance(item, dict):
            raise PrometheusError("Prometheus answered a malformed vector sample")
        return QueryAnswer(_sample_value(item.get("value")), series=1)
    raise PrometheusError(
        f"the query returned a {result_type}, expected a scalar or a single-series vector "
        "(range vectors need a function such as rate() or avg_over_time())"
    )


def _sample_value(sample: object) -> float | None:
    if not isinstance(sample, list) or len(sample) != 2:
        raise PrometheusError(f"Prometheus answered a malformed sample: {sample!r}")
    try:
        value = float(sample[1])
    except (TypeError, ValueError) as error:
        raise PrometheusError(f"Prometheus answered a non-numeric value {sample[1]!r}") from error
    return None if math.isnan(value) else value


def _describe_series(item: object) -> str:
    if not isinstance(item, dict):
        return "?"
    metric = item.get("metric") or {}
    if not isinstance(metric, dict):
        return "?"
    name = metric.get("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}"
