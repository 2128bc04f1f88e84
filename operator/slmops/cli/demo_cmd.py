"""`slmops demo`: the README's main job."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="demo")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Testbed state directory (default: slmops testbed's default).",
)
@click.option(
    "--down/--keep",
    "take_down",
    default=False,
    help="Stop the testbed at the end (default: keep it for looking around).",
)
def command(state_dir: Path | None, take_down: bool) -> None:
    """Build a small language model's variants and roll them out to a simulated edge fleet in
    metric-gated waves; then catch a bad revision and roll it back. Ctrl-C stops everything."""
    from rich.console import Console

    from slmops.demo.story import DemoError, run
    from slmops.testbed.testbed import default_state_dir

    console = Console()
    if not console.is_terminal:
        # Logs and CI captures: wide enough that the status tables are not truncated.
        console = Console(width=120)
    try:
        run(console, state_dir or default_state_dir(), keep_testbed=not take_down)
    except KeyboardInterrupt:
        console.print("\ninterrupted: the operator, the traffic and the testbed were stopped")
        raise SystemExit(130) from None
    except DemoError as error:
        console.print(f"[red]demo failed:[/] {error}")
        raise SystemExit(1) from None
