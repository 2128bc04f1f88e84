"""`slmops serve`: the model server the workload pods run."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from slmops.runtime.settings import (
    EXECUTION_PROVIDERS,
    ServeSettings,
    SettingsError,
    default_host,
    default_model_name,
    parse_sim_slowdown,
)

_DEFAULT_CACHE = Path.home() / ".cache" / "slmops" / "models"


@click.command(name="serve")
@click.option(
    "--model",
    "model",
    required=True,
    help="A model directory (onnxruntime-genai), an .onnx file, or oci://REGISTRY/REPO@sha256:…",
)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default=None, help="Address to bind. [default: $POD_IP or 127.0.0.1]")
@click.option(
    "--model-name",
    default=None,
    help="Name in /v2/models/{name}. [default: $SLMOPS_MODEL_NAME or from --model]",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Node-local cache for oci:// models. [default: $SLMOPS_CACHE_DIR or {_DEFAULT_CACHE}]",
)
@click.option(
    "--plain-http",
    is_flag=True,
    default=None,
    help="Pull oci:// models over http:// (loopback test registries). "
    "[env SLMOPS_REGISTRY_PLAIN_HTTP]",
)
@click.option("--threads", type=int, default=0, show_default=True, help="onnxruntime intra-op "
              "threads; 0 lets onnxruntime choose.")  # fmt: skip
@click.option(
    "--execution-provider",
    type=click.Choice(EXECUTION_PROVIDERS),
    default="cpu",
    show_default=True,
)
@click.option("--max-concurrency", type=int, default=2, show_default=True,
              help="Requests running on the model at once.")  # fmt: skip
@click.option("--max-queue", type=int, default=16, show_default=True,
              help="Requests waiting for a slot; beyond this, 503 at once.")  # fmt: skip
@click.option("--max-body-bytes", type=int, default=8 * 1024 * 1024, show_default=True)
@click.option("--drain-timeout", type=float, default=30.0, show_default=True,
              help="Seconds SIGTERM waits for in-flight requests.")  # fmt: skip
def command(
    *,
    model: str,
    port: int,
    host: str | None,
    model_name: str | None,
    cache_dir: Path | None,
    plain_http: bool | None,
    threads: int,
    execution_provider: str,
    max_concurrency: int,
    max_queue: int,
    max_body_bytes: int,
    drain_timeout: float,
) -> None:
    """Serve a model over the KServe/Triton v2 protocol, with text generation.

    Reads SLMOPS_MODEL_NAME, SLMOPS_REVISION, SLMOPS_VARIANT (metric labels), POD_IP (default
    host), SLMOPS_REGISTRY_AUTH_FILE (docker config.json for the registry) and the test hook
    SLMOPS_SIM_SLOWDOWN (every model step takes that factor longer).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    environ = os.environ
    if plain_http is None:
        plain_http = environ.get("SLMOPS_REGISTRY_PLAIN_HTTP", "") in ("1", "true", "yes")
    try:
        settings = ServeSettings(
            model=model,
            port=port,
            host=host or default_host(environ),
            model_name=model_name or default_model_name(model, environ),
            revision=environ.get("SLMOPS_REVISION", ""),
            variant=environ.get("SLMOPS_VARIANT", ""),
            cache_dir=cache_dir or Path(environ.get("SLMOPS_CACHE_DIR", "") or _DEFAULT_CACHE),
            plain_http=plain_http,
            threads=threads,
            execution_provider=execution_provider,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            max_body_bytes=max_body_bytes,
            drain_timeout_s=drain_timeout,
            sim_slowdown=parse_sim_slowdown(environ),
        )
    except SettingsError as error:
        raise click.UsageError(str(error)) from error

    from slmops.runtime.server import serve

    sys.exit(asyncio.run(serve(settings)))
