"""What `/metrics` exposes.

Two families. The `nv_inference_*` counters carry Triton's names, types and labels (`model`,
`version`, and `reason` on failures) so dashboards built for Triton work unchanged; Triton
exposes them without the `_total` suffix prometheus-client would add, so they are rendered
here by hand. The `slmops_*` histograms and counters give percentiles and generation figures
Triton lacks. Every series also carries `revision` and `variant` (from the environment the
workload sets), so a rollout can compare canary and stable on the same hardware class.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# Triton's failure reasons (nv_inference_request_failure{reason=...}).
FAILURE_REJECTED = "REJECTED"  # overloaded or draining
FAILURE_CANCELED = "CANCELED"  # the client went away
FAILURE_BACKEND = "BACKEND"  # the model failed
FAILURE_OTHER = "OTHER"  # the request was malformed

_TRITON_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in "
    "microseconds",
}

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
_TOKEN_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class ServedIdentity:
    model: str
    version: str
    revision: str
    variant: str


class TritonCounters:
    """Triton-named counters, thread-safe, rendered in Triton's exposition shape."""

    def __init__(self, identity: ServedIdentity) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], float] = {}
        self._labels = (
            f'model="{_escape(identity.model)}",version="{_escape(identity.version)}",'
            f'revision="{_escape(identity.revision)}",variant="{_escape(identity.variant)}"'
        )
        # Triton shows the failure series for every reason from the start; a rate() over a
        # series that appears only with the first failure would miss that failure.
        for reason in (FAILURE_REJECTED, FAILURE_CANCELED, FAILURE_BACKEND, FAILURE_OTHER):
            self._values[("nv_inference_request_failure", reason)] = 0.0
        for name in _TRITON_COUNTERS:
            if name != "nv_inference_request_failure":
                self._values[(name, "")] = 0.0

    def success(self, request_s: float, queue_s: float, compute_s: float) -> None:
        with self._lock:
            self._add("nv_inference_request_success", 1)
            self._add("nv_inference_count", 1)
            self._add("nv_inference_exec_count", 1)
            self._add("nv_inference_request_duration_us", request_s * 1e6)
            self._add("nv_inference_queue_duration_us", queue_s * 1e6)
            self._add("nv_inference_compute_infer_duration_us", compute_s * 1e6)

    def failure(self, reason: str, request_s: float) -> None:
        with self._lock:
            self._values[("nv_inference_request_failure", reason)] += 1
            self._add("nv_inference_request_duration_us", request_s * 1e6)

    def _add(self, name: str, amount: float) -> None:
        self._values[(name, "")] += amount

    def render(self, pending_requests: int = 0) -> str:
        with self._lock:
            values = dict(self._values)
        lines = [
            "# HELP nv_inference_pending_request_count Instantaneous number of pending requests "
            "awaiting execution per-model.\n# TYPE nv_inference_pending_request_count gauge\n"
            f"nv_inference_pending_request_count{{{self._labels}}} {pending_requests}\n"
        ]
        for name, help_text in _TRITON_COUNTERS.items():
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
            for (series, reason), value in values.items():
                if series != name:
                    continue
                labels = self._labels + (f',reason="{reason}"' if reason else "")
                lines.append(f"{name}{{{labels}}} {_number(value)}\n")
        return "".join(lines)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


class ServerMetrics:
    def __init__(self, identity: ServedIdentity) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.identity = identity
        self.registry = CollectorRegistry(auto_describe=True)
        self.triton = TritonCounters(identity)
        base = ["model", "version", "revision", "variant"]
        self._base_values = (identity.model, identity.version, identity.revision, identity.variant)
        self.request_duration = Histogram(
            "slmops_request_duration_seconds",
            "Time from a request's arrival to its last byte, by endpoint and HTTP status code",
            [*base, "endpoint", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "slmops_time_to_first_token_seconds",
            "Time from a generate request's arrival to its first generated token",
            base,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "slmops_inter_token_latency_seconds",
            "Time between consecutive generated tokens",
            base,
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "slmops_generated_tokens",
            "Tokens generated",
            base,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "slmops_prompt_tokens",
            "Prompt tokens processed",
            base,
            registry=self.registry,
        )
        self.request_errors = Counter(
            "slmops_request_errors",
            "Requests that did not succeed, by reason "
            "(bad_request, overloaded, draining, cancelled, model_error, not_found)",
            [*base, "endpoint", "reason"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "slmops_inflight_requests",
            "Requests running on the model now",
            base,
            registry=self.registry,
        )
        self.queued = Gauge(
            "slmops_queued_requests",
            "Requests waiting for a free model slot",
            base,
            registry=self.registry,
        )
        self.model_load = Gauge(
            "slmops_model_load_seconds",
            "Seconds to download (if needed), load and warm up the model, until ready",
            base,
            registry=self.registry,
        )
        self.model_download = Gauge(
            "slmops_model_download_seconds",
            "Seconds spent downloading the model at start (0 when served from the cache)",
            base,
            registry=self.registry,
        )
        self.model_download_bytes = Gauge(
            "slmops_model_download_bytes",
            "Bytes downloaded at start (0 when served from the node-local cache)",
            base,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "slmops_model_info",
            "Always 1; labels describe what is served and how",
            [*base, "platform", "execution_provider", "threads"],
            registry=self.registry,
        )
        self._duration_children: dict[tuple[str, int], Histogram] = {}
        for family in (
            self.generated_tokens,
            self.prompt_tokens,
            self.time_to_first_token,
            self.inter_token_latency,
        ):
            family.labels(*self._base_values)
        # Zero-valued series from the start, so a rollout's rate() over a canary that has
        # seen no error yet reads 0 instead of "no data".
        for endpoint in ("infer", "generate", "generate_stream"):
            for reason in ("bad_request", "overloaded", "model_error", "cancelled"):
                self.request_errors.labels(*self._base_values, endpoint, reason)

    @property
    def base_labels(self) -> tuple[str, str, str, str]:
        return self._base_values

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        # labels() looks the child up under a lock each time; on the infer hot path the
        # cached child is measurably cheaper.
        child = self._duration_children.get((endpoint, code))
        if child is None:
            child = self.request_duration.labels(*self._base_values, endpoint, str(code))
            self._duration_children[(endpoint, code)] = child
        child.observe(seconds)

    def count_error(self, endpoint: str, reason: str) -> None:
        self.request_errors.labels(*self._base_values, endpoint, reason).inc()

    def observe_tokens(self, arrived: float, token_times: list[float], prompt_tokens: int) -> None:
        self.prompt_tokens.labels(*self._base_values).inc(prompt_tokens)
        if not token_times:
            return
        self.generated_tokens.labels(*self._base_values).inc(len(token_times))
        self.time_to_first_token.labels(*self._base_values).observe(token_times[0] - arrived)
        inter_token = self.inter_token_latency.labels(*self._base_values)
        for earlier, later in itertools.pairwise(token_times):
            inter_token.observe(later - earlier)

    def render(self, pending_requests: int = 0) -> bytes:
        return generate_latest(self.registry) + self.triton.render(pending_requests).encode()
