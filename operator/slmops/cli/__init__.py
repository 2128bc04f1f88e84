"""The `slmops` command line (also installed as the kubectl plugin `kubectl-slmops`).

Each subcommand lives in its own module and is imported only when it runs, so that
`slmops serve` does not pay for importing kopf and `slmops get` does not import onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# subcommand name -> ("module[:attribute]" of a click command or group, one-line help).
# Without an attribute the module's `command` is used.
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "get": (
        "slmops.cli.rollout_cmds:get_command",
        "List models or rollouts (get models|rollouts).",
    ),
    "describe": ("slmops.cli.rollout_cmds:describe_command", "Show a rollout in detail."),
    "plan": ("slmops.cli.rollout_cmds:plan_command", "Show which nodes fall in which wave."),
    "promote": ("slmops.cli.rollout_cmds:promote_command", "Skip the current pause or analysis."),
    "pause": ("slmops.cli.rollout_cmds:pause_command", "Pause a rollout (without writing spec)."),
    "resume": ("slmops.cli.rollout_cmds:resume_command", "Resume a paused rollout."),
    "abort": ("slmops.cli.rollout_cmds:abort_command", "Abort a rollout and roll back."),
    "retry": ("slmops.cli.rollout_cmds:retry_command", "Start an aborted rollout again."),
    "demo": ("slmops.cli.demo_cmd", "Run the whole story on a local testbed."),
    "operator": ("slmops.cli.operator_cmd", "Run the operator (kopf) against the current cluster."),
    "testbed": ("slmops.cli.testbed_cmd", "Start, stop and inspect the local testbed."),
    "model": ("slmops.cli.model_cmd", "Make and inspect models (make-demo)."),
    "build": (
        "slmops.cli.build_cmd",
        "Build, evaluate and push one model variant (runs in a build Job).",
    ),
    "serve": ("slmops.cli.serve_cmd", "Serve a model over the KServe/Triton v2 protocol."),
    "crds": ("slmops.cli.crds_cmd", "Print or write the CRDs generated from the API models."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, _, attribute = entry[0].partition(":")
        module = importlib.import_module(module_name)
        command: click.Command = getattr(module, attribute or "command")
        return command

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, help_text) for name, (_, help_text) in sorted(_SUBCOMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slmops")
def main() -> None:
    """slmops: small language models, built per hardware class, rolled out to edge fleets in
    metric-gated waves."""
