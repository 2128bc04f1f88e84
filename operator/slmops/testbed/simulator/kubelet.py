"""The simulator playing the kubelet for pods the real scheduler binds to simulated nodes.

Allowlisted images (the project's own) run their command+args as a local process in its own
process group, on a loopback address of its own that becomes the podIP; the pod's status
follows the process: Running, Ready (httpGet readiness probe, or running), restarts with
back-off, exit codes and termination messages, Succeeded/Failed — so Jobs complete or fail
through the real job controller. Other images, and every pod in virtual mode, become
Running without a process. Logs: `<state>/logs/pods/<namespace>_<pod>_<container>.log`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from slmops.testbed.processes import TrackedProcess, process_start_ticks
from slmops.testbed.simulator.apiclient import ApiError, KubeApi
from slmops.testbed.simulator.config import SimulatorConfig
from slmops.testbed.simulator.nodes import SimulatedNode, now_rfc3339
from slmops.testbed.simulator.podspec import (
    DEFAULT_TERMINATION_MESSAGE_PATH,
    PodFacts,
    PodSpecError,
    config_map_values,
    container_argv,
    container_mounts,
    decode_secret,
    http_probe_target,
    is_allowed_image,
    pod_phase,
    resolve_env,
    restart_wanted,
    rewrite_paths,
    terminated_reason,
)
from slmops.testbed.simulator.scrape_targets import scrape_target, write_targets

log = logging.getLogger(__name__)
TERMINATION_MESSAGE_LIMIT = 4096


class PodIpPool:
    """Loopback addresses 127.<octet>.16.1 upwards; the whole 127/8 routes to `lo` on Linux,
    so each pod can bind its own address and pods may share port numbers like real ones."""

    def __init__(self, octet: int) -> None:
        self.octet = octet
        self._free: list[str] = []
        self._next = 0

    def allocate(self) -> str:
        if self._free:
            return self._free.pop()
        index = self._next
        self._next += 1
        if index >= 240 * 250:
            raise RuntimeError("pod IP pool exhausted")
        return f"127.{self.octet}.{16 + index // 250}.{index % 250 + 1}"

    def release(self, ip: str) -> None:
        self._free.append(ip)


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    log_path: Path
    termination_file: Path | None = None
    process: asyncio.subprocess.Process | None = None
    start_ticks: int = 0
    argv: list[str] = field(default_factory=list)
    restart_count: int = 0
    ready: bool = False
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    # None while running or going to restart; the exit code once it is finished for good.
    final_exit_code: int | None = None
    stopping: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self, container_id: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": self.spec.get("image", ""),
            "containerID": container_id,
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodRun:
    def __init__(self, kubelet: Kubelet, pod: dict[str, Any], node: SimulatedNode) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.node = node
        metadata = pod["metadata"]
        self.namespace: str = metadata["namespace"]
        self.name: str = metadata["name"]
        self.uid: str = metadata["uid"]
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.ip = kubelet.ip_pool.allocate()
        self.start_time = now_rfc3339()
        self.dir = kubelet.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.runs_processes = not kubelet.config.virtual_pods and all(
            is_allowed_image(c.get("image", ""), kubelet.config.allowed_image_repositories)
            for c in spec.get("containers", [])
        )
        self.init_containers = [self._container(c) for c in spec.get("initContainers") or []]
        self.containers = [self._container(c) for c in spec.get("containers") or []]
        self.initialized = not self.init_containers or not self.runs_processes
        self.failed_reason: str | None = None
        self.dirty = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.terminating = False
        # condition type -> (status, time it last changed), as the kubelet reports them
        self._transitions: dict[str, tuple[str, str]] = {}

    def _container(self, spec: dict[str, Any]) -> ContainerRun:
        log_dir = self.kubelet.state_dir / "logs" / "pods"
        return ContainerRun(spec, log_dir / f"{self.namespace}_{self.name}_{spec['name']}.log")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def api_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self._status_writer(), name=f"status {self.key}"))
        self.tasks.append(asyncio.create_task(self._main(), name=f"pod {self.key}"))

    async def _main(self) -> None:
        if not self.runs_processes:
            for container in self.containers:
                container.state = {"running": {"startedAt": self.start_time}}
                container.ready = True
            self.dirty.set()
            return
        try:
            volume_dirs = await self._prepare_volumes()
        except (PodSpecError, ApiError, OSError) as exc:
            self._fail_all("CreateContainerConfigError", str(exc))
            return
        for container in self.init_containers:
            await self._run_container(container, volume_dirs, to_completion=True)
            if container.final_exit_code != 0:
                self.failed_reason = "Init container failed"
                for regular in self.containers:
                    regular.final_exit_code = -1
                    regular.state = {"waiting": {"reason": "PodInitializing"}}
                self.dirty.set()
                return
        self.initialized = True
        self.dirty.set()
        await asyncio.gather(
            *(self._run_container(c, volume_dirs, to_completion=False) for c in self.containers)
        )

    def _fail_all(self, reason: str, message: str) -> None:
        log.warning("pod %s cannot start: %s", self.key, message)
        for container in self.containers:
            container.state = {"waiting": {"reason": reason, "message": message}}
        self.dirty.set()

    async def _run_container(
        self, container: ContainerRun, volume_dirs: dict[str, str], to_completion: bool
    ) -> None:
        backoff = self.kubelet.config.restart_backoff_initial_seconds
        while not container.stopping:
            await self.node.online_event.wait()
            try:
                await self._spawn(container, volume_dirs)
            except PodSpecError as exc:
                container.state = {"waiting": {"reason": exc.reason, "message": str(exc)}}
                self.dirty.set()
                await asyncio.sleep(2)
                continue
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                # Reading a secret or config map failed transiently: try again.
                log.warning("pod %s: %s", self.key, exc)
                await asyncio.sleep(1)
                continue
            except OSError as exc:
                container.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
                self.dirty.set()
                await asyncio.sleep(backoff)
                continue
            probe = asyncio.create_task(self._probe(container))
            started = asyncio.get_running_loop().time()
            assert container.process is not None
            exit_code = await container.process.wait()
            probe.cancel()
            self.kubelet.forget_process(container)
            if exit_code < 0:
                # Killed by a signal: report it as a shell would (128 + signal number).
                exit_code = 128 - exit_code
            terminated = {
                "exitCode": exit_code,
                "reason": terminated_reason(exit_code),
                "startedAt": container.state.get("running", {}).get("startedAt", self.start_time),
                "finishedAt": now_rfc3339(),
                "containerID": self._container_id(container),
            }
            message = self._termination_message(container)
            if message:
                terminated["message"] = message
            container.ready = False
            policy = (
                "OnFailure"
                if to_completion and self.restart_policy == "Always"
                else (self.restart_policy)
            )
            if container.stopping or not restart_wanted(policy, exit_code):
                container.state = {"terminated": terminated}
                container.final_exit_code = exit_code
                self.dirty.set()
                return
            container.last_state = {"terminated": terminated}
            container.restart_count += 1
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff:.0f}s restarting failed container",
                }
            }
            self.dirty.set()
            if asyncio.get_running_loop().time() - started > 60:
                backoff = self.kubelet.config.restart_backoff_initial_seconds
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.kubelet.config.restart_backoff_max_seconds)

    async def _spawn(self, container: ContainerRun, volume_dirs: dict[str, str]) -> None:
        spec = container.spec
        secrets, config_maps = await self._env_sources(spec)
        facts = PodFacts.from_pod(self.pod, self.ip, self.node.ip)
        env = resolve_env(spec, facts, secrets, config_maps)
        argv, process_env, cwd = self._launch_plan(container, env, volume_dirs)
        with self._open_log(container, argv) as log_file:
            container.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=process_env,
                cwd=cwd,
                start_new_session=True,
            )
        container.argv = argv
        container.start_ticks = process_start_ticks(container.process.pid) or 0
        container.state = {"running": {"startedAt": now_rfc3339()}}
        container.ready = not (spec.get("readinessProbe") or {}).get("httpGet")
        self.kubelet.remember_process(self, container)
        if not self.node.online:
            self.kubelet.signal_container(container, signal.SIGSTOP)
        self.dirty.set()

    def _launch_plan(
        self, container: ContainerRun, env: dict[str, str], volume_dirs: dict[str, str]
    ) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and working dir with mount paths rewritten (see podspec)."""
        spec = container.spec
        mounts = container_mounts(spec, volume_dirs)
        termination_path = spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        container.termination_file = self.dir / f"termination-{container.name}.log"
        container.termination_file.parent.mkdir(parents=True, exist_ok=True)
        container.termination_file.write_text("")
        mounts[termination_path] = str(container.termination_file)
        argv = [rewrite_paths(part, mounts) for part in container_argv(spec, env)]
        env = {name: rewrite_paths(value, mounts) for name, value in env.items()}
        work_dir = self.dir / "work"
        work_dir.mkdir(parents=True, exist_ok=True)
        cwd = rewrite_paths(spec["workingDir"], mounts) if spec.get("workingDir") else str(work_dir)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        return argv, {**self.kubelet.base_env(self, work_dir), **env}, cwd

    @staticmethod
    def _open_log(container: ContainerRun, argv: list[str]) -> BinaryIO:
        container.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = container.log_path.open("ab")
        log_file.write(f"--- {now_rfc3339()} start #{container.restart_count}: {argv}\n".encode())
        log_file.flush()
        return log_file

    async def _env_sources(
        self, spec: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        secret_names: set[str] = set()
        config_map_names: set[str] = set()
        for source in spec.get("envFrom") or []:
            if "secretRef" in source:
                secret_names.add(source["secretRef"]["name"])
            if "configMapRef" in source:
                config_map_names.add(source["configMapRef"]["name"])
        for entry in spec.get("env") or []:
            value_from = entry.get("valueFrom") or {}
            if "secretKeyRef" in value_from:
                secret_names.add(value_from["secretKeyRef"]["name"])
            if "configMapKeyRef" in value_from:
                config_map_names.add(value_from["configMapKeyRef"]["name"])
        secrets = {
            name: decode_secret(found)
            for name in secret_names
            if (found := await self._get_optional("secrets", name)) is not None
        }
        config_maps = {
            name: config_map_values(found)
            for name in config_map_names
            if (found := await self._get_optional("configmaps", name)) is not None
        }
        return secrets, config_maps

    async def _get_optional(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.kubelet.api.get(
                f"/api/v1/namespaces/{self.namespace}/{kind}/{name}"
            )
            return found
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _prepare_volumes(self) -> dict[str, str]:
        """Each volume becomes a directory: hostPath per node (shared by that node's pods),
        PVCs per claim, everything else per pod."""
        dirs: dict[str, str] = {}
        state = self.kubelet.state_dir
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "hostPath" in volume:
                host_path = str(volume["hostPath"]["path"]).lstrip("/")
                target = state / "nodes" / self.node.name / "hostpath" / host_path
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                target = state / "pvcs" / self.namespace / claim
            else:
                target = self.dir / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                found = await self._get_optional("secrets", volume["secret"]["secretName"])
                if found is None and not volume["secret"].get("optional"):
                    raise PodSpecError(
                        "CreateContainerConfigError",
                        f'secret "{volume["secret"]["secretName"]}" not found',
                    )
                _write_items(target, _raw_secret(found or {}), volume["secret"].get("items"))
            elif "configMap" in volume:
                found = await self._get_optional("configmaps", volume["configMap"]["name"])
                if found is None and not volume["configMap"].get("optional"):
                    raise PodSpecError(
                        "CreateContainerConfigError",
                        f'configmap "{volume["configMap"]["name"]}" not found',
                    )
                values = {k: v.encode() for k, v in config_map_values(found or {}).items()}
                _write_items(target, values, volume["configMap"].get("items"))
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    if "secret" in source:
                        found = await self._get_optional("secrets", source["secret"]["name"])
                        _write_items(
                            target, _raw_secret(found or {}), source["secret"].get("items")
                        )
                    elif "configMap" in source:
                        found = await self._get_optional("configmaps", source["configMap"]["name"])
                        values = {k: v.encode() for k, v in config_map_values(found or {}).items()}
                        _write_items(target, values, source["configMap"].get("items"))
            dirs[name] = str(target)
        return dirs

    async def _probe(self, container: ContainerRun) -> None:
        probe_spec = container.spec.get("readinessProbe") or {}
        try:
            target = http_probe_target(probe_spec, container.spec, self.ip)
        except PodSpecError as exc:
            log.warning("pod %s: %s", self.key, exc)
            return
        if target is None:
            return
        url, initial_delay, period, failure_threshold = target
        await asyncio.sleep(initial_delay)
        failures = 0
        timeout = aiohttp.ClientTimeout(total=float(probe_spec.get("timeoutSeconds", 1)))
        while True:
            ok = False
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with self.kubelet.probe_session.get(url, timeout=timeout) as response:
                    ok = 200 <= response.status < 400
            if ok:
                failures = 0
                if not container.ready:
                    container.ready = True
                    self.dirty.set()
            else:
                failures += 1
                if container.ready and failures >= failure_threshold:
                    container.ready = False
                    self.dirty.set()
            # Probes follow the process's own pace: checking faster than the period would
            # only make a slowed-down node look healthier.
            await asyncio.sleep(period if container.ready else min(period, 1.0))

    def _container_id(self, container: ContainerRun) -> str:
        pid = container.process.pid if container.process else 0
        return f"slmops-sim://{self.uid[:8]}-{container.name}-{pid}"

    def _termination_message(self, container: ContainerRun) -> str:
        if container.termination_file is None:
            return ""
        with contextlib.suppress(OSError):
            return container.termination_file.read_text(errors="replace")[
                :TERMINATION_MESSAGE_LIMIT
            ]
        return ""

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = now_rfc3339()
        containers_ready = all(c.ready for c in self.containers) and bool(self.containers)
        exit_codes = [c.final_exit_code for c in self.containers]
        phase = pod_phase(exit_codes) if self.runs_processes else "Running"
        if not self.initialized or (
            phase == "Running"
            and all("waiting" in c.state and c.restart_count == 0 for c in self.containers)
        ):
            phase = "Pending"
        if self.failed_reason:
            phase = "Failed"
        finished = phase in ("Succeeded", "Failed")
        ready_reason = (
            "PodCompleted" if finished else ("" if containers_ready else "ContainersNotReady")
        )

        def condition(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
            value = "True" if ok else "False"
            previous = self._transitions.get(kind)
            if previous is None or previous[0] != value:
                self._transitions[kind] = (value, now)
            entry: dict[str, Any] = {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": self._transitions[kind][1],
            }
            if reason:
                entry["reason"] = reason
            return entry

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.node.ip,
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": [
                condition("Initialized", self.initialized),
                condition("Ready", containers_ready and not finished, ready_reason),
                condition("ContainersReady", containers_ready and not finished, ready_reason),
                condition("PodScheduled", True),
            ],
            "containerStatuses": [c.status(self._container_id(c)) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [
                c.status(self._container_id(c)) for c in self.init_containers
            ]
        if self.failed_reason:
            status["reason"] = "Failed"
            status["message"] = self.failed_reason
        return status

    async def _status_writer(self) -> None:
        last_sent: str | None = None
        while True:
            await self.dirty.wait()
            # A little coalescing: several changes in quick succession make one write.
            await asyncio.sleep(0.05)
            self.dirty.clear()
            # An offline node cannot reach the apiserver.
            await self.node.online_event.wait()
            status = self.status()
            self.kubelet.update_scrape_target(self)
            encoded = json.dumps(status, sort_keys=True)
            if encoded == last_sent and not self.kubelet.force_status.get(self.uid):
                continue
            self.kubelet.force_status.pop(self.uid, False)
            try:
                await self.kubelet.api.patch(f"{self.api_path}/status", {"status": status})
                last_sent = encoded
            except ApiError as exc:
                if exc.status == 404:
                    return
                log.warning("status of %s: %s", self.key, exc)
                await asyncio.sleep(1)
                self.dirty.set()
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                log.warning("status of %s: %s", self.key, exc)
                await asyncio.sleep(1)
                self.dirty.set()

    def is_running_process(self) -> bool:
        return any(c.process is not None and c.process.returncode is None for c in self.containers)

    async def terminate(self, grace_seconds: float) -> None:
        """Stop the processes like the kubelet: SIGTERM, wait the grace period, SIGKILL."""
        self.terminating = True
        all_containers = self.init_containers + self.containers
        for container in all_containers:
            container.stopping = True
            self.kubelet.signal_container(container, signal.SIGCONT)
            self.kubelet.signal_container(container, signal.SIGTERM)
        waits = [
            asyncio.ensure_future(c.process.wait())
            for c in all_containers
            if c.process is not None and c.process.returncode is None
        ]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace_seconds)
            for waiter in pending:
                waiter.cancel()
        for container in all_containers:
            if container.process is not None and container.process.returncode is None:
                self.kubelet.signal_container(container, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(container.process.wait(), 5)
            self.kubelet.forget_process(container)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "node": self.node.name,
            "ip": self.ip,
            "runs_processes": self.runs_processes,
            "containers": [
                {
                    "name": c.name,
                    "pid": c.process.pid if c.process and c.process.returncode is None else None,
                    "restart_count": c.restart_count,
                    "state": c.state,
                    "log": str(c.log_path),
                    "argv": c.argv,
                }
                for c in self.init_containers + self.containers
            ],
        }


def _raw_secret(secret: Mapping[str, Any]) -> dict[str, bytes]:
    values = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    values.update({key: value.encode() for key, value in (secret.get("stringData") or {}).items()})
    return values


def _write_items(
    target: Path, values: Mapping[str, bytes], items: list[dict[str, Any]] | None
) -> None:
    selected = (
        {item["path"]: values[item["key"]] for item in items if item["key"] in values}
        if items
        else dict(values)
    )
    for relative, content in selected.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


class Kubelet:
    def __init__(
        self,
        api: KubeApi,
        config: SimulatorConfig,
        nodes: dict[str, SimulatedNode],
        kubeconfig: Path,
    ) -> None:
        self.api = api
        self.config = config
        self.nodes = nodes
        self.kubeconfig = kubeconfig
        self.state_dir = Path(config.state_dir)
        self.ip_pool = PodIpPool(config.pod_ip_octet)
        self.pods: dict[str, PodRun] = {}
        self.force_status: dict[str, bool] = {}
        self._processes: dict[int, TrackedProcess] = {}
        self._targets: dict[str, dict[str, Any]] = {}
        self._deleting: set[str] = set()
        # Deletions in flight; asyncio keeps only weak references to tasks.
        self._background: set[asyncio.Task[None]] = set()
        self.probe_session: aiohttp.ClientSession

    def base_env(self, pod: PodRun, home: Path) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        server_port = self.config.apiserver_url.rsplit(":", 1)[1]
        return {
            "PATH": f"{self.config.path_prefix}:{path}" if self.config.path_prefix else path,
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": pod.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": server_port,
            # No mount namespace means no service-account token at its fixed path, so
            # in-cluster clients (an operator pod) reach the apiserver with this instead.
            "KUBECONFIG": str(self.kubeconfig),
        }

    async def run(self) -> None:
        # `down` reads this file to stop pod processes even if the simulator died hard.
        (self.state_dir / "simulator").mkdir(parents=True, exist_ok=True)
        self._write_pid_file()
        async with aiohttp.ClientSession() as probe_session:
            self.probe_session = probe_session
            try:
                await self._list_and_watch()
            finally:
                await self.stop_all()

    async def _list_and_watch(self) -> None:
        params = {"fieldSelector": "spec.nodeName!="}
        while True:
            try:
                listing = await self.api.get("/api/v1/pods", params)
                seen = set()
                for pod in listing.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    await self.handle(pod)
                for uid in list(self.pods):
                    if uid not in seen:
                        self._in_background(self._forget_pod(uid))
                version = listing["metadata"]["resourceVersion"]
                while True:
                    async for event in self.api.watch("/api/v1/pods", params, version):
                        kind = event.get("type")
                        obj = event.get("object", {})
                        if kind == "ERROR":
                            raise ApiError(obj.get("code", 500), "WATCH", "pods", str(obj))
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            self._in_background(self._forget_pod(obj["metadata"]["uid"]))
                        else:
                            await self.handle(obj)
            except ApiError as exc:
                if exc.status != 410:
                    log.warning("pod watch failed: %s", exc)
                    await asyncio.sleep(1)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("pod watch interrupted: %s", exc)
                await asyncio.sleep(1)

    async def handle(self, pod: dict[str, Any]) -> None:
        node_name = pod.get("spec", {}).get("nodeName")
        node = self.nodes.get(node_name or "")
        if node is None:
            return
        metadata = pod["metadata"]
        uid = metadata["uid"]
        if metadata.get("deletionTimestamp"):
            if uid not in self._deleting:
                self._deleting.add(uid)
                grace = metadata.get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                self._in_background(self._terminate_and_delete(pod, float(grace)))
            return
        run = self.pods.get(uid)
        if run is not None:
            before = run.pod["metadata"]
            run.pod = pod
            # Labels and annotations feed the scrape target; our own status writes also
            # arrive here and must not trigger another write.
            if before.get("labels") != metadata.get("labels") or before.get(
                "annotations"
            ) != metadata.get("annotations"):
                run.dirty.set()
            return
        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        run = PodRun(self, pod, node)
        self.pods[uid] = run
        run.start()

    async def _terminate_and_delete(self, pod: dict[str, Any], grace: float) -> None:
        metadata = pod["metadata"]
        uid = metadata["uid"]
        run = self.pods.get(uid)
        if run is not None:
            node = run.node
            await run.terminate(grace)
            # An offline node's kubelet cannot confirm the deletion until it is back.
            await node.online_event.wait()
        with contextlib.suppress(ApiError):
            await self.api.delete(
                f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
            )
        await self._forget_pod(uid)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Stopping a pod waits out its grace period; the watch must not wait with it."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _forget_pod(self, uid: str) -> None:
        run = self.pods.pop(uid, None)
        self._deleting.discard(uid)
        if run is None:
            return
        if not run.terminating:
            await run.terminate(float(run.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        self.ip_pool.release(run.ip)
        self._drop_scrape_target(run)

    async def stop_all(self) -> None:
        runs = list(self.pods.values())
        self.pods.clear()
        await asyncio.gather(*(run.terminate(5.0) for run in runs), return_exceptions=True)

    # --- processes ------------------------------------------------------------------------

    def remember_process(self, run: PodRun, container: ContainerRun) -> None:
        assert container.process is not None
        self._processes[container.process.pid] = TrackedProcess(
            name=f"pod {run.key} {container.name}",
            pid=container.process.pid,
            start_ticks=container.start_ticks,
            log_path=str(container.log_path),
            argv=tuple(container.argv),
        )
        self._write_pid_file()

    def forget_process(self, container: ContainerRun) -> None:
        if container.process is not None and container.process.pid in self._processes:
            del self._processes[container.process.pid]
            self._write_pid_file()

    def _write_pid_file(self) -> None:
        path = self.state_dir / "simulator" / "pods.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([p.to_json() for p in self._processes.values()]))
        tmp.replace(path)

    def signal_container(self, container: ContainerRun, signum: int) -> None:
        process = container.process
        if process is None or process.returncode is not None:
            return
        # The whole group: the command may have started children of its own.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    def node_pods(self, node: SimulatedNode) -> list[PodRun]:
        return [run for run in self.pods.values() if run.node is node]

    def signal_node(self, node: SimulatedNode, signum: int) -> None:
        for run in self.node_pods(node):
            for container in run.init_containers + run.containers:
                self.signal_container(container, signum)

    def repost_node_pods(self, node: SimulatedNode) -> None:
        """After an outage the node-lifecycle controller has marked the pods not ready."""
        for run in self.node_pods(node):
            self.force_status[run.uid] = True
            run.dirty.set()

    def find(self, namespace: str, name: str) -> PodRun | None:
        for run in self.pods.values():
            if run.namespace == namespace and run.name == name:
                return run
        return None

    # --- scrape targets --------------------------------------------------------------------

    def update_scrape_target(self, run: PodRun) -> None:
        target = scrape_target(run.pod, run.ip, run.node.name) if run.is_running_process() else None
        if target == self._targets.get(run.uid):
            return
        if target is None:
            self._targets.pop(run.uid, None)
        else:
            self._targets[run.uid] = target
        self._flush_targets()

    def _drop_scrape_target(self, run: PodRun) -> None:
        if self._targets.pop(run.uid, None) is not None:
            self._flush_targets()

    def _flush_targets(self) -> None:
        write_targets(
            Path(self.config.scrape_targets_file),
            [self._targets[uid] for uid in sorted(self._targets)],
        )
