"""The simulator's settings, handed over by the testbed as a JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class SimulatorConfig:
    apiserver_url: str
    token: str
    state_dir: str
    control_port: int
    pod_ip_octet: int
    nodes_per_profile: dict[str, int]
    scrape_targets_file: str
    virtual_pods: bool = False
    allowed_image_repositories: list[str] = field(default_factory=list)
    lease_renew_seconds: float = 4.0
    lease_duration_seconds: int = 40
    node_status_seconds: float = 60.0
    # Prepended to PATH of pod processes so that `slmops` resolves to this installation.
    path_prefix: str = ""
    # Kubelet-like restart back-off, shortened from 10 s..5 min so tests stay fast.
    restart_backoff_initial_seconds: float = 1.0
    restart_backoff_max_seconds: float = 20.0

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def read(cls, path: Path) -> SimulatorConfig:
        return cls(**json.loads(path.read_text()))
