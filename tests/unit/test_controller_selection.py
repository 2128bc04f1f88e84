"""SLMOPS_CONTROLLERS picks the controllers an operator process runs (checked in a fresh
interpreter: the choice is made when the package is imported)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = (
    "import sys, slmops.controllers as c; "
    "print(','.join(c.ENABLED), 'slmops.controllers.slmmodel' in sys.modules, "
    "'slmops.controllers.edgerollout' in sys.modules)"
)


def _probe(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLMOPS_CONTROLLERS"}
    if value is not None:
        env["SLMOPS_CONTROLLERS"] = value
    return subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=False
    )


def test_both_controllers_by_default() -> None:
    assert _probe(None).stdout.split() == ["edgerollout,slmmodel", "True", "True"]


def test_only_the_rollout_controller() -> None:
    assert _probe(" edgerollout ").stdout.split() == ["edgerollout", "False", "True"]


def test_an_unknown_controller_is_refused_by_name() -> None:
    result = _probe("edgerollout,rollouts")
    assert result.returncode != 0
    assert "unknown controllers rollouts" in result.stderr
