"""`slmops get|describe|plan|promote|pause|resume|abort`: rollouts for people.

Requests (promote, pause, resume, abort, retry) are written as the annotation
`slmops.io/action: <uuid>:<action>` and never into spec, so a GitOps tool that owns the
spec sees no drift. The operator applies each request id once and acknowledges it in
status.lastAction; these commands wait for that acknowledgement by default.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from slmops.api.v1alpha1.common import GROUP, VERSION

ACTION_ANNOTATION = "slmops.io/action"
_console = Console()


class _Cluster:
    """The few API calls the commands need, with errors a person can act on."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        except (config.ConfigException, FileNotFoundError) as error:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                raise click.ClickException(f"cannot load a kubeconfig: {error}") from error
        self.custom = client.CustomObjectsApi()
        self.core = client.CoreV1Api()
        self._client = client
        try:
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            self.default_namespace = (active or {}).get("context", {}).get("namespace") or "default"
        except (config.ConfigException, FileNotFoundError):
            self.default_namespace = "default"

    def _fail(self, error: Exception, what: str) -> click.ClickException:
        status = getattr(error, "status", None)
        if status == 404:
            return click.ClickException(f"{what} not found")
        if status == 403:
            return click.ClickException(f"not allowed to read or change {what}")
        reason = getattr(error, "reason", None) or str(error)
        return click.ClickException(f"{what}: {reason}")

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            found: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except self._client.exceptions.ApiException as error:
            raise self._fail(error, f"{plural[:-1]} {namespace}/{name}") from error
        return dict(found)

    def items(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        answer: Any
        try:
            if namespace is None:
                answer = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
            else:
                answer = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural
                )
        except self._client.exceptions.ApiException as error:
            raise self._fail(error, plural) from error
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    def annotate(self, namespace: str, name: str, value: str) -> None:
        body = {"metadata": {"annotations": {ACTION_ANNOTATION: value}}}
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "edgerollouts", name, body
            )
        except self._client.exceptions.ApiException as error:
            raise self._fail(error, f"edgerollout {namespace}/{name}") from error

    def nodes(self) -> list[dict[str, Any]]:
        try:
            answer = self._client.ApiClient().sanitize_for_serialization(  # type: ignore[no-untyped-call]
                self.core.list_node()
            )
        except self._client.exceptions.ApiException as error:
            raise self._fail(error, "nodes") from error
        items: list[dict[str, Any]] = answer.get("items", [])
        return items


_cluster_options = [
    click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Path to a kubeconfig."),
    click.option("--context", default=None, help="kubeconfig context to use."),
]


def _with_cluster(function: Any) -> Any:
    for option in reversed(_cluster_options):
        function = option(function)
    return function


def _namespace_option(function: Any) -> Any:
    return click.option(
        "-n", "--namespace", default=None, help="Namespace (default: the context's)."
    )(function)


