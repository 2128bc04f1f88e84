from __future__ import annotations

import pytest

from slmops.runtime.settings import (
    ServeSettings,
    SettingsError,
    default_host,
    default_model_name,
    parse_sim_slowdown,
)

pytestmark = pytest.mark.unit


def test_model_name_from_env_then_from_reference():
    assert default_model_name("/m/demo-int8", {"SLMOPS_MODEL_NAME": "demo"}) == "demo"
    assert default_model_name("/m/demo-int8/", {}) == "demo-int8"
    assert default_model_name("/m/x.onnx", {}) == "x"
    assert default_model_name("oci://127.0.0.1:5000/models/demo@sha256:" + "a" * 64, {}) == "demo"


def test_pod_ip_is_the_default_host():
    assert default_host({"POD_IP": "10.0.0.7"}) == "10.0.0.7"
    assert default_host({}) == "127.0.0.1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 70000}, "--port"),
        ({"execution_provider": "tpu"}, "--execution-provider"),
        ({"max_concurrency": 0}, "--max-concurrency"),
        ({"max_queue": -1}, "--max-queue"),
        ({"max_body_bytes": 10}, "--max-body-bytes"),
        ({"sim_slowdown": 0.5}, "SLMOPS_SIM_SLOWDOWN"),
        ({"threads": -2}, "--threads"),
    ],
)
def test_invalid_settings_name_the_setting(changes, message):
    with pytest.raises(SettingsError, match=message):
        ServeSettings(**{"model": "m", "port": 1, **changes})


def test_slowdown_from_env():
    assert parse_sim_slowdown({}) == 1.0
    assert parse_sim_slowdown({"SLMOPS_SIM_SLOWDOWN": "3"}) == 3.0
    with pytest.raises(SettingsError, match="SLMOPS_SIM_SLOWDOWN"):
        parse_sim_slowdown({"SLMOPS_SIM_SLOWDOWN": "fast"})
