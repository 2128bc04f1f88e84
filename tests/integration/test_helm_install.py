"""`helm install` onto the testbed's real apiserver, then the operator's RBAC as a matrix.

`kubectl auth can-i --as=system:serviceaccount:NS:SA` asks the real RBAC authorizer what the
chart's ServiceAccount may do: everything the operator needs must be allowed, and the things
it must never do (read Secrets, create pods, change nodes, touch RBAC, other namespaces in
namespaced mode, ...) must be refused. Then the real operator runs with that ServiceAccount's
token and reconciles the samples without a single refusal.

The chart's operator pod is kept from being scheduled (a node selector no node has): the
testbed's simulator would otherwise run it as a second operator, with the testbed's admin
kubeconfig, beside the one other tests use. This test is about the objects and the RBAC.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from slmops.testbed.chart import ChartPaths, repository_root, run_helm
from slmops.testbed.helm import ensure_helm
from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration

PATHS = ChartPaths(repository_root())
UNSCHEDULABLE = {"operator": {"nodeSelector": {"slmops.io/helm-test-no-such-node": "true"}}}

SLM = "slmmodels.slmops.io"
ROLLOUTS = "edgerollouts.slmops.io"
POLICIES = "networkpolicies.networking.k8s.io"
CRDS = "customresourcedefinitions.apiextensions.k8s.io"


@dataclass(frozen=True)
class Check:
    verb: str
    resource: str
    subresource: str | None = None

    def __str__(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {self.resource}{sub}"


def checks(spec: str) -> list[Check]:
    """'verb1,verb2 resource[/sub]' lines -> Checks."""
    result = []
    for line in spec.strip().splitlines():
        verbs, target = line.split()
        resource, _, subresource = target.partition("/")
        result += [Check(verb, resource, subresource or None) for verb in verbs.split(",")]
    return result


# In every namespace the operator works in.
NAMESPACED_ALLOWED = checks(f"""
get,list,watch,patch {SLM}
get,list,watch,patch {ROLLOUTS}
get,patch {SLM}/status
get,patch {ROLLOUTS}/status
update {SLM}/finalizers
update {ROLLOUTS}/finalizers
create,get,list,watch,delete jobs.batch
get,list,watch pods
get pods/log
create,get,list,watch,patch,update,delete daemonsets.apps
create,get,list,watch,patch,update,delete services
create,get,list,watch,patch,delete {POLICIES}
create events
""")
NAMESPACED_DENIED = checks(f"""
get,list,watch,create secrets
create,delete,patch,update pods
create pods/exec
create pods/eviction
create,update,delete,deletecollection {SLM}
create,update,delete,deletecollection {ROLLOUTS}
update {ROLLOUTS}/status
patch,update,deletecollection jobs.batch
deletecollection daemonsets.apps
create,patch deployments.apps
create,patch statefulsets.apps
create,get,patch configmaps
update,deletecollection {POLICIES}
create,get,update leases.coordination.k8s.io
create serviceaccounts
create serviceaccounts/token
create,bind roles.rbac.authorization.k8s.io
create rolebindings.rbac.authorization.k8s.io
patch,delete events
""")
CLUSTER_ALLOWED = checks(f"""
get,list,watch nodes
list,watch {CRDS}
""")
CLUSTER_DENIED = checks(f"""
create,patch,update,delete nodes
patch,update nodes/status
create,update,patch,delete {CRDS}
create,update,bind,escalate clusterroles.rbac.authorization.k8s.io
create,update clusterrolebindings.rbac.authorization.k8s.io
create,delete namespaces
impersonate users
impersonate serviceaccounts
create validatingwebhookconfigurations.admissionregistration.k8s.io
create mutatingwebhookconfigurations.admissionregistration.k8s.io
create certificatesigningrequests.certificates.k8s.io
get,list,watch persistentvolumes
""")
WILDCARD = Check("*", "*")


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


def helm(testbed: Testbed, *args: str) -> str:
    return run_helm([str(ensure_helm()), f"--kubeconfig={testbed.kubeconfig}", *args])


def create_namespaces(testbed: Testbed, *names: str) -> None:
    for name in names:
        testbed.kubectl("create", "namespace", name)


def install(
    testbed: Testbed, tmp_dir: Path, values: dict[str, Any], *, schedulable: bool = False
) -> Release:
    suffix = uuid.uuid4().hex[:6]
    # A release name containing the chart name is the full name: slmops-<suffix>.
    release = Release(name=f"slmops-{suffix}", namespace=f"slmops-{suffix}-system")
    values_file = tmp_dir / f"values-{suffix}.yaml"
    if not schedulable:
        operator = {**values.get("operator", {}), **UNSCHEDULABLE["operator"]}
        values = {**values, "operator": operator}
    values_file.write_text(yaml.safe_dump(values))
    helm(
        testbed,
        "install",
        release.name,
        str(PATHS.chart),
        f"--namespace={release.namespace}",
        "--create-namespace",
        f"--values={values_file}",
    )
    return release


def uninstall(testbed: Testbed, release: Release, *namespaces: str) -> None:
    helm(testbed, "uninstall", release.name, f"--namespace={release.namespace}")
    for namespace in (release.namespace, *namespaces):
        testbed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def can_i(testbed: Testbed, user: str, check: Check, namespace: str | None) -> bool:
    argv = ["auth", "can-i", check.verb, check.resource, f"--as={user}"]
    if check.subresource:
        argv.append(f"--subresource={check.subresource}")
    if namespace:
        argv.append(f"--namespace={namespace}")
    result = testbed.kubectl(*argv, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(argv)}: {result.stderr.strip()}"
    return answer == "yes"


def answers(
    testbed: Testbed, user: str, matrix: Sequence[Check], namespace: str | None
) -> dict[str, bool]:
    # Each answer is one SubjectAccessReview; a few at once keep the matrix quick.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda c: can_i(testbed, user, c, namespace), matrix)
        return {str(check): allowed for check, allowed in zip(matrix, results, strict=True)}


def assert_matrix(
    testbed: Testbed,
    user: str,
    namespace: str | None,
    allowed: Sequence[Check],
    denied: Sequence[Check],
) -> None:
    got = answers(testbed, user, [*allowed, *denied], namespace)
    where = f"in {namespace}" if namespace else "cluster-wide"
    missing = [c for c in map(str, allowed) if not got[c]]
    excess = [c for c in map(str, denied) if got[c]]
    assert not (missing or excess), f"{user} {where}: lacks {missing}; must not have {excess}"


@pytest.fixture(scope="module")
def cluster_release(
    testbed: Testbed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    release = install(testbed, tmp_path_factory.mktemp("helm"), {})
    try:
        yield release
    finally:
        uninstall(testbed, release)


def test_install_creates_the_operator_objects(testbed: Testbed, cluster_release: Release) -> None:
    name, namespace = cluster_release.name, cluster_release.namespace
    status = helm(testbed, "status", name, f"--namespace={namespace}")
    assert "STATUS: deployed" in status
    deployment = yaml.safe_load(
        testbed.kubectl("-n", namespace, "get", "deployment", name, "-o", "yaml").stdout
    )
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name
    for kind in ("serviceaccount", "configmap"):
        assert testbed.kubectl("-n", namespace, "get", kind, "-o", "name").stdout.strip(), kind
    for role in ("kopf", "kopf-cluster", "handlers", "handlers-cluster", "view", "edit"):
        testbed.kubectl("get", "clusterrole", f"{name}-{role}")
    # Helm installed (or kept) the CRDs from the chart's crds/.
    for crd in (SLM, ROLLOUTS):
        testbed.kubectl("get", "crd", crd)


def test_cluster_wide_operator_may_do_what_it_needs_and_nothing_else(
    testbed: Testbed, cluster_release: Release, kube_namespace: str
) -> None:
    user = cluster_release.service_account
    # Any namespace: the operator watches all of them.
    assert_matrix(testbed, user, kube_namespace, NAMESPACED_ALLOWED, NAMESPACED_DENIED)
    # kopf looks at namespaces only in namespaced mode.
    cluster_denied = [*CLUSTER_DENIED, *checks("list,watch namespaces")]
    assert_matrix(testbed, user, None, CLUSTER_ALLOWED, cluster_denied)
    assert not can_i(testbed, user, WILDCARD, kube_namespace)
    assert not can_i(testbed, user, WILDCARD, None)


def test_namespaced_operator_is_confined_to_its_namespaces(
    testbed: Testbed, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    watched = [f"team-a-{suffix}", f"team-b-{suffix}"]
    elsewhere = f"team-c-{suffix}"
    create_namespaces(testbed, *watched, elsewhere)
    release = install(testbed, tmp_path, {"watchNamespaces": watched})
    try:
        user = release.service_account
        # The whole matrix in one watched namespace; the Roles of the others are the same
        # template, so what is allowed there is enough. The cluster-wide denials were proven
        # in cluster mode; only the cluster rules that differ are asked again.
        assert_matrix(testbed, user, watched[0], NAMESPACED_ALLOWED, NAMESPACED_DENIED)
        assert_matrix(testbed, user, watched[1], NAMESPACED_ALLOWED, [])
        # Nothing of the namespaced work is allowed anywhere else.
        assert_matrix(testbed, user, elsewhere, [], NAMESPACED_ALLOWED)
        cluster_allowed = [*CLUSTER_ALLOWED, *checks("list,watch namespaces")]
        assert_matrix(testbed, user, None, cluster_allowed, checks("delete namespaces"))
        assert not can_i(testbed, user, WILDCARD, watched[0])
        deployment = yaml.safe_load(
            testbed.kubectl(
                "-n", release.namespace, "get", "deployment", release.name, "-o", "yaml"
            ).stdout
        )
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert [a for a in args if a.startswith("--namespace=")] == [
            f"--namespace={n}" for n in watched
        ]
    finally:
        uninstall(testbed, release, *watched, elsewhere)


def test_people_with_view_or_edit_get_the_two_kinds_through_aggregation(
    testbed: Testbed, cluster_release: Release, kube_namespace: str
) -> None:
    reader, editor = f"reader-{uuid.uuid4().hex[:6]}", f"editor-{uuid.uuid4().hex[:6]}"
    testbed.kubectl(
        "-n",
        kube_namespace,
        "create",
        "rolebinding",
        "reader",
        "--clusterrole=view",
        f"--user={reader}",
    )
    testbed.kubectl(
        "-n",
        kube_namespace,
        "create",
        "rolebinding",
        "editor",
        "--clusterrole=edit",
        f"--user={editor}",
    )
    list_rollouts = Check("list", ROLLOUTS)
    patch_rollouts = Check("patch", ROLLOUTS)
    # The controller-manager's aggregation controller folds our roles in asynchronously.
    deadline = time.monotonic() + 30
    while not (
        can_i(testbed, reader, list_rollouts, kube_namespace)
        and can_i(testbed, editor, patch_rollouts, kube_namespace)
    ):
        assert time.monotonic() < deadline, "view/edit never aggregated the slmops roles"
        time.sleep(0.5)
    assert_matrix(
        testbed,
        reader,
        kube_namespace,
        checks(f"get,list,watch {SLM}\nget,list,watch {ROLLOUTS}"),
        checks(f"create,patch,delete {SLM}\npatch {ROLLOUTS}"),
    )
    assert_matrix(
        testbed,
        editor,
        kube_namespace,
        checks(f"get,list,create,patch,delete {SLM}\nget,patch,delete {ROLLOUTS}"),
        checks(f"patch {ROLLOUTS}/status"),
    )


def test_install_manifest_is_accepted_by_the_apiserver(testbed: Testbed, tmp_path: Path) -> None:
    # The plain manifest targets slmops-system; moved to a namespace of its own so the
    # server-side dry run cannot collide with a real installation on the same testbed.
    namespace = f"slmops-dry-{uuid.uuid4().hex[:6]}"
    create_namespaces(testbed, namespace)
    try:
        text = PATHS.install_manifest.read_text().replace("slmops-system", namespace)
        manifest = tmp_path / "install.yaml"
        manifest.write_text(text)
        result = testbed.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            f"--filename={manifest}",
        )
        applied = [line for line in result.stdout.splitlines() if line.strip()]
        documents = [d for d in yaml.safe_load_all(text) if d]
        assert len(applied) == len(documents), result.stdout
    finally:
        testbed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_account_kubeconfig(testbed: Testbed, release: Release, path: Path) -> Path:
    """The testbed's kubeconfig with the chart's ServiceAccount token instead of admin's."""
    token = testbed.kubectl(
        "-n", release.namespace, "create", "token", release.name, "--duration=1h"
    ).stdout.strip()
    config = yaml.safe_load(testbed.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def observed_generation(testbed: Testbed, namespace: str, resource: str) -> int | None:
    result = testbed.kubectl(
        "-n",
        namespace,
        "get",
        resource,
        "-o",
        "jsonpath={.status.observedGeneration}",
        check=False,
    )
    return int(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


REFUSALS = ("403", "forbidden", "not enough permissions", "unauthorized")


@contextlib.contextmanager
def operator_as_service_account(
    testbed: Testbed, release: Release, watched: str, directory: Path, env: dict[str, str]
) -> Iterator[Path]:
    """The real operator, watching `watched` with only the chart ServiceAccount's token;
    yields its log file once it is live."""
    port = free_port()
    run = uuid.uuid4().hex[:6]
    log_path = directory / f"operator-{run}.log"
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith("SLMOPS_ADMISSION")
    }
    environ.pop("SLMOPS_METRICS_PORT", None)
    kubeconfig = service_account_kubeconfig(testbed, release, directory / f"kubeconfig-{run}")
    environ.update({**env, "KUBECONFIG": str(kubeconfig)})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slmops.cli",
                "operator",
                f"--namespace={watched}",
                f"--liveness=http://127.0.0.1:{port}/healthz",
            ],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def live() -> bool:
            assert process.poll() is None, f"operator exited: {log_path.read_text()[-3000:]}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_for("the operator to be live", live)
        yield log_path
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def refusals(log_path: Path) -> list[str]:
    log = log_path.read_text(errors="replace")
    return [line for line in log.splitlines() if any(word in line.lower() for word in REFUSALS)]