def _status(obj: Mapping[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _condition(obj: Mapping[str, Any], kind: str) -> str:
    for condition in _status(obj).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status", ""))
    return ""


def _short(revision: object) -> str:
    return str(revision)[:12] if revision else "-"


# --- get -----------------------------------------------------------------------------------


@click.command(name="get")
@click.argument("kind", type=click.Choice(["rollouts", "rollout", "models", "model"]))
@_namespace_option
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@_with_cluster
def get_command(
    kind: str,
    namespace: str | None,
    all_namespaces: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """List models or rollouts (get models|rollouts)."""
    cluster = _Cluster(kubeconfig, context)
    scope = None if all_namespaces else (namespace or cluster.default_namespace)
    if kind.startswith("rollout"):
        _console.print(rollouts_table(cluster.items("edgerollouts", scope)))
    else:
        _console.print(models_table(cluster.items("slmmodels", scope)))


def rollouts_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title="EdgeRollouts", title_justify="left")
    for column in ("NAMESPACE", "NAME", "MODEL", "PHASE", "WAVE", "STABLE", "CANARY", "READY"):
        table.add_column(column)
    for item in sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
        status = _status(item)
        waves = status.get("waves") or []
        current = status.get("currentWave")
        wave = f"{current + 1}/{len(waves)}" if current is not None and waves else "-"
        table.add_row(
            item["metadata"]["namespace"],
            item["metadata"]["name"],
            str((item.get("spec") or {}).get("model", {}).get("name", "")),
            str(status.get("phase", "Pending")),
            wave,
            _short(status.get("stableRevision")),
            _short(status.get("canaryRevision")),
            _condition(item, "Ready") or "Unknown",
        )
    return table


def models_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title="SLMModels", title_justify="left")
    for column in ("NAMESPACE", "NAME", "PHASE", "REVISION", "VARIANTS", "READY"):
        table.add_column(column)
    for item in sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
        status = _status(item)
        variants = ", ".join(
            f"{v.get('name')}={v.get('phase', 'Pending')}" for v in status.get("variants") or []
        )
        table.add_row(
            item["metadata"]["namespace"],
            item["metadata"]["name"],
            str(status.get("phase", "Pending")),
            _short(status.get("revision")),
            variants or "-",
            _condition(item, "Ready") or "Unknown",
        )
    return table


# --- describe ------------------------------------------------------------------------------


@click.command(name="describe")
@click.argument("rollout")
@_namespace_option
@_with_cluster
def describe_command(
    rollout: str, namespace: str | None, kubeconfig: str | None, context: str | None
) -> None:
    """Show a rollout in detail: waves, nodes, measurements and why it aborted."""
    cluster = _Cluster(kubeconfig, context)
    item = cluster.get("edgerollouts", namespace or cluster.default_namespace, rollout)
    for renderable in describe_rollout(item):
        _console.print(renderable)


def describe_rollout(item: Mapping[str, Any]) -> list[Any]:
    status = _status(item)
    meta = item["metadata"]
    out: list[Any] = []
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("Rollout", f"{meta['namespace']}/{meta['name']}"),
        ("Model", str((item.get("spec") or {}).get("model", {}).get("name", ""))),
        ("Phase", str(status.get("phase", "Pending"))),
        ("Message", str(status.get("message", ""))),
        ("Stable revision", str(status.get("stableRevision") or "-")),
        ("Canary revision", str(status.get("canaryRevision") or "-")),
        ("Current wave", str(status.get("currentWave", "-"))),
        ("Paused by", str(status.get("pausedBy") or "-")),
    ]
    if status.get("lastAction"):
        action = status["lastAction"]
        rows.append(
            ("Last action", f"{action.get('action')} ({action.get('id')}) at {action.get('at')}")
        )
    for key, value in rows:
        summary.add_row(key, value)
    out.append(summary)

    conditions = Table(title="Conditions", title_justify="left")
    for column in ("TYPE", "STATUS", "REASON", "MESSAGE"):
        conditions.add_column(column)
    for c in status.get("conditions") or []:
        conditions.add_row(
            c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", "")
        )
    out.append(conditions)

    waves = Table(title="Waves", title_justify="left")
    for column in ("#", "NAME", "PHASE", "NODES", "SKIPPED", "OK/FAIL/INC/ERR"):
        waves.add_column(column)
    for w in status.get("waves") or []:
        waves.add_row(
            str(w.get("index")),
            str(w.get("name")),
            str(w.get("phase")),
            ", ".join(w.get("nodes") or []) or "-",
            ", ".join(w.get("skippedNodes") or []) or "-",
            f"{w.get('successful', 0)}/{w.get('failed', 0)}/{w.get('inconclusive', 0)}/"
            f"{w.get('consecutiveErrors', 0)}",
        )
    out.append(waves)

    nodes = Table(title="Nodes", title_justify="left")
    for column in ("NODE", "VARIANT", "CLASS", "WAVE", "REVISION", "STATE", "REASON"):
        nodes.add_column(column)
    for n in status.get("nodes") or []:
        nodes.add_row(
            str(n.get("node")),
            str(n.get("variant") or "-"),
            str(n.get("hardwareClass") or "-"),
            str(n.get("wave", "-")),
            _short(n.get("revision")),
            str(n.get("state", "")),
            str(n.get("reason", "")),
        )
    out.append(nodes)

    measurements = Table(title="Recent measurements", title_justify="left")
    for column in ("AT", "WAVE", "METRIC", "VARIANT", "PHASE", "VALUE", "STABLE", "MESSAGE"):
        measurements.add_column(column)
    for m in (status.get("measurements") or [])[-20:]:
        measurements.add_row(
            str(m.get("at", "")),
            str(m.get("wave", "")),
            str(m.get("metric", "")),
            str(m.get("variant") or "-"),
            str(m.get("phase", "")),
            _number(m.get("value")),
            _number(m.get("stableValue")),
            str(m.get("message", "")),
        )
    out.append(measurements)

    abort = status.get("abort")
    if abort:
        why = Table.grid(padding=(0, 2))
        why.add_column(style="bold red")
        why.add_column()
        for key in ("metric", "wave", "variant", "query", "stableQuery", "value", "stableValue",
                    "condition", "message", "at"):  # fmt: skip
            if abort.get(key) is not None:
                why.add_row(key, str(abort[key]))
        out.append("[bold red]Aborted[/]")
        out.append(why)
    return out


