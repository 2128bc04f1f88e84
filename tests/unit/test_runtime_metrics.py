from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from slmops.runtime.metrics import FAILURE_OTHER, ServedIdentity, ServerMetrics

pytestmark = pytest.mark.unit


def _families(metrics: ServerMetrics) -> dict[str, list]:
    text = metrics.render().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_triton_counters_keep_their_names_without_total_suffix():
    metrics = ServerMetrics(ServedIdentity("m", "1", "rev-a", "int8"))
    metrics.triton.success(request_s=0.002, queue_s=0.0005, compute_s=0.001)
    metrics.triton.failure(FAILURE_OTHER, request_s=0.001)
    text = metrics.render().decode()
    assert "# TYPE nv_inference_request_success counter" in text
    assert "nv_inference_request_success_total" not in text
    line = next(x for x in text.splitlines() if x.startswith("nv_inference_request_success{"))
    assert line == (
        'nv_inference_request_success{model="m",version="1",revision="rev-a",variant="int8"} 1'
    )
    assert (
        'nv_inference_request_failure{model="m",version="1",revision="rev-a",variant="int8",'
        'reason="OTHER"} 1' in text
    )
    assert "nv_inference_request_duration_us{" in text
    assert (
        'nv_inference_request_duration_us{model="m",version="1",revision="rev-a",'
        'variant="int8"} 3000' in text
    )


def test_token_histograms_and_counters():
    metrics = ServerMetrics(ServedIdentity("m", "1", "r", "v"))
    metrics.observe_tokens(arrived=10.0, token_times=[10.5, 10.6, 10.8], prompt_tokens=4)
    families = _families(metrics)
    ttft = {s.name: s.value for s in families["slmops_time_to_first_token_seconds"]}
    assert ttft["slmops_time_to_first_token_seconds_count"] == 1
    assert ttft["slmops_time_to_first_token_seconds_sum"] == pytest.approx(0.5)
    itl = {s.name: s.value for s in families["slmops_inter_token_latency_seconds"]}
    assert itl["slmops_inter_token_latency_seconds_count"] == 2
    assert itl["slmops_inter_token_latency_seconds_sum"] == pytest.approx(0.3)
    generated = families["slmops_generated_tokens"]
    assert generated[0].value == 3
    assert generated[0].labels == {"model": "m", "version": "1", "revision": "r", "variant": "v"}


def test_error_series_exist_at_zero_before_any_error():
    metrics = ServerMetrics(ServedIdentity("m", "1", "r", "v"))
    errors = _families(metrics)["slmops_request_errors"]
    assert {(s.labels["endpoint"], s.labels["reason"]) for s in errors} >= {
        ("infer", "bad_request"),
        ("generate", "overloaded"),
    }
    assert all(s.value == 0 for s in errors)


def test_token_histograms_exist_before_the_first_generation():
    families = _families(ServerMetrics(ServedIdentity("m", "1", "r", "v")))
    counts = {
        name: next(s.value for s in families[name] if s.name.endswith("_count"))
        for name in ("slmops_time_to_first_token_seconds", "slmops_inter_token_latency_seconds")
    }
    assert counts == {
        "slmops_time_to_first_token_seconds": 0,
        "slmops_inter_token_latency_seconds": 0,
    }
