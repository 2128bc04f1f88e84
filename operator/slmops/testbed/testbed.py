"""The whole testbed: control plane, Prometheus, registry and the edge-fleet simulator,
composed in one state directory and remembered in `testbed.json` there.

Layout of a state directory:
  testbed.json            ports, token, registry credentials, tracked PIDs
  controlplane/           etcd data, certs, tokens.csv, kubeconfig
  prometheus/             prometheus.yml, TSDB, targets/pods.json (file_sd, by the simulator)
  registry/               config.yml, htpasswd, storage/
  simulator/              config.json, pods.json (PIDs of pod processes)
  nodes/<node>/           hostPath volumes of that simulated node
  pods/<ns>_<pod>/        emptyDir/secret/configMap volumes, termination-log files
  logs/                   one log per component; logs/pods/<ns>_<pod>_<container>.log
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmops.testbed.controlplane import ControlPlane, ControlPlanePorts, NodeMonitorTiming
from slmops.testbed.prerequisites import Binaries, ensure_prerequisites
from slmops.testbed.processes import (
    TestbedError,
    TrackedProcess,
    free_port,
    is_alive,
    listening_ports,
    require_free_port,
    start_process,
    stop_process,
    wait_until,
)
from slmops.testbed.prometheus import Prometheus
from slmops.testbed.registry import Registry, RegistryAccess
from slmops.testbed.simulator.client import SimulatorClient
from slmops.testbed.simulator.config import SimulatorConfig
from slmops.testbed.simulator.profiles import DEFAULT_ALLOWED_IMAGE_REPOSITORIES, PROFILES

STATE_FILE = "testbed.json"
STATE_ENV = "SLMOPS_TESTBED_STATE"
# Stopped last-started-first so that nothing talks to a component already gone.
_STOP_ORDER = (
    "simulator",
    "kube-scheduler",
    "kube-controller-manager",
    "prometheus",
    "registry",
    "kube-apiserver",
    "etcd",
)


def default_state_dir() -> Path:
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".local" / "state" / "slmops" / "testbed"


@dataclass
class FleetSpec:
    """How many simulated nodes of each hardware profile, and how they behave."""

    nodes_per_profile: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROFILES, 2))
    # Virtual pods: Running without processes (for scale runs with 1,000 nodes).
    virtual_pods: bool = False
    allowed_image_repositories: tuple[str, ...] = DEFAULT_ALLOWED_IMAGE_REPOSITORIES
    # Real kubelets renew their Lease every 10 s and post unchanged node status every 5 min;
    # the lease interval here follows the controller-manager's grace period (a quarter of it).
    lease_renew_seconds: float = 4.0
    node_status_seconds: float = 60.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.nodes_per_profile) - set(PROFILES))
        if unknown:
            raise TestbedError(
                f"unknown hardware profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}"
            )
        negative = [name for name, count in self.nodes_per_profile.items() if count < 0]
        if negative:
            raise TestbedError(f"node counts must be >= 0 (got a negative one for {negative})")


class Testbed:
    """A testbed in `state_dir`: `up()` starts or adopts it, `down()` stops exactly its PIDs."""

    # Not a test class, despite its name, for pytest's collection.
    __test__ = False

    def __init__(
        self,
        state_dir: Path,
        fleet: FleetSpec | None = None,
        node_monitor: NodeMonitorTiming | None = None,
    ) -> None:
        self.state_dir = state_dir.expanduser().resolve()
        self.fleet = fleet or FleetSpec()
        self.node_monitor = node_monitor or NodeMonitorTiming()
        self._state: dict[str, Any] = self._load_state()

    # --- state -------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load_state(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.state_file.read_text())
            return loaded
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise TestbedError(f"{self.state_file} is corrupt ({exc}); remove it") from exc

    def _save_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2, sort_keys=True))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def _processes(self) -> dict[str, TrackedProcess]:
        return {
            name: TrackedProcess.from_json(data)
            for name, data in self._state.get("processes", {}).items()
        }

    def _remember(self, process: TrackedProcess) -> None:
        self._state.setdefault("processes", {})[process.name] = process.to_json()
        self._save_state()

    def _forget(self, name: str) -> None:
        self._state.get("processes", {}).pop(name, None)
        self._save_state()

    # --- what clients need ---------------------------------------------------------------

    def _require_state(self) -> dict[str, Any]:
        if not self._state:
            raise TestbedError(f"no testbed in {self.state_dir}; run `slmops testbed up`")
        return self._state

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "controlplane" / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """Cluster-admin as the user `slmops-operator`, whose requests alone are audited."""
        return self.state_dir / "controlplane" / "operator.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """kube-apiserver's audit log: one JSON line per request of `operator_kubeconfig`."""
        return self.logs_dir / "kube-apiserver-audit.log"

    @property
    def token(self) -> str:
        return str(self._require_state()["token"])

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self._require_state()['ports']['apiserver']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self._require_state()['ports']['prometheus']}"

    @property
    def registry(self) -> RegistryAccess:
        data = self._require_state()["registry"]
        return RegistryAccess(data["host"], data["username"], data["password"])

    @property
    def simulator(self) -> SimulatorClient:
        return SimulatorClient(f"http://127.0.0.1:{self._require_state()['ports']['simulator']}")

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        return self.logs_dir / "pods"

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl on this testbed; raises with its stderr on failure unless check=False."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise TestbedError("kubectl is not installed (Debian package kubernetes-client)")
        result = subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise TestbedError(
                f"kubectl {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}"
            )
        return result

    # --- lifecycle -----------------------------------------------------------------------

    def is_running(self) -> bool:
        processes = self._processes()
        return bool(processes) and all(
            is_alive(processes[name]) for name in _STOP_ORDER if name in processes
        )

    def up(self) -> bool:
        """Start the testbed; returns False (and does nothing) if it is already running."""
        if self.is_running() and self._apiserver_answers():
            return False
        if self._state:
            # Half-dead leftovers of an earlier run: clear them before a fresh start.
            self.down()
        binaries = ensure_prerequisites(self.state_dir / "logs")
        try:
            self._start_all(binaries)
        except BaseException:
            self.down()
            raise
        return True

    def _apiserver_answers(self) -> bool:
        try:
            return self._control_plane(None).apiserver_ready()
        except Exception:
            return False

    def _control_plane(self, binaries: Binaries | None) -> ControlPlane:
        ports = self._state["ports"]
        return ControlPlane(
            self.state_dir,
            binaries,  # type: ignore[arg-type]  # readiness checks need no binaries
            ControlPlanePorts(
                etcd_client=ports["etcd_client"],
                etcd_peer=ports["etcd_peer"],
                apiserver=ports["apiserver"],
                controller_manager=ports["controller_manager"],
                scheduler=ports["scheduler"],
            ),
            self._state["token"],
            self.node_monitor,
            operator_token=self._state.get("operator_token", ""),
        )

    def _start_all(self, binaries: Binaries) -> None:
        for stale in ("controlplane", "prometheus", "registry", "simulator", "nodes", "pods"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        ports = {
            name: free_port()
            for name in (
                "etcd_client",
                "etcd_peer",
                "apiserver",
                "controller_manager",
                "scheduler",
                "prometheus",
                "registry",
                "simulator",
            )
        }
        for name, port in ports.items():
            require_free_port(port, name)
        self._state = {
            "ports": ports,
            "token": secrets.token_hex(24),
            "operator_token": secrets.token_hex(24),
            "binaries": {
                "kube_apiserver": binaries.kube_apiserver,
                "prometheus": binaries.prometheus,
                "registry": binaries.registry,
                "htpasswd": binaries.htpasswd,
            },
            "pod_ip_octet": _unused_loopback_octet(),
            "node_monitor": {
                "grace_period_seconds": self.node_monitor.grace_period_seconds,
                "period_seconds": self.node_monitor.period_seconds,
            },
            "processes": {},
        }
        self._save_state()

        control_plane = self._control_plane(binaries)
        control_plane.prepare()
        for process in control_plane.start():
            self._remember(process)

        registry = self._registry_component()
        access = registry.prepare()
        self._state["registry"] = {
            "host": access.host,
            "username": access.username,
            "password": access.password,
        }
        self._save_state()
        self._remember(registry.start())

        prometheus = self._prometheus_component()
        prometheus.prepare()
        self._remember(prometheus.start())

        self._start_simulator()

    def _registry_component(self) -> Registry:
        state = self._require_state()
        return Registry(
            self.state_dir,
            state["binaries"]["registry"],
            state["binaries"]["htpasswd"],
            state["ports"]["registry"],
        )

    def _prometheus_component(self) -> Prometheus:
        state = self._require_state()
        return Prometheus(
            self.state_dir, state["binaries"]["prometheus"], state["ports"]["prometheus"]
        )

    def _start_simulator(self) -> None:
        state = self._require_state()
        config = SimulatorConfig(
            apiserver_url=self.apiserver_url,
            token=self.token,
            state_dir=str(self.state_dir),
            control_port=state["ports"]["simulator"],
            pod_ip_octet=state["pod_ip_octet"],
            nodes_per_profile=dict(self.fleet.nodes_per_profile),
            virtual_pods=self.fleet.virtual_pods,
            allowed_image_repositories=list(self.fleet.allowed_image_repositories),
            lease_renew_seconds=self.fleet.lease_renew_seconds,
            node_status_seconds=self.fleet.node_status_seconds,
            scrape_targets_file=str(self._prometheus_component().targets_dir / "pods.json"),
            path_prefix=str(Path(sys.executable).parent),
        )
        config_path = self.state_dir / "simulator" / "config.json"
        config.write(config_path)
        process = start_process(
            "simulator",
            [sys.executable, "-m", "slmops.testbed.simulator", "--config", str(config_path)],
            self.logs_dir / "simulator.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._remember(process)
        client = self.simulator
        wait_until(client.ready, "the edge-fleet simulator to register its nodes", 600, process)

    def down(self) -> None:
        """Stop every tracked process (and the simulator's pod processes); keep the logs."""
        processes = self._processes()
        errors: list[str] = []
        for name in _STOP_ORDER:
            if name in processes:
                try:
                    stop_process(processes[name])
                except TestbedError as exc:
                    errors.append(str(exc))
                    continue
                if name == "simulator":
                    # The simulator stops its pods' processes on SIGTERM; if it was killed
                    # harder, its PID file still names them.
                    self._stop_leftover_pod_processes()
                self._forget(name)
        for name in set(processes) - set(_STOP_ORDER):
            stop_process(processes[name])
            self._forget(name)
        self._stop_leftover_pod_processes()
        if errors:
            raise TestbedError("; ".join(errors))

    def _stop_leftover_pod_processes(self) -> None:
        pid_file = self.state_dir / "simulator" / "pods.json"
        try:
            entries = json.loads(pid_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        for entry in entries:
            stop_process(TrackedProcess.from_json(entry), grace_seconds=5)

    def status(self) -> dict[str, Any]:
        processes = self._processes()
        return {
            "state_dir": str(self.state_dir),
            "running": self.is_running(),
            "processes": {
                name: {"pid": process.pid, "alive": is_alive(process), "log": process.log_path}
                for name, process in processes.items()
            },
            "apiserver": self.apiserver_url if self._state else None,
            "prometheus": self.prometheus_url if self._state else None,
            "registry": self.registry.url if self._state.get("registry") else None,
            "kubeconfig": str(self.kubeconfig),
        }

    # --- individual components, for fault tests -------------------------------------------

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only: etcd keeps the state, clients see connection errors."""
        self._stop_component("kube-apiserver")

    def start_apiserver(self) -> None:
        if self._component_alive("kube-apiserver"):
            return
        binaries = self._require_state()["binaries"]
        if "kube_apiserver" not in binaries:
            raise TestbedError("this testbed was started by an older slmops; restart it")
        control_plane = self._control_plane(_apiserver_binaries(binaries["kube_apiserver"]))
        self._remember(control_plane.start_apiserver())

    def stop_prometheus(self) -> None:
        self._stop_component("prometheus")

    def start_prometheus(self) -> None:
        if self._component_alive("prometheus"):
            return
        self._remember(self._prometheus_component().start())

    def stop_registry(self) -> None:
        self._stop_component("registry")

    def start_registry(self) -> None:
        if self._component_alive("registry"):
            return
        self._remember(self._registry_component().start())

    def _component_alive(self, name: str) -> bool:
        process = self._processes().get(name)
        return process is not None and is_alive(process)

    def _stop_component(self, name: str) -> None:
        process = self._processes().get(name)
        if process is not None:
            stop_process(process)
            self._forget(name)


def _apiserver_binaries(kube_apiserver: str) -> Binaries:
    """Binaries for restarting kube-apiserver alone (the only path that restart reads)."""
    return Binaries(
        etcd="", kube_apiserver=kube_apiserver, kube_controller_manager="", kube_scheduler="",
        prometheus="", registry="", skopeo="", htpasswd="", openssl="", kubectl="",
    )  # fmt: skip


def _unused_loopback_octet() -> int:
    """Pods and nodes get 127.<octet>.x.y; an octet no listening socket uses right now keeps
    testbeds running in parallel (other test sessions) from colliding."""
    busy = {int(address.split(".")[1]) for address, _ in listening_ports()}
    candidates = [octet for octet in range(100, 251) if octet not in busy]
    return random.choice(candidates or list(range(100, 251)))


def prometheus_query(prometheus_url: str, promql: str) -> list[Mapping[str, Any]]:
    """Instant query; returns the `data.result` vector."""
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise TestbedError(f"Prometheus query {promql!r} failed: {body}")
    result: list[Mapping[str, Any]] = body["data"]["result"]
    return result
