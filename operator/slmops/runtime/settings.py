"""What one `slmops serve` process is configured with: flags first, then the environment the
workload pod sets, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

EXECUTION_PROVIDERS = ("cpu", "cuda")

# The simulator's fault tests make one revision slow on one hardware class by setting this.
SIM_SLOWDOWN_ENV = "SLMOPS_SIM_SLOWDOWN"


class SettingsError(ValueError):
    """A setting that cannot work; the message names the setting."""


@dataclass(frozen=True)
class ServeSettings:
    model: str
    port: int
    host: str = "127.0.0.1"
    model_name: str = "model"
    revision: str = ""
    variant: str = ""
    cache_dir: Path = Path.home() / ".cache" / "slmops" / "models"
    threads: int = 0  # 0 lets onnxruntime pick (one per physical core)
    execution_provider: str = "cpu"
    # talk to the OCI registry over http:// (loopback test registries)
    plain_http: bool = False
    max_concurrency: int = 2
    max_queue: int = 16
    max_body_bytes: int = 8 * 1024 * 1024
    drain_timeout_s: float = 30.0
    sim_slowdown: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"--port must be 0..65535, got {self.port}")
        if self.execution_provider not in EXECUTION_PROVIDERS:
            raise SettingsError(
                f"--execution-provider must be one of {', '.join(EXECUTION_PROVIDERS)}, "
                f"got {self.execution_provider!r}"
            )
        if self.threads < 0:
            raise SettingsError(f"--threads must be >= 0, got {self.threads}")
        if self.max_concurrency < 1:
            raise SettingsError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_queue < 0:
            raise SettingsError(f"--max-queue must be >= 0, got {self.max_queue}")
        if self.max_body_bytes < 1024:
            raise SettingsError(f"--max-body-bytes must be >= 1024, got {self.max_body_bytes}")
        if self.drain_timeout_s < 0:
            raise SettingsError(f"--drain-timeout must be >= 0, got {self.drain_timeout_s}")
        if self.sim_slowdown < 1.0:
            raise SettingsError(f"{SIM_SLOWDOWN_ENV} must be >= 1, got {self.sim_slowdown}")
        if not self.model_name or "/" in self.model_name:
            raise SettingsError(
                f"model name must be non-empty without '/', got {self.model_name!r}"
            )


def parse_sim_slowdown(environ: Mapping[str, str]) -> float:
    raw = environ.get(SIM_SLOWDOWN_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        return float(raw)
    except ValueError as error:
        raise SettingsError(f"{SIM_SLOWDOWN_ENV} must be a number >= 1, got {raw!r}") from error


def default_model_name(model: str, environ: Mapping[str, str]) -> str:
    explicit = environ.get("SLMOPS_MODEL_NAME", "").strip()
    if explicit:
        return explicit
    if model.startswith("oci://"):
        last_component = model.removeprefix("oci://").split("@", 1)[0].rsplit("/", 1)[-1]
        return last_component.split(":", 1)[0] or "model"
    stem = Path(model.rstrip("/")).name
    return stem.removesuffix(".onnx") or "model"


def default_host(environ: Mapping[str, str] | None = None) -> str:
    return (environ if environ is not None else os.environ).get("POD_IP", "") or "127.0.0.1"
