"""`slmops testbed up` is idempotent and `slmops testbed down` leaves no process and no
port behind — including the processes the simulator started for pods. Runs its own small
testbed (one node per profile) in a temporary state dir, through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmops.testbed.processes import (
    TestbedError,
    TrackedProcess,
    is_alive,
    listening_ports_of_pids,
    require_free_port,
)
from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration

SLMOPS = str(Path(sys.executable).parent / "slmops")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLMOPS_TESTBED_STATE"}
    return subprocess.run(
        [SLMOPS, "testbed", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def all_pids_of(state_dir: Path) -> list[TrackedProcess]:
    state = json.loads((state_dir / "testbed.json").read_text())
    tracked = [TrackedProcess.from_json(p) for p in state["processes"].values()]
    pods = json.loads((state_dir / "simulator" / "pods.json").read_text())
    return tracked + [TrackedProcess.from_json(p) for p in pods]


def test_up_is_idempotent_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "bed"
    started = cli("up", "--state-dir", str(state_dir), "--nodes-per-profile", "1")
    try:
        assert started.returncode == 0, started.stderr
        assert "testbed started" in started.stdout
        kubeconfig = cli("kubeconfig", "--state-dir", str(state_dir))
        assert kubeconfig.stdout.strip().splitlines()[-1] == str(
            state_dir / "controlplane" / "kubeconfig"
        )
        bed = Testbed(state_dir)
        first_pids = {p.name: p.pid for p in all_pids_of(state_dir)}

        again = cli("up", "--state-dir", str(state_dir), "--nodes-per-profile", "1")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert {p.name: p.pid for p in all_pids_of(state_dir)} == first_pids

        # A pod with a real process listening on its own IP, so `down` must stop it too.
        listener = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "listener", "namespace": "default"},
            "spec": {
                "containers": [
                    {
                        "name": "http",
                        "image": "ghcr.io/slmops/slmops-runtime:0.1.0",
                        "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8080"],
                        "env": [
                            {
                                "name": "POD_IP",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                            }
                        ],
                    }
                ]
            },
        }
        bed.kubectl("apply", "-f", "-", input=json.dumps(listener))
        deadline = time.monotonic() + 60
        while True:
            processes = all_pids_of(state_dir)
            ports = listening_ports_of_pids([p.pid for p in processes])
            if 8080 in ports:
                break
            assert time.monotonic() < deadline, "the pod's process never listened on 8080"
            time.sleep(0.3)
        assert any(p.name.startswith("pod default/listener") for p in processes)
        state = json.loads((state_dir / "testbed.json").read_text())
        assert set(state["ports"].values()) <= ports
    finally:
        stopped = cli("down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stderr

    assert not [p.name for p in processes if is_alive(p)]
    for port in set(state["ports"].values()):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    status = cli("status", "--state-dir", str(state_dir), "--json")
    assert json.loads(status.stdout)["processes"] == {}
    # Logs stay for post-mortems.
    assert (state_dir / "logs" / "kube-apiserver.log").stat().st_size > 0


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(TestbedError, match=f"port 127.0.0.1:{port} for Prometheus is taken"):
            require_free_port(port, "Prometheus")
