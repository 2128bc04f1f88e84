"""Types shared by both kinds: the base model, conditions, selectors, resources."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "slmops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A DNS-1123 label: what Kubernetes accepts as a name fragment, and what we use in
# generated object names and label values.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Quantity = Annotated[
    str | int,
    Field(description="A Kubernetes resource quantity such as 500m, 2, 512Mi or 4Gi."),
]


class ApiModel(BaseModel):
    """Base of every API type: frozen, camelCase on the wire, docstrings as descriptions.

    Unknown fields are ignored rather than refused: the apiserver prunes them already
    (the CRD schema is structural), and an operator that refuses an object written by a
    newer CRD version cannot even report why in its status.
    """

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
        validate_default=True,
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of the object's state, following the Kubernetes API conventions."""

    type: str = Field(min_length=1, max_length=316)
    """Condition type in CamelCase, e.g. Ready, Reconciling, Stalled, SourceVerified."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(default="", max_length=1024)
    """A one-word CamelCase reason for the last transition, for machines."""
    message: str = Field(default="", max_length=32768)
    """A sentence for people: what happened and what to do about it."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this condition was computed from."""


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement, as in Kubernetes' LabelSelector."""

    key: str = Field(min_length=1)
    """The label key the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] = Field(default_factory=list)
    """Values for In and NotIn; must be empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """Selects nodes by their labels (Kubernetes LabelSelector semantics: all terms must hold)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must be present with exactly these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Set-based requirements; all must hold."""


class ResourceRequirements(ApiModel):
    """Compute resources, as in a Kubernetes container."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Minimum resources, e.g. {cpu: 500m, memory: 512Mi}."""
    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Maximum resources, e.g. {memory: 1Gi, nvidia.com/gpu: 1}."""


class SecretReference(ApiModel):
    """A Secret in the same namespace as the object that names it."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the Secret."""


class EnvVar(ApiModel):
    """An environment variable with a literal value."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""
    value: str = ""
    """Variable value."""
