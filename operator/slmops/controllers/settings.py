"""Operator-wide kopf settings and the liveness probe."""

from __future__ import annotations

import logging
from typing import Any

import kopf

FIELD_MANAGER = "slmops-operator"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping goes into annotations, never into status: the status schema is
    # structural and generated from our models, so anything else written there would be
    # pruned by the apiserver and every restart would look like first sight.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="slmops.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="slmops.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "slmops.io/finalizer"
    settings.posting.level = logging.INFO
    # A watch that silently stalls is worse than one that reconnects every few minutes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


@kopf.on.probe(id="ok")
def liveness(**_: Any) -> bool:
    """Answered on the liveness endpoint; kopf adds its own loop health around it."""
    return True
