"""Synthetic metrics: a gauge the test serves and the testbed's real Prometheus scrapes.

With virtual pods there is no traffic to measure; a rollout's analysis instead queries a
gauge whose value the test sets, so the test decides each verdict and the operator still
goes through the real Prometheus (file_sd discovery, scrapes, PromQL) to learn it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from slmops.testbed.processes import free_port
from slmops.testbed.testbed import Testbed, prometheus_query


class SyntheticGauge:
    """A labelled gauge on a metrics endpoint of the test's own, registered with Prometheus."""

    def __init__(
        self, bed: Testbed, name: str, documentation: str, labelnames: Sequence[str]
    ) -> None:
        self.name = name
        self.prometheus_url = bed.prometheus_url
        self.registry = CollectorRegistry()
        self.gauge = Gauge(name, documentation, list(labelnames), registry=self.registry)
        self.port = free_port()
        self._server, self._thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )
        # The file name is the metric's: two gauges of one test never share a target file.
        self.target_file = bed.state_dir / "prometheus" / "targets" / f"{name}.json"
        self.target_file.write_text(
            json.dumps([{"targets": [f"127.0.0.1:{self.port}"], "labels": {"synthetic": name}}])
        )

    def set(self, value: float, **labels: str) -> None:
        self.gauge.labels(**labels).set(value)

    def wait_scraped(self, series: int, timeout: float = 60.0) -> None:
        """Until Prometheus holds `series` series of the gauge (file_sd refresh plus a scrape)."""
        query = f"count({self.name})"
        deadline = time.monotonic() + timeout
        while True:
            result = prometheus_query(self.prometheus_url, query)
            seen = int(float(result[0]["value"][1])) if result else 0
            if seen >= series:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Prometheus has {seen} of {series} series of {self.name} after {timeout}s"
                )
            time.sleep(0.5)

    def close(self) -> None:
        self.target_file.unlink(missing_ok=True)
        self._server.shutdown()