def test_real_operator_with_the_charts_service_account_reconciles_the_samples(
    testbed: Testbed, tmp_path: Path
) -> None:
    watched = f"team-sa-{uuid.uuid4().hex[:6]}"
    create_namespaces(testbed, watched)
    release = install(testbed, tmp_path, {"watchNamespaces": [watched]})
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(uninstall, testbed, release, watched)
        log_path = cleanup.enter_context(
            operator_as_service_account(testbed, release, watched, tmp_path, {})
        )
        samples = PATHS.root / "manifests" / "samples"
        testbed.kubectl("-n", watched, "apply", "-f", str(samples / "slmmodel-demo.yaml"))
        testbed.kubectl("-n", watched, "apply", "-f", str(samples / "edgerollout-demo.yaml"))
        wait_for(
            "both samples to be reconciled",
            lambda: (
                observed_generation(testbed, watched, "slmmodel/demo") == 1
                and observed_generation(testbed, watched, "edgerollout/demo") == 1
            ),
        )
        # The verify Job's creation, its index and the rollout's node reads happen in the
        # first rounds; give them a few seconds to show up in the log if they were refused.
        wait_for(
            "the verify Job",
            lambda: bool(
                testbed.kubectl("-n", watched, "get", "jobs", "-o", "name").stdout.strip()
            ),
        )
        time.sleep(5)
        log = log_path.read_text(errors="replace")
        handled = [
            line for line in log.splitlines() if "kopf.objects" in line and "succeeded" in line
        ]
        assert handled, "the operator never handled the samples"
        refused = refusals(log_path)
        assert not refused, "\n".join(refused[:20])


