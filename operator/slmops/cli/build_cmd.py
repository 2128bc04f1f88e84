"""`slmops build`: the process of a build Job. See slmops.optimize.build and docs/build.md.

Exit codes (slmops.optimize.contract.ExitCode):
  0  a decision: Verified, Qualified (pushed or already built) or Rejected (not pushed)
  1  a failure a retry may fix: registry or source unreachable, unexpected error
  2  a failure a retry cannot fix: sha256 mismatch, refused credentials, invalid request,
     unsupported recipe
The BuildResult JSON goes to stdout and to --termination-message-path.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import click
from pydantic import ValidationError

from slmops.optimize.contract import BuildRequest, BuildResult, ExitCode, Reason

DEFAULT_TERMINATION_PATH = Path("/dev/termination-log")


def _default_termination_path() -> Path | None:
    # Only inside a pod does /dev/termination-log exist and matter.
    if DEFAULT_TERMINATION_PATH.exists() and os.access(DEFAULT_TERMINATION_PATH, os.W_OK):
        return DEFAULT_TERMINATION_PATH
    return None


def _emit(result: BuildResult, termination_path: Path | None) -> None:
    message = result.to_termination_message()
    click.echo(message)
    if termination_path is not None:
        try:
            termination_path.write_text(message)
        except OSError as exc:
            click.echo(f"cannot write termination message to {termination_path}: {exc}", err=True)


def _validation_summary(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
        for error in exc.errors()[:5]
    ]
    return "invalid build request: " + "; ".join(problems)


@click.command(name="build")
@click.option(
    "--request",
    "request_file",
    type=click.File("r"),
    help="BuildRequest JSON file, or - for stdin.",
)
@click.option("--request-json", help="BuildRequest as a JSON string (what build Jobs pass).")
@click.option(
    "--verify-only",
    is_flag=True,
    help="Only fetch the source and verify its sha256 (no build, no push).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Scratch space for the source and the build (default: a temporary directory).",
)
@click.option(
    "--termination-message-path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the result for the pod's terminated state "
    "(default /dev/termination-log when it is writable).",
)
def command(
    request_file: TextIO | None,
    request_json: str | None,
    verify_only: bool,
    work_dir: Path | None,
    termination_message_path: Path | None,
) -> None:
    """Build, evaluate and push one model variant; print the BuildResult JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per HTTP request (with upload URLs) drowns the build's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    termination_path = termination_message_path or _default_termination_path()
    if request_json is not None and request_file is None:
        text = request_json
    elif request_file is not None and request_json is None:
        text = request_file.read()
    else:
        raise click.UsageError("give exactly one of --request FILE|- or --request-json JSON")
    try:
        request = BuildRequest.model_validate_json(text)
    except ValidationError as exc:
        _emit(
            BuildResult(
                phase="Failed", reason=Reason.INVALID_REQUEST, message=_validation_summary(exc)
            ),
            termination_path,
        )
        sys.exit(ExitCode.PERMANENT)

    # Imported here: the build pulls in httpx and, per model format, onnxruntime.
    from slmops.optimize.build import exit_code_for, run_build

    if work_dir is not None:
        result = run_build(request, work_dir, verify_only=verify_only)
    else:
        with tempfile.TemporaryDirectory(prefix="slmops-build-") as tmp:
            result = run_build(request, Path(tmp), verify_only=verify_only)
    _emit(result, termination_path)
    sys.exit(exit_code_for(result))
