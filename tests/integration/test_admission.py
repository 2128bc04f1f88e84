"""Admission on the real apiserver: hand-written bad specs, then hundreds of generated ones.

Every generated spec is either refused with a message that names the field, or accepted
and then handled by the operator without crashing or looping. The operator runs as a real
process with its webhook on loopback; the apiserver calls it over TLS.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config

from tests.support.operator import OperatorProcess, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
GROUP, VERSION = "slmops.io", "v1alpha1"


@pytest.fixture(scope="module")
def api(testbed: Any) -> client.CustomObjectsApi:
    testbed.kubectl("apply", "-f", str(ROOT / "crds"))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    return client.CustomObjectsApi(config.new_client_from_config(str(testbed.kubeconfig)))


@pytest.fixture(scope="module")
def admission_operator(
    testbed: Any, api: client.CustomObjectsApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        testbed.kubeconfig,
        tmp_path_factory.mktemp("admission-operator"),
        {"SLMOPS_ADMISSION_LISTEN": f"127.0.0.1:{free_port()}"},
    )
    process.start()
    # kopf registers the webhook configuration shortly after start; wait until it answers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = testbed.kubectl(
            "get", "validatingwebhookconfiguration", "slmops.io", "-o", "json", check=False
        )
        if found.returncode == 0 and json.loads(found.stdout).get("webhooks"):
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"no webhook configuration; operator log: {process.logs()[-2000:]}")
    yield process
    process.stop()
    testbed.kubectl("delete", "validatingwebhookconfiguration", "slmops.io", check=False)


def _sample(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    return document


def _create(
    api: client.CustomObjectsApi, namespace: str, document: dict[str, Any]
) -> tuple[bool, str]:
    plural = {"SLMModel": "slmmodels", "EdgeRollout": "edgerollouts"}[document["kind"]]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, document)
    except client.ApiException as error:
        body = json.loads(error.body or "{}")
        return False, str(body.get("message", error.body))
    return True, ""


def _wait_for_webhook(api: client.CustomObjectsApi, namespace: str) -> None:
    """The first requests after registration may still race the apiserver's cache."""
    probe = _sample("edgerollout-demo.yaml")
    probe["spec"]["analysis"]["metrics"][0]["query"] = "up{x='{{nope}}'}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe["metadata"] = {"name": f"probe-{uuid.uuid4().hex[:6]}"}
        created, _ = _create(api, namespace, probe)
        if not created:
            return
        time.sleep(0.5)
    raise TimeoutError("the webhook never refused a bad template")


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        (
            ["spec", "analysis", "metrics", 0, "query"],
            'rate(x{pod="{{podName}}"}[1m])',
            "spec.analysis.metrics[0].query",
            "unknown template variable {{podName}}",
        ),
        (
            ["spec", "analysis", "metrics", 1, "successCondition"],
            "result < open('/etc/passwd')",
            "spec.analysis.metrics[1].successCondition",
            "",
        ),
        (
            ["spec", "strategy", "waves", 1, "selector"],
            {"matchLabels": {"slmops.io/site": "nowhere"}},
            "spec.strategy.waves[1].selector",
            "covers none of the",
        ),
        (
            ["spec", "strategy", "waves"],
            [{"count": 4}, {"count": 2}],
            "spec.strategy.waves[1].count",
            "adds no node",
        ),
    ],
)
def test_webhook_refuses_what_the_schema_cannot_see(
    testbed: Any,
    api: client.CustomObjectsApi,
    admission_operator: OperatorProcess,
    kube_namespace: str,
    path: list[Any],
    value: Any,
    field: str,
    words: str,
) -> None:
    _wait_for_webhook(api, kube_namespace)
    document = _sample("edgerollout-demo.yaml")
    # The simulated fleet has sites; make the fleet every simulated node.
    document["spec"]["fleet"]["selector"] = {"matchLabels": {}}
    node: Any = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    created, message = _create(api, kube_namespace, document)
    assert not created
    assert field in message and words in message, message