def _number(value: object) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(str(value)):.6g}"
    except ValueError:
        return str(value)


# --- plan ----------------------------------------------------------------------------------


@click.command(name="plan")
@click.argument("rollout", required=False)
@_namespace_option
@click.option(
    "-f",
    "--filename",
    type=click.Path(exists=True, dir_okay=False),
    help="Plan an EdgeRollout from a YAML file instead of one in the cluster.",
)
@_with_cluster
def plan_command(
    rollout: str | None,
    namespace: str | None,
    filename: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Show which node falls into which wave, with variant and hardware class, before
    anything starts (computed from the live nodes and the model's status)."""
    import yaml
    from pydantic import ValidationError

    from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec

    if (rollout is None) == (filename is None):
        raise click.UsageError("give either a ROLLOUT name or -f FILE")
    cluster = _Cluster(kubeconfig, context)
    if filename is not None:
        with open(filename) as handle:
            item = yaml.safe_load(handle) or {}
        if not isinstance(item, dict) or item.get("kind") != "EdgeRollout":
            raise click.ClickException(f"{filename} does not hold an EdgeRollout")
    else:
        assert rollout is not None
        item = cluster.get("edgerollouts", namespace or cluster.default_namespace, rollout)
    scope = namespace or (item.get("metadata") or {}).get("namespace") or cluster.default_namespace
    try:
        spec = EdgeRolloutSpec.model_validate(item.get("spec") or {})
    except ValidationError as error:
        raise click.ClickException(f"the EdgeRollout spec is invalid:\n{error}") from error
    model = cluster.get("slmmodels", scope, spec.model.name)
    table, problems = plan_table(spec, model, cluster.nodes())
    _console.print(table)
    for problem in problems:
        _console.print(f"[yellow]{problem}[/]")


def plan_table(
    spec: Any, model_body: Mapping[str, Any], node_items: list[dict[str, Any]]
) -> tuple[Table, list[str]]:
    from slmops.adapters.kube_objects import fleet_node, model_view
    from slmops.domain.rollout import InvalidSpecError, preview_plan, validate_spec

    view = model_view(model_body, spec.model.revision)
    problems = [f"model: {view.problem}"] if view.problem else []
    try:
        validate_spec(spec)
    except InvalidSpecError as error:
        problems.append(f"spec: {error}")
    revision = view.revision or next(iter(view.offers), None)
    offers = view.offers.get(revision or "", [])
    nodes = [
        fleet_node(n["metadata"]["name"], n["metadata"].get("labels") or {}, n.get("status") or {})
        for n in node_items
    ]
    # The very functions the operator plans with, so the preview is what will happen.
    placements, waves = preview_plan(spec, nodes, offers)
    wave_of = {node: wave for wave in waves for node in wave.nodes}
    table = Table(
        title=f"Plan for revision {revision or '?'}: {len(placements)} fleet nodes, "
        f"{len(waves)} waves",
        title_justify="left",
    )
    for column in ("WAVE", "NODE", "VARIANT", "HARDWARE CLASS", "NOTE"):
        table.add_column(column)
    ordered = sorted(
        placements,
        key=lambda p: (wave_of[p.node].index if p.node in wave_of else 10**6, p.node),
    )
    for p in ordered:
        wave = wave_of.get(p.node)
        table.add_row(
            f"{wave.index} {wave.name}" if wave else "-",
            p.node,
            p.variant or "-",
            p.hardware_class or "-",
            p.reason,
        )
    for wave in waves:
        if not wave.nodes:
            problems.append(f"wave {wave.index} ({wave.name}) is empty: {wave.note}")
    return table, problems


# --- requests ------------------------------------------------------------------------------


def _request(  # noqa: PLR0917 -- the click options, passed along
    action: str,
    rollout: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    wait_seconds: float,
) -> None:
    cluster = _Cluster(kubeconfig, context)
    scope = namespace or cluster.default_namespace
    cluster.get("edgerollouts", scope, rollout)  # a clear "not found" before writing
    request_id = uuid.uuid4().hex[:12]
    cluster.annotate(scope, rollout, f"{request_id}:{action}")
    _console.print(f"requested {action} of {scope}/{rollout} (request {request_id})")
    if wait_seconds <= 0:
        return
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        status = _status(cluster.get("edgerollouts", scope, rollout))
        last = status.get("lastAction") or {}
        if last.get("id") == request_id:
            _console.print(
                f"acknowledged: phase {status.get('phase')}"
                + (f" — {status['message']}" if status.get("message") else "")
            )
            return
        time.sleep(0.5)
    raise click.ClickException(
        f"the operator did not acknowledge request {request_id} within {wait_seconds:g}s "
        "(is it running?); the request stays and will be applied once"
    )


def _request_command(action: str, help_text: str, name: str | None = None) -> click.Command:
    @click.command(name=name or action, help=help_text)
    @click.argument("rollout")
    @_namespace_option
    @click.option(
        "--wait",
        "wait_seconds",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds to wait for the operator to acknowledge (0: do not wait).",
    )
    @_with_cluster
    def command(
        rollout: str,
        namespace: str | None,
        wait_seconds: float,
        kubeconfig: str | None,
        context: str | None,
    ) -> None:
        _request(action, rollout, namespace, kubeconfig, context, wait_seconds)

    return command


@click.command(name="promote")
@click.argument("rollout")
@_namespace_option
@click.option("--full", is_flag=True, help="Switch every remaining node now.")
@click.option("--wait", "wait_seconds", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the operator to acknowledge (0: do not wait).")  # fmt: skip
@_with_cluster
def promote_command(  # noqa: PLR0917 -- click passes options positionally by name
    rollout: str,
    namespace: str | None,
    full: bool,
    wait_seconds: float,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Skip the current pause or analysis (--full: all remaining nodes now)."""
    _request(
        "promote-full" if full else "promote", rollout, namespace, kubeconfig, context, wait_seconds
    )


pause_command = _request_command("pause", "Pause a rollout (without writing spec).")
resume_command = _request_command("resume", "Resume a paused rollout.")
abort_command = _request_command(
    "abort", "Abort a rollout: every touched node goes back to the stable revision."
)
retry_command = _request_command("retry", "Start an aborted or rolled-back rollout again.")
