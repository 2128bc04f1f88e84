"""SLMModel handlers: thin glue between kopf and the build pipeline."""

from __future__ import annotations

from typing import Any

import kopf

from slmops.api.v1alpha1.common import GROUP, VERSION
from slmops.controllers.firstsight import acknowledge_generation


@kopf.on.resume(GROUP, VERSION, "slmmodels")
@kopf.on.create(GROUP, VERSION, "slmmodels")
@kopf.on.update(GROUP, VERSION, "slmmodels", field="spec")
def reconcile(status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    acknowledge_generation(status, meta, patch)
