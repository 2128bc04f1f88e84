"""Generate CustomResourceDefinitions from the pydantic API models.

The models are the single source of truth; the YAML in crds/ is this module's output and a
test fails when it drifts. Kubernetes needs a *structural* OpenAPI v3 schema: no `$ref`, a
type on every node, `nullable` instead of a null type, int-or-string as an extension, and
only value validations (not types) inside `oneOf`. Pydantic emits JSON Schema 2020-12, so
this module rewrites one into the other. It avoids CEL on purpose: Kubernetes 1.20 refuses
`x-kubernetes-validations`, so every guard here works there, and the cross-field rules the
schema cannot express live in the admission webhook and the reconcilers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from slmops.api.v1alpha1.common import GROUP, VERSION
from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec, EdgeRolloutStatus
from slmops.api.v1alpha1.slmmodel import SLMModelSpec, SLMModelStatus

JsonSchema = dict[str, Any]

_DROPPED_KEYWORDS = {"title", "$defs", "additionalProperties_", "discriminator", "examples"}


@dataclass(frozen=True)
class KindInfo:
    """Names and presentation of one kind."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def _ready_column() -> dict[str, Any]:
    return {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    }


def _age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="SLMModel",
        plural="slmmodels",
        singular="slmmodel",
        short_names=("slm",),
        description=(
            "A small language model and the optimized variants (quantized, pruned) to build "
            "from it for each class of edge hardware."
        ),
        spec=SLMModelSpec,
        status=SLMModelStatus,
        printer_columns=(
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
            _ready_column(),
            {
                "name": "Reason",
                "type": "string",
                "priority": 1,
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            _age_column(),
        ),
    ),
    KindInfo(
        kind="EdgeRollout",
        plural="edgerollouts",
        singular="edgerollout",
        short_names=("er",),
        description=(
            "Rolls a model revision out to a fleet of edge nodes in waves that advance only "
            "while Prometheus says latency and errors are within bounds."
        ),
        spec=EdgeRolloutSpec,
        status=EdgeRolloutStatus,
        printer_columns=(
            {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Wave", "type": "integer", "jsonPath": ".status.currentWave"},
            {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
            {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
            # Nodes that missed a rollout while away: the phase stays Healthy, this does not.
            {"name": "Skipped", "type": "integer", "jsonPath": ".status.skippedCount"},
            _ready_column(),
            _age_column(),
        ),
    ),
)


def _resolve(node: Any, defs: dict[str, JsonSchema]) -> Any:
    """Inline every $ref (Kubernetes refuses them) and recurse."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = copy.deepcopy(defs[name])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        # The field's own docstring beats the class docstring: it says what the field is for.
        target.update(siblings)
        return _resolve(target, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _structural(node: Any) -> Any:
    """Rewrite resolved JSON Schema into Kubernetes' structural OpenAPI v3 dialect."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: JsonSchema = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        options = [o for o in any_of if not _is_null(o)]
        nullable = len(options) != len(any_of)
        types = {o.get("type") for o in options}
        if types == {"string", "integer"}:
            out["x-kubernetes-int-or-string"] = True
        elif len(options) == 1:
            out.update(_structural(options[0]))
        else:
            raise ValueError(f"unsupported union in CRD schema: {any_of}")
        # Optional fields are omitted, never sent as null (status is written with
        # exclude_none), so `nullable` is not declared: with it, the OpenAPI v2 that kubectl
        # explain reads loses the field's type.
        del nullable
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        out.update(_structural(rest))
        return out
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "default" and value in (None, ""):
            # Kubernetes 1.20 reads an empty-string default as null and refuses the CRD;
            # absent means the same to every reader here.
            continue
        elif key == "const":
            out["enum"] = [value]
        elif key == "description":
            # Docstrings wrap at 100 columns; kubectl explain re-wraps, so keep one line.
            out[key] = " ".join(str(value).split())
        else:
            out[key] = _structural(value)
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return out


def _list_map_conditions(node: Any) -> None:
    """Mark conditions lists as maps keyed by type, as Kubernetes API conventions ask."""
    if isinstance(node, dict):
        props = node.get("properties", {})
        conditions = props.get("conditions")
        if isinstance(conditions, dict) and conditions.get("type") == "array":
            conditions["x-kubernetes-list-type"] = "map"
            conditions["x-kubernetes-list-map-keys"] = ["type"]
        for value in node.values():
            _list_map_conditions(value)
    elif isinstance(node, list):
        for item in node:
            _list_map_conditions(item)


def openapi_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural OpenAPI v3 schema of one model, as a CRD embeds it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(_resolve(raw, defs))
    _list_map_conditions(schema)
    return schema  # type: ignore[no-any-return]


def crd(info: KindInfo) -> JsonSchema:
    """The CustomResourceDefinition of one kind."""
    spec_schema = openapi_schema(info.spec)
    status_schema = openapi_schema(info.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "slmops"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": ["slmops"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(info.printer_columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": info.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> list[JsonSchema]:
    """Every CRD of the API, in a stable order."""
    return [crd(info) for info in KINDS]


def crd_filename(info: KindInfo) -> str:
    """File name of a kind's CRD in crds/."""
    return f"{GROUP}_{info.plural}.yaml"
