"""`slmops model`: make the demo language model and inspect checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import click


@click.group(name="model")
def command() -> None:
    """Make and inspect models."""


@command.command("make-demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the checkpoint into (must not exist or be empty).",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Train afresh instead of copying this machine's cached demo model.",
)
def make_demo(out_dir: Path, no_cache: bool) -> None:
    """Train (or copy from the cache) the demo Llama model, in Hugging Face layout.

    The first run on a machine trains for a few minutes on 2 CPU cores; later runs copy the
    cached checkpoint from ~/.cache/slmops/demo-model/.
    """
    from slmops.optimize.demo_model import (
        TRAINING_REPORT_FILENAME,
        build_demo_model,
        ensure_demo_model,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise click.ClickException(f"{out_dir} is not empty; choose a new directory")
    if no_cache:
        build_demo_model(out_dir)
    else:
        cached = ensure_demo_model()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(cached, out_dir, dirs_exist_ok=True)
    report = json.loads((out_dir / TRAINING_REPORT_FILENAME).read_text(encoding="utf-8"))
    click.echo(
        f"{out_dir}: {report['parameters'] / 1e6:.1f} M parameters; held-out perplexity "
        f"{report['untrained']['heldout']:.1f} untrained -> {report['trained']['heldout']:.1f}"
    )


@command.command("digest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def digest(path: Path) -> None:
    """Print the sha256 to put in `spec.source.sha256` for a checkpoint directory or file.

    For a directory: sha256 over the sorted lines `<sha256>  <relative/path>` of every file
    (what `sha256sum` prints), so any change to any file changes it.
    """
    from slmops.optimize.source import path_digest

    click.echo(path_digest(path))
