"""Start `slmops serve` and the Triton peer as real subprocesses on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SLMOPS = Path(sys.executable).with_name("slmops")
PEER_SCRIPT = Path(__file__).with_name("triton_peer_main.py")
PYTHON_313 = Path("/root/.pyenv/versions/3.13.0/bin/python")
TRITON_VENV = Path.home() / ".cache" / "slmops" / "triton-venv"
PYTRITON_VERSION = "0.7.0"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str  # host:port, the form tritonclient takes
    model_name: str
    log_path: Path
    metrics_url: str

    @property
    def base(self) -> str:
        return f"http://{self.url}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(server: RunningServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n{server.log()[-4000:]}"
            )
        try:
            if httpx.get(f"{server.base}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{server.log()[-4000:]}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@contextmanager
def slmops_serve(
    model: Path | str,
    log_dir: Path,
    *,
    model_name: str,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    ready_timeout_s: float = 60,
) -> Iterator[RunningServer]:
    port = free_port()
    log_path = log_dir / f"serve-{model_name}-{port}.log"
    environment = {**os.environ, "SLMOPS_REVISION": "r1", "SLMOPS_VARIANT": "fp32", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(SLMOPS), "serve", "--model", str(model), "--port", str(port),
                "--host", "127.0.0.1", "--model-name", model_name, *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )  # fmt: skip
    url = f"127.0.0.1:{port}"
    server = RunningServer(process, url, model_name, log_path, f"http://{url}/metrics")
    try:
        if wait_ready:
            _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        stop(process)


class TritonUnavailableError(RuntimeError):
    """The Python 3.13 environment for PyTriton cannot be made here."""


def ensure_triton_venv() -> Path:
    """A Python 3.13 virtualenv with nvidia-pytriton, onnxruntime and numpy (PyTriton's
    Python backend stub fails under 3.11). Made once; a marker file says it is complete."""
    python = TRITON_VENV / "bin" / "python"
    marker = TRITON_VENV / f".slmops-pytriton-{PYTRITON_VERSION}"
    if marker.is_file():
        return python
    if not PYTHON_313.is_file():
        raise TritonUnavailableError(f"no Python 3.13 at {PYTHON_313} for nvidia-pytriton")
    check = [str(python), "-c", "import pytriton, onnxruntime, numpy"]
    if not (
        python.is_file() and subprocess.run(check, capture_output=True, check=False).returncode == 0
    ):
        subprocess.run([str(PYTHON_313), "-m", "venv", "--clear", str(TRITON_VENV)], check=True)
        install = subprocess.run(
            [
                str(python), "-m", "pip", "install", "-q",
                f"nvidia-pytriton=={PYTRITON_VERSION}", "onnxruntime", "numpy",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )  # fmt: skip
        if install.returncode != 0:
            raise TritonUnavailableError(
                f"pip could not install nvidia-pytriton=={PYTRITON_VERSION} into a Python 3.13 "
                f"venv: {install.stderr[-2000:]}"
            )
    marker.write_text("complete\n")
    return python


@contextmanager
def triton_peer(onnx_file: Path, model_name: str, log_dir: Path) -> Iterator[RunningServer]:
    """A real Triton server (from the nvidia-pytriton wheel) serving `onnx_file` through a
    bound Python function that runs an onnxruntime session on it."""
    python = ensure_triton_venv()
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_path = log_dir / f"triton-{http_port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(python), str(PEER_SCRIPT), str(onnx_file), model_name,
                str(http_port), str(grpc_port), str(metrics_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: tritonserver is a child of the Python process.
            start_new_session=True,
        )  # fmt: skip
    url = f"127.0.0.1:{http_port}"
    server = RunningServer(
        process, url, model_name, log_path, f"http://127.0.0.1:{metrics_port}/metrics"
    )
    try:
        _wait_ready(server, 120)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.base}/v2/models/{model_name}/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Triton model not ready:\n{server.log()[-4000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
