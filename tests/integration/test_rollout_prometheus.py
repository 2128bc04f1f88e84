"""The Prometheus adapter against the testbed's real Prometheus."""

from __future__ import annotations

import pytest

from slmops.adapters.prometheus import PrometheusClient, PrometheusError
from slmops.testbed.processes import free_port
from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration


async def test_values_no_data_and_nan(testbed: Testbed) -> None:
    async with PrometheusClient(testbed.prometheus_url) as prometheus:
        assert await prometheus.is_online()
        assert await prometheus.query("vector(0.25)") == 0.25
        assert await prometheus.query("scalar(vector(3))") == 3.0
        assert await prometheus.query('sum(slmops_no_such_metric{rollout="x"})') is None
        # What histogram_quantile gives without observations: no data, not a number.
        assert await prometheus.query("vector(0) / vector(0)") is None


async def test_several_series_bad_queries_and_range_vectors_are_errors(testbed: Testbed) -> None:
    two = (
        'label_replace(vector(1), "pod", "a", "", "") '
        'or label_replace(vector(2), "pod", "b", "", "")'
    )
    async with PrometheusClient(testbed.prometheus_url) as prometheus:
        with pytest.raises(PrometheusError, match="2 series"):
            await prometheus.query(two)
        with pytest.raises(PrometheusError, match="bad_data"):
            await prometheus.query("sum((")
        with pytest.raises(PrometheusError, match=r"bad_data|range"):
            await prometheus.query("vector(1)[1m]")


async def test_an_unreachable_prometheus_is_an_error_never_a_value() -> None:
    async with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_seconds=2) as dead:
        assert not await dead.is_online()
        with pytest.raises(PrometheusError, match="unreachable"):
            await dead.query("vector(1)")