def publish_two_revisions(testbed: Testbed, namespace: str, model: str) -> None:
    """Play the model controller: two built revisions of every variant, in two registries
    (one on an explicit port, one on the default port of plain HTTP, which the sample model
    speaks: spec.image.insecure). The model is never Ready, so no
    server pod starts: this is about the policy, not about serving."""
    spec = yaml.safe_load(
        testbed.kubectl("-n", namespace, "get", "slmmodel", model, "-o", "yaml").stdout
    )["spec"]
    variants = [variant["name"] for variant in spec["variants"]]
    registries = {"1111111111aa": "127.0.0.1:5000", "2222222222bb": "registry.example.com"}
    revisions = [
        {
            "revision": revision,
            "variants": {
                v: f"{host}/models/{model}-{v}@sha256:{revision[0] * 64}" for v in variants
            },
            "sizes": dict.fromkeys(variants, 1_000_000),
        }
        for revision, host in registries.items()
    ]
    testbed.kubectl(
        "-n", namespace, "patch", "slmmodel", model, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"revisions": revisions}}),
    )  # fmt: skip


def get_policy(testbed: Testbed, namespace: str, name: str) -> dict[str, Any] | None:
    result = testbed.kubectl(
        "-n", namespace, "get", "networkpolicy", name, "-o", "json", check=False
    )
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    policy: dict[str, Any] = json.loads(result.stdout)
    return policy


