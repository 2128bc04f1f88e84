"""Pure parts of the simulator's kubelet: image allowlist, env resolution, `$(VAR)`
expansion, mount-path rewriting, restart policy and pod phase."""

from __future__ import annotations

import base64

import pytest

from slmops.testbed.simulator.podspec import (
    PodFacts,
    PodSpecError,
    container_argv,
    container_mounts,
    decode_secret,
    expand_variables,
    http_probe_target,
    image_repository,
    is_allowed_image,
    pod_phase,
    resolve_env,
    restart_wanted,
    rewrite_paths,
)

pytestmark = pytest.mark.unit

ALLOWED = ("slmops-runtime", "slmops-builder", "slmops-operator")
FACTS = PodFacts(
    name="p-1",
    namespace="ns",
    uid="uid-1",
    node_name="edge-rpi5-0000",
    pod_ip="127.200.16.1",
    host_ip="127.200.0.1",
    service_account="default",
    labels={"app": "srv", "slmops.io/revision": "r2"},
    annotations={"note": "x"},
)


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/slmops/slmops-runtime:0.1.0", "ghcr.io/slmops/slmops-runtime"),
        ("localhost:5000/slmops-builder", "localhost:5000/slmops-builder"),
        ("127.0.0.1:5000/a/slmops-runtime:v1@sha256:abc", "127.0.0.1:5000/a/slmops-runtime"),
        ("slmops-operator", "slmops-operator"),
    ],
)
def test_image_repository_strips_tag_and_digest_not_registry_port(
    image: str, repository: str
) -> None:
    assert image_repository(image) == repository


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("ghcr.io/slmops/slmops-runtime:0.1.0", True),
        ("127.0.0.1:5000/slmops-builder:dev", True),
        ("slmops-operator:latest", True),
        ("ghcr.io/evil/not-slmops-runtime:1", False),
        ("nginx:1.25", False),
        ("ghcr.io/slmops/slmops-runtime-extra:1", False),
    ],
)
def test_allowlist_matches_whole_repository_names(image: str, allowed: bool) -> None:
    assert is_allowed_image(image, ALLOWED) is allowed


def test_expand_variables_follows_kubernetes_rules() -> None:
    variables = {"A": "1", "B_2": "two"}
    assert expand_variables("$(A)-$(B_2)", variables) == "1-two"
    assert expand_variables("$(MISSING) stays", variables) == "$(MISSING) stays"
    assert expand_variables("$$(A) is escaped", variables) == "$(A) is escaped"
    assert expand_variables("$A and ${A} untouched", variables) == "$A and ${A} untouched"
    assert expand_variables("cost $$5", variables) == "cost $5"


def test_resolve_env_values_refs_and_order() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
            {"secretRef": {"name": "missing", "optional": True}},
        ],
        "env": [
            {"name": "BASE", "value": "/models"},
            {"name": "PATHED", "value": "$(BASE)/tiny-$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "REV",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['slmops.io/revision']"}},
            },
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": True}},
            },
        ],
    }
    env = resolve_env(container, FACTS, {"s": {"token": "t0k"}}, {"cm": {"mode": "fast"}})
    assert env == {
        "CM_mode": "fast",
        "BASE": "/models",
        # LATER is defined after PATHED, so it stays verbatim (kubelet semantics).
        "PATHED": "/models/tiny-$(LATER)",
        "LATER": "x",
        "POD": "p-1",
        "NS": "ns",
        "IP": "127.200.16.1",
        "HOST": "127.200.0.1",
        "NODE": "edge-rpi5-0000",
        "REV": "r2",
        "TOKEN": "t0k",
        "MODE": "fast",
    }


def test_missing_secret_is_a_clear_config_error() -> None:
    container = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(PodSpecError, match='secret "s" not found') as caught:
        resolve_env(container, FACTS, {}, {})
    assert caught.value.reason == "CreateContainerConfigError"
    with pytest.raises(PodSpecError, match="couldn't find key k"):
        resolve_env(container, FACTS, {"s": {}}, {})


def test_decode_secret_merges_data_and_string_data() -> None:
    secret = {"data": {"a": base64.b64encode(b"one").decode()}, "stringData": {"b": "two"}}
    assert decode_secret(secret) == {"a": "one", "b": "two"}


def test_rewrite_paths_replaces_whole_path_prefixes_longest_first() -> None:
    mounts = {"/models": "/state/n1/models", "/models/cache": "/state/pod/cache"}
    assert rewrite_paths("/models/tiny.onnx", mounts) == "/state/n1/models/tiny.onnx"
    assert rewrite_paths("/models/cache/a", mounts) == "/state/pod/cache/a"
    assert rewrite_paths("--dir=/models", mounts) == "--dir=/state/n1/models"
    assert rewrite_paths("a:/models:b", mounts) == "a:/state/n1/models:b"
    # Not a path prefix: left alone.
    assert rewrite_paths("/models-old/x", mounts) == "/models-old/x"
    assert rewrite_paths("/data/models/x", mounts) == "/data/models/x"
    assert rewrite_paths("http://host/models", mounts) == "http://host/models"


def test_rewrite_paths_with_backslashes_in_target_is_literal() -> None:
    assert rewrite_paths("/m/x", {"/m": r"/a\1b"}) == r"/a\1b/x"


def test_container_mounts_and_sub_path() -> None:
    container = {
        "volumeMounts": [
            {"name": "cache", "mountPath": "/var/cache/slmops"},
            {"name": "cfg", "mountPath": "/etc/app/config.yaml", "subPath": "config.yaml"},
        ]
    }
    assert container_mounts(container, {"cache": "/s/cache", "cfg": "/s/cfg"}) == {
        "/var/cache/slmops": "/s/cache",
        "/etc/app/config.yaml": "/s/cfg/config.yaml",
    }
    with pytest.raises(PodSpecError, match="volume 'cache' is not defined"):
        container_mounts(container, {"cfg": "/s/cfg"})


def test_container_argv_expands_and_defaults_to_slmops_entrypoint() -> None:
    env = {"MODEL": "tiny"}
    assert container_argv({"command": ["python"], "args": ["-m", "$(MODEL)"]}, env) == [
        "python",
        "-m",
        "tiny",
    ]
    assert container_argv({"args": ["serve", "--model=$(MODEL)"]}, env) == [
        "slmops",
        "serve",
        "--model=tiny",
    ]


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    assert restart_wanted(policy, code) is restart


def test_pod_phase() -> None:
    assert pod_phase([None, 0]) == "Running"
    assert pod_phase([0, 0]) == "Succeeded"
    assert pod_phase([0, 137]) == "Failed"


def test_http_probe_target_resolves_named_port() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    probe = {"httpGet": {"path": "v2/health/ready", "port": "http"}, "periodSeconds": 2}
    assert http_probe_target(probe, container, "127.1.16.1") == (
        "http://127.1.16.1:8080/v2/health/ready",
        0.0,
        2.0,
        3,
    )
    assert http_probe_target({"exec": {"command": ["true"]}}, container, "127.1.16.1") is None
    with pytest.raises(PodSpecError, match="unknown probe port name 'grpc'"):
        http_probe_target({"httpGet": {"port": "grpc"}}, container, "127.1.16.1")
