"""The Helm chart as helm sees it: lint, render in both modes, values schema, derived files.

Runs the real helm (fetched through npm by slmops.testbed.helm); no cluster needed. What the
rendered objects do on a real apiserver is tested in test_helm_install.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slmops.runtime.metrics import ServedIdentity, ServerMetrics
from slmops.testbed.chart import (
    ChartError,
    ChartPaths,
    crd_drift,
    install_manifest,
    render,
    repository_root,
    run_helm,
)
from slmops.testbed.helm import ensure_helm

pytestmark = pytest.mark.integration

PATHS = ChartPaths(repository_root())
CHART = PATHS.chart
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
# apiVersions served by Kubernetes 1.20 (the oldest version we support), plus the Prometheus
# Operator's, which the chart only renders when asked to.
KUBERNETES_1_20_API_VERSIONS = {
    "v1",
    "apps/v1",
    "rbac.authorization.k8s.io/v1",
    "networking.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "policy/v1beta1",
}
PROMETHEUS_OPERATOR_API_VERSION = "monitoring.coreos.com/v1"
MONITORING_ON = {
    "monitoring.serviceMonitor.enabled": "true",
    "monitoring.podMonitor.enabled": "true",
    "monitoring.prometheusRule.enabled": "true",
}


SERIES_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def rules_of(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc.get("rules", []):
                yield doc, rule


def operator_rules(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    # The aggregated view/edit roles are for people, not for the operator.
    return [
        (doc, rule)
        for doc, rule in rules_of(docs)
        if not doc["metadata"]["name"].endswith(("-view", "-edit"))
    ]


@pytest.mark.parametrize(
    "set_values",
    [{}, {"watchNamespaces": "{team-a,team-b}"}, MONITORING_ON],
    ids=["defaults", "namespaced", "monitoring"],
)
def test_lint_is_clean(helm: Path, set_values: dict[str, str]) -> None:
    argv = [str(helm), "lint", str(CHART), "--strict"]
    for key, value in set_values.items():
        argv += ["--set", f"{key}={value}"]
    output = run_helm(argv)
    assert "0 chart(s) failed" in output


def test_defaults_render_an_operator_deployment_as_specified(helm: Path) -> None:
    docs = documents(render(CHART, helm=helm))
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/slmops/slmops-operator:{APP_VERSION}"
    assert container["command"] == ["slmops"]
    assert container["args"][0] == "operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--namespace")]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SLMOPS_RUNTIME_IMAGE"] == f"ghcr.io/slmops/slmops-runtime:{APP_VERSION}"
    assert env["SLMOPS_BUILDER_IMAGE"] == f"ghcr.io/slmops/slmops-builder:{APP_VERSION}"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == 8080
    assert pod["serviceAccountName"] == "slmops"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_image_digest_wins_over_tag(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    docs = documents(
        render(CHART, helm=helm, set_values={"image.digest": digest, "runtimeImage.tag": "9.9.9"})
    )
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/slmops/slmops-operator@{digest}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SLMOPS_RUNTIME_IMAGE"] == "ghcr.io/slmops/slmops-runtime:9.9.9"


@pytest.mark.parametrize(
    "set_values",
    [{}, {"watchNamespaces": "{team-a,team-b}"}, MONITORING_ON],
    ids=["defaults", "namespaced", "monitoring"],
)
def test_no_wildcards_and_only_apis_that_exist_on_1_20(
    helm: Path, set_values: dict[str, str]
) -> None:
    docs = documents(render(CHART, helm=helm, set_values=set_values))
    for doc in docs:
        allowed = KUBERNETES_1_20_API_VERSIONS | {PROMETHEUS_OPERATOR_API_VERSION}
        assert doc["apiVersion"] in allowed, doc["kind"]
    for doc, rule in rules_of(docs):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{doc['metadata']['name']}: {rule}"
        assert "nonResourceURLs" not in rule


def test_operator_rbac_never_touches_secrets_leases_or_rbac(helm: Path) -> None:
    for set_values in ({}, {"watchNamespaces": "{team-a}"}):
        docs = documents(render(CHART, helm=helm, set_values=set_values))
        for _, rule in operator_rules(docs):
            assert not {"secrets", "leases", "configmaps"} & set(rule["resources"])
            assert "rbac.authorization.k8s.io" not in rule["apiGroups"]
            if "pods" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
            if "nodes" in rule["resources"]:
                assert set(rule["verbs"]) == {"get", "list", "watch"}


def test_namespaced_mode_uses_roles_per_namespace(helm: Path) -> None:
    docs = documents(render(CHART, helm=helm, set_values={"watchNamespaces": "{team-a,team-b}"}))
    (deployment,) = by_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    roles = by_kind(docs, "Role")
    assert sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles) == [
        ("team-a", "slmops-handlers"),
        ("team-a", "slmops-kopf"),
        ("team-b", "slmops-handlers"),
        ("team-b", "slmops-kopf"),
    ]
    bindings = by_kind(docs, "RoleBinding")
    assert len(bindings) == 4
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "slmops", "namespace": "slmops-system"}
        ]
    # Only cluster-scoped, read-only things remain cluster-wide.
    for doc, rule in operator_rules(docs):
        if doc["kind"] == "ClusterRole":
            assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces", "nodes"}
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    # The operator makes the model servers' NetworkPolicies, so only where it may work.
    for role in roles:
        if role["metadata"]["name"] == "slmops-handlers":
            assert NETWORK_POLICY_RULE in role["rules"]


def test_aggregated_roles_for_people(helm: Path) -> None:
    docs = documents(render(CHART, helm=helm))
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    view, edit = roles["slmops-view"], roles["slmops-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    for role in (view, edit):
        for rule in role["rules"]:
            assert {r.split("/")[0] for r in rule["resources"]} == {"slmmodels", "edgerollouts"}


def test_monitoring_objects_only_when_asked(helm: Path) -> None:
    off = documents(render(CHART, helm=helm))
    assert not [d for d in off if d["apiVersion"] == PROMETHEUS_OPERATOR_API_VERSION]
    on = documents(render(CHART, helm=helm, set_values=MONITORING_ON))
    kinds = {d["kind"] for d in on if d["apiVersion"] == PROMETHEUS_OPERATOR_API_VERSION}
    assert kinds == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    (pod_monitor,) = by_kind(on, "PodMonitor")
    # The analysis queries filter on these sanitised pod labels.
    assert set(pod_monitor["spec"]["podTargetLabels"]) >= {
        "slmops.io/rollout",
        "slmops.io/revision",
        "slmops.io/variant",
    }
    (rule,) = by_kind(on, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "SLMOpsRolloutDegraded",
        "SLMOpsRolloutRolledBack",
        "SLMOpsRolloutStalled",
        "SLMOpsModelBuildFailed",
    } <= alerts


NETWORK_POLICY_RULE = {
    "apiGroups": ["networking.k8s.io"],
    "resources": ["networkpolicies"],
    "verbs": ["create", "get", "list", "watch", "patch", "delete"],
}


@pytest.mark.parametrize(("enabled", "env_value"), [(None, "true"), ("false", "false")])
def test_network_policies_are_the_operators_switched_by_one_value(
    helm: Path, enabled: str | None, env_value: str
) -> None:
    set_values = {"networkPolicy.enabled": enabled} if enabled else {}
    docs = documents(render(CHART, helm=helm, set_values=set_values))
    # Per rollout, by the operator (which knows each rollout's port and registry); a policy of
    # the chart's own would have to be told both for every namespace.
    assert not by_kind(docs, "NetworkPolicy")
    (deployment,) = by_kind(docs, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SLMOPS_NETWORK_POLICY"] == env_value
    # Switched off, the operator still removes the policies it made before.
    (handlers,) = [
        r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "slmops-handlers"
    ]
    assert NETWORK_POLICY_RULE in handlers["rules"]


def test_dashboard_is_grafana_json_over_real_metric_names(helm: Path) -> None:
    docs = documents(render(CHART, helm=helm))
    (config_map,) = [d for d in by_kind(docs, "ConfigMap") if "dashboard" in d["metadata"]["name"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["slmops.json"])
    expressions = dashboard_expressions(dashboard)
    assert expressions
    registry = ServerMetrics(ServedIdentity("m", "1", "r", "v")).registry
    served = {
        f"{family.name}{suffix}"
        for family in registry.collect()
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }
    # slmops_io_* are label names (pod labels copied by the PodMonitor), not metrics.
    served |= operator_series()
    used = {
        name
        for expr in expressions
        for name in re.findall(r"\bslmops_\w+", expr)
        if not name.startswith("slmops_io_")
    }
    assert used <= served, used - served
    for required in (
        "slmops_request_duration_seconds_bucket",
        "slmops_time_to_first_token_seconds_bucket",
        "slmops_generated_tokens_total",
        "slmops_request_errors_total",
    ):
        assert required in used


def operator_series() -> set[str]:
    """Series names of the operator's own metrics (the controller's module defines them)."""
    from prometheus_client.metrics import MetricWrapperBase

    from slmops.controllers import rollout_metrics

    return {
        f"{family.name}{suffix}"
        for metric in vars(rollout_metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_admission_webhook_when_enabled(helm: Path) -> None:
    off = documents(render(CHART, helm=helm))
    for _, rule in operator_rules(off):
        assert "admissionregistration.k8s.io" not in rule["apiGroups"]
    on = documents(
        render(
            CHART,
            helm=helm,
            set_values={"admission.enabled": "true", "admission.certSecret": "webhook-tls"},
        )
    )
    (deployment,) = by_kind(on, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--admission-listen=0.0.0.0:9443" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SLMOPS_ADMISSION_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SLMOPS_ADMISSION_CERT_DIR"]["value"] == "/etc/slmops/admission"
    assert {"name": "admission-certificate", "secret": {"secretName": "webhook-tls"}} in pod[
        "volumes"
    ]
    webhook_rules = [
        rule
        for _, rule in operator_rules(on)
        if "admissionregistration.k8s.io" in rule["apiGroups"]
    ]
    # Creating cannot be limited by name; patching is limited to kopf's own configuration.
    assert [(r["verbs"], r.get("resourceNames")) for r in webhook_rules] == [
        (["create"], None),
        (["patch"], ["slmops.io"]),
    ]


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("operator.metricPort", "1", "metricPort"),
        ("watchNamespaces", "{Team_A}", "Team_A"),
        ("networkPolicy.enabled", "maybe", "networkPolicy/enabled"),
        # The chart's own policy had these; an old values file is told, not ignored.
        ("networkPolicy.servingPorts", "{8000}", "servingPorts"),
        ("image.digest", "latest", "digest"),
    ],
)
def test_bad_values_fail_with_the_key_named(
    helm: Path, key: str, value: str, complaint: str
) -> None:
    with pytest.raises(ChartError, match=complaint):
        render(CHART, helm=helm, set_values={key: value})


def test_chart_crds_are_the_generated_ones() -> None:
    assert crd_drift(PATHS) == [], "run: python -m slmops.testbed.chart"


def test_install_manifest_is_the_chart_rendered_with_defaults(helm: Path) -> None:
    assert PATHS.install_manifest.read_text() == install_manifest(PATHS, helm), (
        "manifests/install.yaml drifted from the chart; run: python -m slmops.testbed.chart"
    )
    docs = documents(PATHS.install_manifest.read_text())
    assert docs[0]["kind"] == "Namespace"
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "Deployment"}