def rollout_with_port(name: str, port: int) -> str:
    rollout = yaml.safe_load(
        (PATHS.root / "manifests" / "samples" / "edgerollout-demo.yaml").read_text()
    )
    rollout["metadata"]["name"] = name
    rollout["spec"]["serving"]["port"] = port
    return yaml.safe_dump(rollout)


def test_each_rollout_gets_a_network_policy_made_with_the_charts_service_account(
    testbed: Testbed, tmp_path: Path
) -> None:
    # The apiserver accepts the policy the operator renders and it exists for the rollout,
    # made with only the chart's RBAC; switched off, the operator removes its own and only
    # its own. (The testbed has no CNI: nothing here enforces the policy.)
    watched = f"team-np-{uuid.uuid4().hex[:6]}"
    create_namespaces(testbed, watched)
    release = install(testbed, tmp_path, {"watchNamespaces": [watched]})
    only_rollouts = {"SLMOPS_CONTROLLERS": "edgerollout"}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(uninstall, testbed, release, watched)
        samples = PATHS.root / "manifests" / "samples"
        testbed.kubectl("-n", watched, "apply", "-f", str(samples / "slmmodel-demo.yaml"))
        publish_two_revisions(testbed, watched, "demo")
        testbed.kubectl("-n", watched, "apply", "-f", "-", input=rollout_with_port("demo", 8100))
        uid = testbed.kubectl(
            "-n", watched, "get", "edgerollout", "demo", "-o", "jsonpath={.metadata.uid}"
        ).stdout

        with operator_as_service_account(
            testbed, release, watched, tmp_path, {**only_rollouts, "SLMOPS_NETWORK_POLICY": "true"}
        ) as log_path:
            wait_for(
                "the rollout's NetworkPolicy", lambda: bool(get_policy(testbed, watched, "demo"))
            )
            made = get_policy(testbed, watched, "demo")
            assert made is not None
            first_uid = made["metadata"]["uid"]
            # Deleted by hand, it is back within seconds, not at the next operator start.
            testbed.kubectl("-n", watched, "delete", "networkpolicy", "demo")
            wait_for(
                "the deleted NetworkPolicy to be put back",
                lambda: (
                    (get_policy(testbed, watched, "demo") or {}).get("metadata", {}).get("uid")
                    not in (None, first_uid)
                ),
                timeout=45,
            )
            assert not refusals(log_path), "\n".join(refusals(log_path)[:20])
        policy = get_policy(testbed, watched, "demo")
        assert policy is not None
        (owner,) = policy["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("EdgeRollout", uid, True)
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"]["slmops.io/rollout"] == "demo"
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["ingress"] == [{"ports": [{"port": 8100, "protocol": "TCP"}]}]
        egress = [(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]]
        # Both revisions' registries: a rollback pulls from the older one.
        assert sorted(egress) == [("TCP", 53), ("TCP", 80), ("TCP", 5000), ("UDP", 53)]
        assert not [rule for rule in spec["egress"] if "to" in rule]

        # A policy of the user's, named like a second rollout: never the operator's to remove.
        testbed.kubectl(
            "-n", watched, "create", "-f", "-",
            input=json.dumps({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "other"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            }),
        )  # fmt: skip
        testbed.kubectl("-n", watched, "apply", "-f", "-", input=rollout_with_port("other", 8000))
        with operator_as_service_account(
            testbed, release, watched, tmp_path, {**only_rollouts, "SLMOPS_NETWORK_POLICY": "false"}
        ) as log_path:
            wait_for(
                "the operator to remove its policy",
                lambda: not get_policy(testbed, watched, "demo"),
            )
            # The Service is applied after the policy step of a reconcile.
            wait_for(
                "the second rollout to be reconciled",
                lambda: (
                    (
                        testbed.kubectl("-n", watched, "get", "service", "other", check=False)
                    ).returncode
                    == 0
                ),
            )
            assert not refusals(log_path), "\n".join(refusals(log_path)[:20])
        users = get_policy(testbed, watched, "other")
        assert users is not None and "ownerReferences" not in users["metadata"]


def test_the_charts_operator_pod_starts_serves_probes_and_metrics_and_reconciles(
    testbed: Testbed, tmp_path: Path
) -> None:
    # The simulator runs pods of the slmops-operator image as real processes (with the
    # testbed's admin kubeconfig, so RBAC is the other tests' business): this checks the
    # Deployment itself — command, args, env, probes, metrics port — by letting it run.
    # Namespaced, so it handles only its own namespace; free ports, because simulated pods
    # share the machine's network.
    watched = f"team-pod-{uuid.uuid4().hex[:6]}"
    create_namespaces(testbed, watched)
    health_port, metrics_port = free_port(), free_port()
    release = install(
        testbed,
        tmp_path,
        {
            "watchNamespaces": [watched],
            "operator": {"healthPort": health_port, "metricsPort": metrics_port},
        },
        schedulable=True,
    )
    try:

        def ready_pod() -> dict[str, Any] | None:
            pods = yaml.safe_load(
                testbed.kubectl(
                    "-n",
                    release.namespace,
                    "get",
                    "pods",
                    "-o",
                    "yaml",
                    "-l",
                    "app.kubernetes.io/component=operator",
                ).stdout
            )["items"]
            for pod in pods:
                conditions = pod.get("status", {}).get("conditions", [])
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return dict(pod)
            return None

        wait_for(
            "the operator pod to be Ready (readiness probe on /healthz)",
            lambda: bool(ready_pod()),
            90,
        )
        pod = ready_pod()
        assert pod is not None
        pod_ip = pod["status"]["podIP"]
        metrics = httpx.get(f"http://{pod_ip}:{metrics_port}/metrics", timeout=5).text
        assert "slmops_rollout_decisions_total" in metrics

        samples = PATHS.root / "manifests" / "samples"
        testbed.kubectl("-n", watched, "apply", "-f", str(samples / "edgerollout-demo.yaml"))
        log_path = (
            testbed.pod_logs_dir / f"{release.namespace}_{pod['metadata']['name']}_operator.log"
        )

        def handled() -> bool:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            return any("kopf.objects" in line and "succeeded" in line for line in log.splitlines())

        wait_for("the pod's operator to handle the sample rollout", handled, 60)
        wait_for(
            "the rollout's status",
            lambda: observed_generation(testbed, watched, "edgerollout/demo") == 1,
        )
    finally:
        uninstall(testbed, release, watched)
