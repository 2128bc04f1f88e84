"""`slmops operator`: run the operator (the same as `kopf run -m slmops.controllers`)."""

from __future__ import annotations

import click


@click.command(name="operator")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable). Default: all namespaces.",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint URL (kopf serves it).",
)
@click.option(
    "--admission-listen",
    envvar="SLMOPS_ADMISSION_LISTEN",
    default="",
    help="Serve the validating admission webhook on ADDR:PORT (TLS) and manage its "
    "ValidatingWebhookConfiguration. Default: no webhook.",
)
@click.option(
    "--admission-host",
    envvar="SLMOPS_ADMISSION_HOST",
    default="",
    help="Host name or IP the apiserver uses to reach the webhook (default: the listen address).",
)
@click.option("--verbose", is_flag=True, help="Log what every handler does.")
def command(
    namespaces: tuple[str, ...],
    liveness: str,
    admission_listen: str,
    admission_host: str,
    verbose: bool,
) -> None:
    """Run the operator against the cluster of the current kubeconfig (or in-cluster)."""
    import os

    import kopf

    if admission_listen:
        # controllers/__init__ reads these at import time to register the webhook handlers.
        os.environ["SLMOPS_ADMISSION_LISTEN"] = admission_listen
        os.environ["SLMOPS_ADMISSION_HOST"] = admission_host

    import slmops.controllers  # noqa: F401  (importing registers the handlers)

    kopf.configure(verbose=verbose)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
        standalone=True,
    )
