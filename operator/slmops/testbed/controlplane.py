"""A real Kubernetes 1.20 control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, with token auth and RBAC.

There is no kubelet: the edge-fleet simulator plays it. The controller-manager's node
monitor is tightened (grace period and period are options) so that a node whose heartbeats
stop turns NotReady in ~16 s instead of the default ~40 s, which keeps fault tests short.
"""

from __future__ import annotations

import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from slmops.testbed.prerequisites import Binaries
from slmops.testbed.processes import TestbedError, TrackedProcess, start_process, wait_until

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# A second identity for the operator under test, so that the audit log can attribute requests
# to it alone (the admin token is shared by kubectl, the simulator and the control plane).
OPERATOR_USER = "slmops-operator"
# Only the operator's requests are audited: at 5,000 nodes, auditing every lease renewal
# would cost the apiserver more than the operator does.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}


_CLIENT_RATE = ("--kube-api-qps=100", "--kube-api-burst=200")


@dataclass(frozen=True)
class ControlPlanePorts:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


@dataclass(frozen=True)
class NodeMonitorTiming:
    """How fast the node-lifecycle controller reacts to missing heartbeats."""

    grace_period_seconds: int = 16
    period_seconds: int = 2


def insecure_tls_context() -> ssl.SSLContext:
    # The apiserver serves a self-signed certificate it generated itself; on loopback in a
    # throwaway testbed there is nobody to impersonate it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def kubeconfig_document(server: str, token: str, user: str = "admin") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "slmops-testbed",
                "cluster": {"server": server, "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "slmops-testbed",
                "context": {"cluster": "slmops-testbed", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "slmops-testbed",
    }


class ControlPlane:
    def __init__(
        self,
        state_dir: Path,
        binaries: Binaries,
        ports: ControlPlanePorts,
        token: str,
        node_monitor: NodeMonitorTiming,
        *,
        operator_token: str = "",
    ) -> None:
        self.dir = state_dir / "controlplane"
        self.log_dir = state_dir / "logs"
        self.binaries = binaries
        self.ports = ports
        self.token = token
        self.operator_token = operator_token
        self.node_monitor = node_monitor

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """Cluster-admin like `kubeconfig`, but as its own user, audited."""
        return self.dir / "operator.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """One JSON line per request made with `operator_kubeconfig` (kube-apiserver audit)."""
        return self.log_dir / "kube-apiserver-audit.log"

    def prepare(self) -> None:
        """Fresh data dir, service-account key pair, token file and kubeconfig."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("etcd", "certs", "controller-manager-certs", "scheduler-certs"):
            (self.dir / sub).mkdir(exist_ok=True)
        sa_key = self.dir / "sa.key"
        if not sa_key.exists():
            self._openssl(["genrsa", "-out", str(sa_key), "2048"])
            self._openssl(["rsa", "-in", str(sa_key), "-pubout", "-out", str(self.dir / "sa.pub")])
        tokens = self.dir / "tokens.csv"
        lines = [f"{self.token},admin,admin,system:masters"]
        if self.operator_token:
            lines.append(f"{self.operator_token},{OPERATOR_USER},{OPERATOR_USER},system:masters")
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)
        (self.dir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        for path, token, user in (
            (self.kubeconfig, self.token, "admin"),
            (self.operator_kubeconfig, self.operator_token, OPERATOR_USER),
        ):
            if token:
                document = kubeconfig_document(self.apiserver_url, token, user)
                path.write_text(yaml.safe_dump(document, sort_keys=False))
                path.chmod(0o600)

    def _openssl(self, args: list[str]) -> None:
        result = subprocess.run(
            [self.binaries.openssl, *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise TestbedError(f"openssl {args[0]} failed: {result.stderr.strip()}")

    def start(self) -> list[TrackedProcess]:
        started: list[TrackedProcess] = []
        started.append(self._start_etcd())
        wait_until(self._etcd_healthy, "etcd health", 30, started[-1])
        started.append(self.start_apiserver())
        started.append(self._start_controller_manager())
        started.append(self._start_scheduler())
        wait_until(
            lambda: self._healthz(self.ports.controller_manager),
            "kube-controller-manager /healthz",
            60,
            started[-2],
        )
        wait_until(
            lambda: self._healthz(self.ports.scheduler),
            "kube-scheduler /healthz",
            60,
            started[-1],
        )
        return started

    def _start_etcd(self) -> TrackedProcess:
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return start_process(
            "etcd",
            [
                self.binaries.etcd,
                "--name=testbed",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=testbed={peer}",
            ],
            self.log_dir / "etcd.log",
        )

    def start_apiserver(self) -> TrackedProcess:
        """Start kube-apiserver on the existing etcd and wait until it is ready."""
        process = start_process(
            "kube-apiserver",
            [
                self.binaries.kube_apiserver,
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports.apiserver}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # The 'kubernetes' Service endpoint would point at 127.0.0.1, which Endpoints
                # validation rejects on every reconcile; nothing in the testbed needs it.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                # Written synchronously so that a benchmark reading the log right after an
                # action sees every request of it.
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
            ],
            self.log_dir / "kube-apiserver.log",
        )
        wait_until(self.apiserver_ready, "kube-apiserver /readyz", 90, process)
        return process

    def _start_controller_manager(self) -> TrackedProcess:
        return start_process(
            "kube-controller-manager",
            [
                self.binaries.kube_controller_manager,
                f"--kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={self.dir / 'sa.key'}",
                # No endpoint controller: simulated pods have loopback IPs, which Endpoints
                # validation rejects, so every pod change behind a Service cost a failed
                # update and a Warning event, retried, for nothing (at 1,000 nodes about as
                # many requests as the pods themselves). EndpointSlices still follow pods.
                "--controllers=*,-nodeipam,-endpoint",
                # Client rate limits above the defaults (20/s, burst 30): the DaemonSet
                # controller spends them on pod creates, their events and status updates; with
                # the defaults it created about 3 pods/s for rollouts over 1,000 nodes.
                *_CLIENT_RATE,
                "--leader-elect=false",
                "--port=0",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.controller_manager}",
                f"--cert-dir={self.dir / 'controller-manager-certs'}",
                f"--node-monitor-grace-period={self.node_monitor.grace_period_seconds}s",
                f"--node-monitor-period={self.node_monitor.period_seconds}s",
                "--profiling=false",
            ],
            self.log_dir / "kube-controller-manager.log",
        )

    def _start_scheduler(self) -> TrackedProcess:
        return start_process(
            "kube-scheduler",
            [
                self.binaries.kube_scheduler,
                f"--kubeconfig={self.kubeconfig}",
                *_CLIENT_RATE,
                "--leader-elect=false",
                "--port=0",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.scheduler}",
                f"--cert-dir={self.dir / 'scheduler-certs'}",
                "--profiling=false",
            ],
            self.log_dir / "kube-scheduler.log",
        )

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports.etcd_client}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return b'"health":"true"' in response.read()

    def apiserver_ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.apiserver_url}/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=2, context=insecure_tls_context()) as resp:
            return bool(resp.status == 200)

    def _healthz(self, port: int) -> bool:
        url = f"https://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=insecure_tls_context()) as resp:
            return bool(resp.status == 200)
