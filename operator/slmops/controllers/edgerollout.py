"""EdgeRollout handlers: thin glue between kopf and the rollout logic in domain/."""

from __future__ import annotations

from typing import Any

import kopf

from slmops.api.v1alpha1.common import GROUP, VERSION
from slmops.controllers.firstsight import acknowledge_generation


@kopf.on.resume(GROUP, VERSION, "edgerollouts")
@kopf.on.create(GROUP, VERSION, "edgerollouts")
@kopf.on.update(GROUP, VERSION, "edgerollouts", field="spec")
def reconcile(status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    acknowledge_generation(status, meta, patch)
