"""The testbed against the real thing: real apiserver/scheduler/controllers, Prometheus,
registry, and the simulator playing the kubelet with real local processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from slmops.testbed.simulator.profiles import HARDWARE_CLASS_LABEL, PROFILES
from slmops.testbed.testbed import Testbed, prometheus_query

pytestmark = pytest.mark.integration

RUNTIME_IMAGE = "ghcr.io/slmops/slmops-runtime:0.1.0"
BUILDER_IMAGE = "ghcr.io/slmops/slmops-builder:0.1.0"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def get_json(testbed: Testbed, *args: str) -> Any:
    return json.loads(testbed.kubectl("get", *args, "-o", "json").stdout)


def apply(testbed: Testbed, manifest: dict[str, Any]) -> None:
    testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def node_ready(node: dict[str, Any]) -> str:
    for condition in node["status"].get("conditions", []):
        if condition["type"] == "Ready":
            return str(condition["status"])
    return "missing"


def pods(testbed: Testbed, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(testbed, "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return items


def job(name: str, namespace: str, script: str, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": BUILDER_IMAGE, "command": ["sh", "-c", script]}
                    ],
                    **pod_spec,
                }
            },
        },
    }


def job_condition(testbed: Testbed, namespace: str, name: str) -> str | None:
    for condition in get_json(testbed, "job", name, "-n", namespace)["status"].get(
        "conditions", []
    ):
        if condition["status"] == "True":
            return str(condition["type"])
    return None


def test_nodes_are_ready_with_their_hardware_labels(testbed: Testbed) -> None:
    nodes = wait_for(
        lambda: [
            n
            for n in get_json(testbed, "nodes")["items"]
            if node_ready(n) == "True" and not n["spec"].get("taints")
        ],
        "simulated nodes Ready without the not-ready taint",
    )
    by_class: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        by_class.setdefault(node["metadata"]["labels"][HARDWARE_CLASS_LABEL], []).append(node)
    assert set(by_class) == set(PROFILES)
    assert all(len(members) == 2 for members in by_class.values())

    jetson = by_class["jetson-orin"][0]
    labels = jetson["metadata"]["labels"]
    assert labels["kubernetes.io/arch"] == "arm64"
    assert labels["kubernetes.io/hostname"] == jetson["metadata"]["name"]
    assert labels["nvidia.com/gpu.present"] == "true"
    assert int(labels["nvidia.com/gpu.memory"]) > 0
    assert jetson["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert "topology.kubernetes.io/zone" in labels
    assert "slmops.io/site" in labels

    rpi = by_class["rpi5"][0]
    assert rpi["metadata"]["labels"]["feature.node.kubernetes.io/cpu-cpuid.ASIMDDP"] == "true"
    assert rpi["status"]["capacity"]["memory"] == "8Gi"  # 8192Mi, canonicalised
    assert rpi["status"]["allocatable"]["cpu"] == "3750m"

    vnni = by_class["x86-vnni"][0]["metadata"]["labels"]
    assert vnni["feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI"] == "true"
    assert vnni["kubernetes.io/arch"] == "amd64"
    avx2 = by_class["x86-avx2"][0]["metadata"]["labels"]
    assert avx2["feature.node.kubernetes.io/cpu-cpuid.AVX2"] == "true"
    assert "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI" not in avx2

    lease = get_json(testbed, "lease", "-n", "kube-node-lease", jetson["metadata"]["name"])
    assert lease["spec"]["holderIdentity"] == jetson["metadata"]["name"]


def metrics_deployment(namespace: str, name: str, hardware_class: str) -> dict[str, Any]:
    # A real HTTP metrics server as the pod's process, bound to the pod's own IP.
    script = (
        "import os, time\n"
        "from prometheus_client import Counter, start_http_server\n"
        "ticks = Counter('testbed_ticks', 'ticks of the test process')\n"
        "start_http_server(int(os.environ['PORT']), addr=os.environ['POD_IP'])\n"
        "print('serving on', os.environ['POD_IP'], flush=True)\n"
        "while True:\n"
        "    ticks.inc()\n"
        "    time.sleep(0.2)\n"
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, "slmops.io/revision": "r1"},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "9100",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "nodeSelector": {HARDWARE_CLASS_LABEL: hardware_class},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "server",
                            "image": RUNTIME_IMAGE,
                            "command": ["python", "-c", script],
                            "ports": [{"name": "metrics", "containerPort": 9100}],
                            "env": [
                                {"name": "PORT", "value": "9100"},
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/metrics", "port": "metrics"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def test_scheduler_places_deployment_on_matching_nodes_and_prometheus_scrapes_it(
    testbed: Testbed, kube_namespace: str
) -> None:
    apply(testbed, metrics_deployment(kube_namespace, "metrics", "x86-avx2"))

    def all_ready() -> list[dict[str, Any]] | None:
        found = pods(testbed, kube_namespace, "app=metrics")
        ready = [
            p
            for p in found
            if p["status"].get("phase") == "Running"
            and all(c["ready"] for c in p["status"].get("containerStatuses", []))
        ]
        return found if len(found) == 3 and len(ready) == 3 else None

    running = wait_for(all_ready, "3 Running+Ready pods")
    avx2_nodes = set(testbed.simulator.node_names("x86-avx2"))
    assert {p["spec"]["nodeName"] for p in running} <= avx2_nodes
    ips = {p["status"]["podIP"] for p in running}
    assert len(ips) == 3 and all(ip.startswith("127.") for ip in ips)
    assert all(p["status"]["hostIP"].startswith("127.") for p in running)

    def scraped() -> list[Any]:
        result = prometheus_query(
            testbed.prometheus_url,
            f'testbed_ticks_total{{namespace="{kube_namespace}", slmops_io_revision="r1"}}',
        )
        return result if len(result) == 3 else []

    samples = wait_for(scraped, "Prometheus to scrape all 3 pods", timeout=60)
    assert {s["metric"]["pod"] for s in samples} == {p["metadata"]["name"] for p in running}
    assert {s["metric"]["node"] for s in samples} <= avx2_nodes
    assert all(float(s["value"][1]) > 0 for s in samples)


def test_jobs_complete_or_fail_through_the_real_job_controller(
    testbed: Testbed, kube_namespace: str
) -> None:
    succeeds = job("succeeds", kube_namespace, "echo result: $(RESULT) > /dev/termination-log")
    succeeds["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "RESULT", "value": "42"}
    ]
    apply(testbed, succeeds)
    apply(testbed, job("fails", kube_namespace, "echo broken >&2; exit 3"))
    assert (
        wait_for(
            lambda: job_condition(testbed, kube_namespace, "succeeds"), "job succeeds to finish"
        )
        == "Complete"
    )
    assert (
        wait_for(lambda: job_condition(testbed, kube_namespace, "fails"), "job fails to finish")
        == "Failed"
    )

    succeeded = pods(testbed, kube_namespace, "job-name=succeeds")[0]
    terminated = succeeded["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    # $(RESULT) expanded like the kubelet does, the termination-log path rewritten.
    assert terminated["message"] == "result: 42\n"
    failed = pods(testbed, kube_namespace, "job-name=fails")[0]
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    log_file = testbed.pod_logs_dir / f"{kube_namespace}_{failed['metadata']['name']}_main.log"
    assert "broken" in log_file.read_text()


def test_pod_env_volumes_and_termination_message(testbed: Testbed, kube_namespace: str) -> None:
    testbed.kubectl(
        "-n", kube_namespace, "create", "secret", "generic", "creds", "--from-literal=token=s3cr3t"
    )
    testbed.kubectl(
        "-n", kube_namespace, "create", "configmap", "settings", "--from-literal=mode=fast"
    )
    script = (
        "set -e; "
        'echo "$TOKEN $MODE $GREETING $NODE $APP" > /results/env.txt; '
        "cat /etc/creds/token >> /results/env.txt; "
        "echo shared > /cache/marker; "
        'echo "ok $0" > /dev/termination-log'
    )
    manifest = job("env", kube_namespace, script)
    pod_spec = manifest["spec"]["template"]["spec"]
    manifest["spec"]["template"]["metadata"] = {"labels": {"app": "envcheck"}}
    pod_spec["nodeSelector"] = {HARDWARE_CLASS_LABEL: "jetson-orin"}
    container = pod_spec["containers"][0]
    container["command"] = ["sh", "-c", script, "/results/$(APP)"]
    container["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "GREETING", "value": "hello-$(MODE)"},
    ]
    container["volumeMounts"] = [
        {"name": "results", "mountPath": "/results"},
        {"name": "creds", "mountPath": "/etc/creds"},
        {"name": "cache", "mountPath": "/cache"},
    ]
    pod_spec["volumes"] = [
        {"name": "results", "emptyDir": {}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "cache", "hostPath": {"path": "/var/cache/slmops", "type": "DirectoryOrCreate"}},
    ]
    apply(testbed, manifest)
    assert wait_for(lambda: job_condition(testbed, kube_namespace, "env"), "job env") == (
        "Complete"
    )
    pod = pods(testbed, kube_namespace, "job-name=env")[0]
    node = pod["spec"]["nodeName"]
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    results_dir = message.split()[1].rsplit("/", 1)[0]
    assert message.startswith("ok ") and message.strip().endswith("/envcheck")
    assert results_dir.startswith(str(testbed.state_dir))
    env_lines = (testbed.state_dir / results_dir / "env.txt").read_text().splitlines()
    assert env_lines == [f"s3cr3t fast hello-fast {node} envcheck", "s3cr3t"]
    marker = testbed.state_dir / "nodes" / node / "hostpath" / "var/cache/slmops" / "marker"
    assert marker.read_text() == "shared\n"


def long_running_pod(namespace: str, name: str, node_class: str, restart: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 3,
            "nodeSelector": {HARDWARE_CLASS_LABEL: node_class},
            "containers": [
                {
                    "name": "main",
                    "image": RUNTIME_IMAGE,
                    "command": ["python", "-c", "import time\nwhile True: time.sleep(0.1)"],
                }
            ],
        },
    }


def simulator_pod(testbed: Testbed, namespace: str, name: str) -> dict[str, Any] | None:
    for entry in testbed.simulator.pods():
        if entry["namespace"] == namespace and entry["name"] == name:
            return entry
    return None


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        # Gone before the open, or reaped between the open and the read.
        return None


def test_killed_process_restarts_and_deleted_pod_stops_its_process(
    testbed: Testbed, kube_namespace: str
) -> None:
    apply(testbed, long_running_pod(kube_namespace, "crashy", "rpi5", "Always"))

    def pid() -> int | None:
        entry = simulator_pod(testbed, kube_namespace, "crashy")
        return entry["containers"][0]["pid"] if entry else None

    first_pid = wait_for(pid, "the pod's process")
    testbed.simulator.kill_pod_process(kube_namespace, "crashy")

    def restarted() -> bool:
        status = get_json(testbed, "pod", "crashy", "-n", kube_namespace)["status"]
        container = status["containerStatuses"][0]
        return container["restartCount"] == 1 and "running" in container["state"]

    wait_for(restarted, "restartCount 1 and running again", timeout=30)
    last = get_json(testbed, "pod", "crashy", "-n", kube_namespace)["status"]["containerStatuses"][
        0
    ]["lastState"]["terminated"]
    assert last["exitCode"] == 137  # SIGKILL
    second_pid = wait_for(pid, "the restarted process")
    assert second_pid != first_pid
    assert process_state(first_pid) is None

    testbed.kubectl("-n", kube_namespace, "delete", "pod", "crashy", "--wait=true", "--timeout=30s")
    assert process_state(second_pid) in (None, "Z")
    assert simulator_pod(testbed, kube_namespace, "crashy") is None


def test_node_offline_goes_not_ready_through_node_lifecycle_controller_and_back(
    testbed: Testbed, kube_namespace: str
) -> None:
    node_name = testbed.simulator.node_names("x86-vnni")[0]
    pod = long_running_pod(kube_namespace, "frozen", "x86-vnni", "Always")
    pod["spec"]["nodeName"] = node_name
    apply(testbed, pod)
    pid = wait_for(
        lambda: (simulator_pod(testbed, kube_namespace, "frozen") or {"containers": [{}]})[
            "containers"
        ][0].get("pid"),
        "the pod's process",
    )

    def ready() -> str:
        return node_ready(get_json(testbed, "node", node_name))

    testbed.simulator.take_offline(node_name)
    try:
        # Frozen with SIGSTOP, as a hung machine; a busy CPU may take a moment to deliver it.
        wait_for(lambda: process_state(pid) == "T", "the pod's process stopped", timeout=10)
        wait_for(lambda: ready() == "Unknown", "node NotReady (Unknown)", timeout=60)
        taints = get_json(testbed, "node", node_name)["spec"].get("taints", [])
        assert any(t["key"] == "node.kubernetes.io/unreachable" for t in taints)
    finally:
        testbed.simulator.bring_online(node_name)
    wait_for(lambda: ready() == "True", "node Ready again", timeout=30)
    wait_for(
        lambda: not get_json(testbed, "node", node_name)["spec"].get("taints"),
        "unreachable taint lifted",
        timeout=30,
    )
    assert process_state(pid) in ("S", "R")


def test_slowed_node_runs_its_processes_slower(testbed: Testbed, kube_namespace: str) -> None:
    # A busy loop reports how many iterations it manages per half second.
    script = (
        "import time\n"
        "while True:\n"
        "    end = time.monotonic() + 0.5; n = 0\n"
        "    while time.monotonic() < end: n += 1\n"
        "    print(n, flush=True)\n"
    )
    pod = long_running_pod(kube_namespace, "busy", "x86-vnni", "Always")
    node_name = testbed.simulator.node_names("x86-vnni")[1]
    pod["spec"]["nodeName"] = node_name
    pod["spec"]["containers"][0]["command"] = ["python", "-c", script]
    apply(testbed, pod)
    log_file = testbed.pod_logs_dir / f"{kube_namespace}_busy_main.log"

    def rates(count: int) -> list[int]:
        if not log_file.exists():
            return []
        lines = [line for line in log_file.read_text().splitlines() if line.isdigit()]
        return [int(line) for line in lines[-count:]] if len(lines) >= count else []

    wait_for(lambda: rates(4), "the busy loop to report", timeout=30)
    time.sleep(1.5)
    before = sum(rates(3)) / 3
    testbed.simulator.slow_down(node_name, 4)
    try:
        time.sleep(1.2)
        baseline = len(log_file.read_text().splitlines())
        wait_for(
            lambda: len(log_file.read_text().splitlines()) >= baseline + 3,
            "3 slowed reports",
            timeout=30,
        )
        slowed = sum(rates(3)) / 3
    finally:
        testbed.simulator.slow_down(node_name, 1)
    assert slowed < before / 2, (before, slowed)


def test_prometheus_can_be_stopped_and_started_again(testbed: Testbed) -> None:
    testbed.stop_prometheus()
    try:
        with pytest.raises(OSError):
            prometheus_query(testbed.prometheus_url, "up")
    finally:
        testbed.start_prometheus()
    assert isinstance(prometheus_query(testbed.prometheus_url, "up"), list)


def test_init_container_then_node_power_loss_restarts_the_process(
    testbed: Testbed, kube_namespace: str
) -> None:
    node_name = testbed.simulator.node_names("jetson-orin")[1]
    pod = long_running_pod(kube_namespace, "staged", "jetson-orin", "Always")
    pod["spec"]["nodeName"] = node_name
    pod["spec"]["volumes"] = [{"name": "work", "emptyDir": {}}]
    pod["spec"]["initContainers"] = [
        {
            "name": "fetch",
            "image": BUILDER_IMAGE,
            "command": ["sh", "-c", "echo fetched > /work/model.txt"],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        }
    ]
    main = pod["spec"]["containers"][0]
    main["command"] = ["sh", "-c", "cat /work/model.txt; exec sleep 600"]
    main["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    apply(testbed, pod)

    def main_pid() -> int | None:
        entry = simulator_pod(testbed, kube_namespace, "staged")
        return entry["containers"][1]["pid"] if entry else None

    first = wait_for(main_pid, "the main container's process")
    status = get_json(testbed, "pod", "staged", "-n", kube_namespace)["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    log_file = testbed.pod_logs_dir / f"{kube_namespace}_staged_main.log"
    wait_for(lambda: "fetched" in log_file.read_text(), "main to read the init output")

    testbed.simulator.take_offline(node_name, kill_processes=True)
    try:
        wait_for(lambda: process_state(first) in (None, "Z"), "the process to die with the node")
    finally:
        testbed.simulator.bring_online(node_name)

    def restarted() -> bool:
        container = get_json(testbed, "pod", "staged", "-n", kube_namespace)["status"][
            "containerStatuses"
        ][0]
        return container["restartCount"] >= 1 and "running" in container["state"]

    wait_for(restarted, "the container to restart after power returns", timeout=30)
    assert main_pid() not in (None, first)


def test_operator_identity_is_audited_alone(testbed: Testbed, kube_namespace: str) -> None:
    marker = f"audited-{time.monotonic_ns()}"
    testbed.kubectl(
        f"--kubeconfig={testbed.operator_kubeconfig}", "-n", kube_namespace,
        "create", "configmap", marker,
    )  # fmt: skip
    testbed.kubectl("-n", kube_namespace, "get", "configmap", marker)

    def audited() -> list[dict[str, Any]]:
        lines = testbed.audit_log.read_text().splitlines()
        return [e for e in map(json.loads, lines) if marker in json.dumps(e)]

    events = wait_for(audited, "the operator user's create in the audit log", 10)
    # The admin's own `get` of the same object is not audited: only the operator is counted.
    assert [(e["verb"], e["user"]["username"]) for e in events] == [("create", "slmops-operator")]


def test_apiserver_stopped_and_started_keeps_the_cluster(
    testbed: Testbed, kube_namespace: str
) -> None:
    testbed.kubectl("-n", kube_namespace, "create", "configmap", "survives")
    testbed.stop_apiserver()
    try:
        down = testbed.kubectl("-n", kube_namespace, "get", "configmap", "survives", check=False)
        assert down.returncode != 0
    finally:
        testbed.start_apiserver()
    testbed.kubectl("-n", kube_namespace, "get", "configmap", "survives")
    # The simulator's nodes keep (or regain) their Ready heartbeat through the restart.
    wait_for(
        lambda: all(node_ready(n) == "True" for n in get_json(testbed, "nodes")["items"]),
        "every node Ready after the restart",
        60,
    )
