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
@click.option("--verbose", is_flag=True, help="Log what every handler does.")
def command(namespaces: tuple[str, ...], liveness: str, verbose: bool) -> None:
    """Run the operator against the cluster of the current kubeconfig (or in-cluster)."""
    import kopf

    import slmops.controllers  # noqa: F401  (importing registers the handlers)

    kopf.configure(verbose=verbose)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
        standalone=True,
    )
