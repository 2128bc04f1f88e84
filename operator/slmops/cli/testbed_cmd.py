"""`slmops testbed up | down | status | kubeconfig`: the local testbed (a real Kubernetes
control plane, Prometheus, an OCI registry and the edge-fleet simulator, on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from slmops.testbed.controlplane import NodeMonitorTiming
from slmops.testbed.processes import TestbedError
from slmops.testbed.simulator.profiles import PROFILES
from slmops.testbed.testbed import STATE_ENV, FleetSpec, Testbed, default_state_dir

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where the testbed keeps its state and logs [env {STATE_ENV}; "
    "default ~/.local/state/slmops/testbed].",
)


def _testbed(state_dir: Path | None, fleet: FleetSpec | None = None, **kwargs: int) -> Testbed:
    return Testbed(state_dir or default_state_dir(), fleet, **kwargs)  # type: ignore[arg-type]


def _parse_counts(nodes_per_profile: int, counts: tuple[str, ...]) -> dict[str, int]:
    result = dict.fromkeys(PROFILES, nodes_per_profile)
    for item in counts:
        name, sep, value = item.partition("=")
        if not sep or name not in PROFILES or not value.isdigit():
            raise click.BadParameter(
                f"{item!r}: expected PROFILE=COUNT with PROFILE one of {', '.join(PROFILES)}",
                param_hint="--nodes",
            )
        result[name] = int(value)
    return result


@click.group("testbed")
def command() -> None:
    """Start, stop and inspect the local testbed."""


@command.command("up")
@_state_dir_option
@click.option("--nodes-per-profile", type=click.IntRange(min=0), default=2, show_default=True)
@click.option(
    "--nodes",
    "counts",
    multiple=True,
    metavar="PROFILE=COUNT",
    help=f"Override the count of one profile ({', '.join(PROFILES)}); repeatable.",
)
@click.option("--virtual-pods", is_flag=True, help="Pods become Running without processes.")
@click.option(
    "--node-monitor-grace-period",
    type=click.IntRange(min=4),
    default=16,
    show_default=True,
    help="Seconds without heartbeat before a node turns NotReady (Kubernetes default: 40).",
)
def up(
    state_dir: Path | None,
    nodes_per_profile: int,
    counts: tuple[str, ...],
    virtual_pods: bool,
    node_monitor_grace_period: int,
) -> None:
    """Start the testbed (a no-op when it is already running)."""
    fleet = FleetSpec(
        nodes_per_profile=_parse_counts(nodes_per_profile, counts),
        virtual_pods=virtual_pods,
        lease_renew_seconds=max(1.0, node_monitor_grace_period / 4),
    )
    timing = NodeMonitorTiming(grace_period_seconds=node_monitor_grace_period)
    testbed = Testbed(state_dir or default_state_dir(), fleet, timing)
    try:
        started = testbed.up()
    except TestbedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("testbed started" if started else "testbed already running")
    _echo_status(testbed)


@command.command("down")
@_state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop every process the testbed started; logs stay in the state dir."""
    testbed = _testbed(state_dir)
    try:
        testbed.down()
    except TestbedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"testbed stopped; logs in {testbed.logs_dir}")


@command.command("status")
@_state_dir_option
@click.option("--json", "as_json", is_flag=True)
def status(state_dir: Path | None, as_json: bool) -> None:
    """Show the testbed's processes, endpoints and where its logs are."""
    testbed = _testbed(state_dir)
    if as_json:
        click.echo(json.dumps(testbed.status(), indent=2))
        return
    _echo_status(testbed)


@command.command("kubeconfig")
@_state_dir_option
def kubeconfig(state_dir: Path | None) -> None:
    """Print the kubeconfig path (on the last line), e.g. `export KUBECONFIG=$(... | tail -1)`."""
    testbed = _testbed(state_dir)
    if not testbed.kubeconfig.exists():
        raise click.ClickException(f"no testbed in {testbed.state_dir}; run `slmops testbed up`")
    click.echo(str(testbed.kubeconfig))


def _echo_status(testbed: Testbed) -> None:
    info = testbed.status()
    click.echo(f"state dir:  {info['state_dir']}")
    click.echo(f"running:    {info['running']}")
    for name, process in info["processes"].items():
        alive = "up" if process["alive"] else "DOWN"
        click.echo(f"  {name:24} pid {process['pid']:>7}  {alive:4}  log {process['log']}")
    if info["apiserver"]:
        click.echo(f"apiserver:  {info['apiserver']}")
        click.echo(f"prometheus: {info['prometheus']}")
        click.echo(f"registry:   {info['registry']}")
        click.echo(f"pod logs:   {testbed.pod_logs_dir}/<namespace>_<pod>_<container>.log")
        click.echo(f"kubeconfig: {info['kubeconfig']}")
