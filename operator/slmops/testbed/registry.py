"""A real OCI registry (CNCF distribution 2.8, Debian's `docker-registry`) on loopback,
plain HTTP, with htpasswd (bcrypt) authentication and storage in the state dir."""

from __future__ import annotations

import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from slmops.testbed.processes import TestbedError, TrackedProcess, start_process, wait_until


@dataclass(frozen=True)
class RegistryAccess:
    """How clients reach the registry: `host` is `127.0.0.1:PORT` (plain HTTP, no TLS)."""

    host: str
    username: str
    password: str

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def registry_config(port: int, storage: Path, htpasswd: Path) -> dict[str, object]:
    return {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "auth": {"htpasswd": {"realm": "slmops-testbed", "path": str(htpasswd)}},
    }


class Registry:
    def __init__(self, state_dir: Path, binary: str, htpasswd_binary: str, port: int) -> None:
        self.dir = state_dir / "registry"
        self.log_path = state_dir / "logs" / "registry.log"
        self.binary = binary
        self.htpasswd_binary = htpasswd_binary
        self.port = port

    def prepare(self, username: str = "slmops", password: str | None = None) -> RegistryAccess:
        (self.dir / "storage").mkdir(parents=True, exist_ok=True)
        password = password or secrets.token_hex(12)
        htpasswd = self.dir / "htpasswd"
        result = subprocess.run(
            [self.htpasswd_binary, "-B", "-b", "-c", str(htpasswd), username, password],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise TestbedError(f"htpasswd failed: {result.stderr.strip()}")
        (self.dir / "config.yml").write_text(
            yaml.safe_dump(registry_config(self.port, self.dir / "storage", htpasswd))
        )
        return RegistryAccess(f"127.0.0.1:{self.port}", username, password)

    def start(self) -> TrackedProcess:
        process = start_process(
            "registry",
            [self.binary, "serve", str(self.dir / "config.yml")],
            self.log_path,
        )
        wait_until(self.ready, "registry /v2/", 30, process)
        return process

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            # 401 means it is up and asking for credentials, as configured.
            return exc.code == 401
