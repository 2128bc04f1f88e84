"""The content revision of an SLMModel: what was built, not how it is delivered.

A revision is a short hash over exactly the inputs that change the bytes or the measurements of
a build: the source's digest and kind, each variant's name, recipe and hardware selector (the
benchmark is measured on that hardware), and the evaluation budgets. Everything else in the spec
(registry credentials, where to push, build resources, serving resources) is left out on purpose:
editing it must not rebuild anything. Same input, same revision, nothing rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from slmops.api.v1alpha1.slmmodel import SLMModelSpec

REVISION_LENGTH = 12


def revision_inputs(spec: SLMModelSpec) -> dict[str, Any]:
    """The part of the spec a revision is computed from, as plain JSON-able data."""
    return {
        "source": {
            "sha256": spec.source.sha256,
            "format": spec.source.format,
            "task": spec.source.task,
        },
        "variants": [
            {
                "name": variant.name,
                "optimize": variant.optimize.model_dump(mode="json", by_alias=True),
                "nodeSelector": variant.target.node_selector.model_dump(mode="json", by_alias=True),
            }
            for variant in spec.variants
        ],
        "evaluation": spec.evaluation.model_dump(mode="json", by_alias=True),
    }


def model_revision(spec: SLMModelSpec) -> str:
    """12 hex digits identifying the content of a build (stable across processes and versions
    of Python: canonical JSON with sorted keys, no whitespace)."""
    canonical = json.dumps(revision_inputs(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