# --- generated specs -------------------------------------------------------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=2),
)
_TEMPLATES = st.sampled_from(
    ["{{rollout}}", "{{pod}}", "{{ revision }}", "{{}}", "{{wave", "{{stableRevision}}x"]
)
_CONDITIONS = st.sampled_from(
    ["result < 1", "result <", "stable * 2 > result", "import os", "result ** 2 < 1", "x < 1"]
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    name = draw(st.sampled_from(["edgerollout-demo.yaml", "slmmodel-demo.yaml"]))
    document = copy.deepcopy(_sample(name))
    spec_paths = [p for p in _paths(document["spec"])]
    touched: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(spec_paths))
        parent: Any = document["spec"]
        try:
            for key in path[:-1]:
                parent = parent[key]
            leaf = path[-1]
            parent[leaf]  # the path may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        kind = draw(st.sampled_from(["junk", "delete", "template", "condition"]))
        if kind == "delete" and isinstance(parent, dict):
            del parent[leaf]
        elif kind == "template" and leaf == "query":
            parent[leaf] = draw(_TEMPLATES)
        elif kind == "condition" and leaf in ("successCondition", "failureCondition"):
            parent[leaf] = draw(_CONDITIONS)
        else:
            parent[leaf] = draw(_JUNK)
        touched.append(("spec", *path))
    return document, touched


def _names_a_touched_field(message: str, touched: list[tuple[Any, ...]]) -> bool:
    for path in touched:
        for depth in range(len(path), 0, -1):
            key = path[depth - 1]
            if isinstance(key, str) and key in message:
                return True
    return "spec" in message


def test_generated_malformed_specs_are_refused_by_field_or_handled(
    testbed: Any,
    api: client.CustomObjectsApi,
    admission_operator: OperatorProcess,
    kube_namespace: str,
) -> None:
    _wait_for_webhook(api, kube_namespace)
    accepted: list[tuple[str, str]] = []
    refused = 0

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(_mutated())
    def send(case: tuple[dict[str, Any], list[tuple[Any, ...]]]) -> None:
        nonlocal refused
        document, touched = case
        document["metadata"] = {"name": f"gen-{uuid.uuid4().hex[:10]}"}
        created, message = _create(api, kube_namespace, document)
        if created:
            accepted.append((document["kind"], document["metadata"]["name"]))
            return
        refused += 1
        assert _names_a_touched_field(message, touched), (touched, message)

    send()
    print(f"generated specs: {refused} refused, {len(accepted)} accepted")
    assert refused > 0 and accepted, (refused, len(accepted))
    # Every accepted object gets a status from the operator, which must stay alive and
    # settle: a handler that crashes or loops shows up as a missing or churning status.
    deadline = time.monotonic() + 90
    pending = set(accepted)
    while pending and time.monotonic() < deadline:
        for kind, name in sorted(pending):
            plural = {"SLMModel": "slmmodels", "EdgeRollout": "edgerollouts"}[kind]
            obj = api.get_namespaced_custom_object(GROUP, VERSION, kube_namespace, plural, name)
            status = obj.get("status") or {}
            if status.get("observedGeneration") == obj["metadata"]["generation"]:
                pending.discard((kind, name))
        time.sleep(1)
    assert not pending, (
        f"no status for {sorted(pending)[:5]}; log: {admission_operator.logs()[-3000:]}"
    )
    assert admission_operator.process is not None and admission_operator.process.poll() is None
    versions = {
        name: api.get_namespaced_custom_object(
            GROUP,
            VERSION,
            kube_namespace,
            {"SLMModel": "slmmodels"}.get(kind, "edgerollouts"),
            name,
        )["metadata"]["resourceVersion"]
        for kind, name in accepted
    }
    time.sleep(5)
    churning = [
        name
        for kind, name in accepted
        if api.get_namespaced_custom_object(
            GROUP,
            VERSION,
            kube_namespace,
            {"SLMModel": "slmmodels"}.get(kind, "edgerollouts"),
            name,
        )["metadata"]["resourceVersion"]
        != versions[name]
    ]
    # A few objects may legitimately still be moving (a timer's first pass); a handler in a
    # write loop would touch nearly all of them in five seconds.
    assert len(churning) <= max(2, len(accepted) // 5), churning
