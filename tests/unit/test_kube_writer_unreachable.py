"""An apiserver out of reach is a KubeError, which the rollout loop waits out with a warning.

Before, the connection error escaped as a urllib3 exception: every reconcile during an
apiserver restart was logged as a bug in the operator, traceback and all (found by
tests/e2e/test_rollout_chaos.py).
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client

from slmops.adapters.kubernetes import KubeError, KubeWriter
from tests.support.operator import free_port

pytestmark = pytest.mark.unit


def test_a_status_patch_to_an_apiserver_that_is_down_raises_kube_error() -> None:
    configuration = client.Configuration()
    # Nothing listens there: connection refused, as while kube-apiserver restarts.
    configuration.host = f"https://127.0.0.1:{free_port()}"
    configuration.verify_ssl = False
    writer = KubeWriter(client.ApiClient(configuration))
    with pytest.raises(KubeError, match="the API server did not answer") as raised:
        asyncio.run(
            writer.patch_status("slmops.io/v1alpha1", "EdgeRollout", "edge", "demo", {"a": 1})
        )
    assert raised.value.status is None
    assert "/namespaces/edge/edgerollouts/demo/status" in str(raised.value)
