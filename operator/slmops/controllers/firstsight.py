"""The first thing both controllers do with a new generation: say they have seen it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import TypeAdapter

from slmops.api.v1alpha1.common import Condition
from slmops.domain import conditions as cond

_CONDITIONS = TypeAdapter(list[Condition])


def acknowledge_generation(
    status: Mapping[str, Any], meta: Mapping[str, Any], patch: kopf.Patch
) -> bool:
    """Set Ready=Unknown/Reconciling=True for an unseen generation; True if it patched."""
    generation = meta.get("generation")
    current = _CONDITIONS.validate_python(status.get("conditions") or [])
    updated = cond.first_sight(current, generation, cond.now_rfc3339())
    if updated == current and status.get("observedGeneration") == generation:
        return False
    patch.status["conditions"] = cond.as_status(updated)
    patch.status["observedGeneration"] = generation
    return True
