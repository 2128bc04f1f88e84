"""A real Prometheus (Debian's 2.42) on loopback, discovering pods through file_sd.

Debian builds Prometheus without kubernetes_sd_configs, so the simulator (which plays the
kubelet and so knows every pod's IP) writes the scrape targets into a file_sd JSON file.
The scrape interval is short so that tests see fresh samples within seconds.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import yaml

from slmops.testbed.processes import TrackedProcess, start_process, wait_until

SCRAPE_INTERVAL = "1s"


def prometheus_config(targets_dir: Path) -> dict[str, object]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "slmops-pods",
                "scrape_timeout": SCRAPE_INTERVAL,
                "file_sd_configs": [
                    {"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}
                ],
            },
        ],
    }


class Prometheus:
    def __init__(self, state_dir: Path, binary: str, port: int) -> None:
        self.dir = state_dir / "prometheus"
        self.log_path = state_dir / "logs" / "prometheus.log"
        self.binary = binary
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_dir(self) -> Path:
        """Where file_sd target files go (the simulator writes `pods.json` here)."""
        return self.dir / "targets"

    def prepare(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "prometheus.yml").write_text(
            yaml.safe_dump(prometheus_config(self.targets_dir), sort_keys=False)
        )

    def start(self) -> TrackedProcess:
        process = start_process(
            "prometheus",
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--web.enable-admin-api",
            ],
            self.log_path,
        )
        wait_until(self.ready, "Prometheus /-/ready", 60, process)
        return process

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
