"""pytest fixtures for the testbed (loaded by tests/conftest.py).

- `testbed` (session): a fresh testbed in a temporary state dir on free ports, torn down
  at the end of the session; its logs are kept (and their place printed) when a test
  failed. With env SLMOPS_TESTBED_STATE pointing at a running testbed (`slmops testbed up`)
  it is reused and left running, for fast local iteration.
- `kube_namespace` (function): a fresh namespace per test, deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slmops.testbed.testbed import STATE_ENV, Testbed

_failed_tests: list[str] = []
_kept_logs: list[Path] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _failed_tests.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Teardown output is easy to miss; the summary is where people look after a failure.
    for logs in _kept_logs:
        terminalreporter.write_line(
            f"testbed logs kept in {logs} (pods: {logs / 'pods'}/<ns>_<pod>_<container>.log)"
        )


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    reuse = os.environ.get(STATE_ENV)
    if reuse:
        existing = Testbed(Path(reuse))
        if existing.is_running():
            yield existing
            return
        pytest.fail(
            f"{STATE_ENV}={reuse} names no running testbed; run `slmops testbed up` "
            "with that state dir or unset the variable"
        )
    state_dir = Path(tempfile.mkdtemp(prefix="slmops-testbed-"))
    bed = Testbed(state_dir)
    try:
        bed.up()
    except BaseException:
        _kept_logs.append(bed.logs_dir)
        raise
    try:
        yield bed
    finally:
        bed.down()
        if _failed_tests:
            _kept_logs.append(bed.logs_dir)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def kube_namespace(testbed: Testbed) -> Iterator[str]:
    """A fresh namespace whose `default` service account exists (pods need it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    testbed.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while testbed.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"service account default in {name} never appeared")
        time.sleep(0.2)
    try:
        yield name
    finally:
        testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)
