"""Hardware profiles, scrape-target labels and the deb-src recipe."""

from __future__ import annotations

import pytest

from slmops.testbed.prerequisites import deb_src_stanza
from slmops.testbed.processes import TestbedError
from slmops.testbed.simulator.nodes import node_ip, plan_fleet
from slmops.testbed.simulator.profiles import (
    HARDWARE_CLASS_LABEL,
    HOSTNAME_LABEL,
    PROFILES,
    node_labels,
)
from slmops.testbed.simulator.scrape_targets import prometheus_label_name, scrape_target
from slmops.testbed.testbed import FleetSpec

pytestmark = pytest.mark.unit


def test_every_profile_has_the_standard_labels() -> None:
    assert set(PROFILES) == {"rpi5", "jetson-orin", "x86-vnni", "x86-avx2"}
    for name, profile in PROFILES.items():
        labels = node_labels(profile, "n-1", 0)
        assert labels[HARDWARE_CLASS_LABEL] == name
        assert labels[HOSTNAME_LABEL] == "n-1"
        assert labels["kubernetes.io/arch"] in ("arm64", "amd64")
        assert labels["kubernetes.io/os"] == "linux"
        for key in ("topology.kubernetes.io/zone", "topology.kubernetes.io/region"):
            assert labels[key]
        assert labels["slmops.io/site"]


def test_profiles_carry_their_hardware_features() -> None:
    assert PROFILES["rpi5"].labels["feature.node.kubernetes.io/cpu-cpuid.ASIMDDP"] == "true"
    jetson = PROFILES["jetson-orin"]
    assert jetson.labels["nvidia.com/gpu.present"] == "true"
    assert jetson.labels["nvidia.com/gpu.count"] == "1"
    assert int(jetson.labels["nvidia.com/gpu.memory"]) >= 8192  # MiB
    assert jetson.capacity()["nvidia.com/gpu"] == "1"
    vnni = PROFILES["x86-vnni"].labels
    assert vnni["feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI"] == "true"
    assert vnni["feature.node.kubernetes.io/cpu-cpuid.AVX2"] == "true"
    avx2 = PROFILES["x86-avx2"].labels
    assert "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI" not in avx2
    assert "nvidia.com/gpu" not in PROFILES["rpi5"].capacity()


def test_allocatable_is_capacity_minus_reservations() -> None:
    rpi = PROFILES["rpi5"]
    assert rpi.capacity()["cpu"] == "4"
    assert rpi.capacity()["memory"] == "8192Mi"
    assert rpi.allocatable()["cpu"] == "3750m"
    assert rpi.allocatable()["memory"] == "7680Mi"
    assert rpi.allocatable()["pods"] == "110"


def test_fleet_plan_names_and_addresses_are_unique() -> None:
    nodes = plan_fleet({"rpi5": 300, "x86-avx2": 2}, octet=150)
    assert len({n.name for n in nodes}) == 302
    assert len({n.ip for n in nodes}) == 302
    assert nodes[0].name == "edge-rpi5-0000" and nodes[0].ip == "127.150.0.1"
    assert node_ip(150, 250) == "127.150.1.1"
    assert all(n.online_event.is_set() for n in nodes)


def test_fleet_spec_rejects_unknown_profiles_and_negative_counts() -> None:
    with pytest.raises(TestbedError, match="unknown hardware profile"):
        FleetSpec(nodes_per_profile={"tpu": 1})
    with pytest.raises(TestbedError, match=">= 0"):
        FleetSpec(nodes_per_profile={"rpi5": -1})


@pytest.mark.parametrize(
    ("name", "sanitised"),
    [
        ("slmops.io/revision", "slmops_io_revision"),
        ("app.kubernetes.io/name", "app_kubernetes_io_name"),
        ("pod-template-hash", "pod_template_hash"),
        ("1st", "_1st"),
        ("ok_name", "ok_name"),
    ],
)
def test_prometheus_label_names(name: str, sanitised: str) -> None:
    assert prometheus_label_name(name) == sanitised


def test_scrape_target_from_annotations_and_labels() -> None:
    pod = {
        "metadata": {
            "name": "srv-1",
            "namespace": "edge",
            "labels": {"slmops.io/revision": "r3", "pod": "spoof"},
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8002",
                "prometheus.io/path": "/v2/metrics",
            },
        }
    }
    target = scrape_target(pod, "127.9.16.4", "edge-rpi5-0001")
    assert target == {
        "targets": ["127.9.16.4:8002"],
        "labels": {
            "slmops_io_revision": "r3",
            "pod": "srv-1",
            "namespace": "edge",
            "node": "edge-rpi5-0001",
            "__metrics_path__": "/v2/metrics",
            "__scheme__": "http",
        },
    }
    pod["metadata"]["annotations"]["prometheus.io/scrape"] = "false"
    assert scrape_target(pod, "127.9.16.4", "n") is None


def test_deb_src_stanza_copies_uris_and_key_of_the_first_stanza() -> None:
    sources = (
        "Types: deb\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert deb_src_stanza(sources) == (
        "Types: deb-src\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    with pytest.raises(TestbedError):
        deb_src_stanza("\n\n")
