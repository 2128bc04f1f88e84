"""The contract between the SLMModel controller and `slmops build` (the build Job's process).

The controller serializes a `BuildRequest` into the Job's arguments
(`--request-json`, `model_dump_json(by_alias=True, exclude_none=True)`); the build writes a
`BuildResult` as JSON to the pod's termination message, which the controller reads back from
the terminated container state with `BuildResult.model_validate_json`.

Pure on purpose: pydantic and the API types only, so the controller can import it without
pulling in httpx or onnxruntime.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from slmops.api.v1alpha1.common import ApiModel
from slmops.api.v1alpha1.slmmodel import EvaluationSpec, ImageSpec, ModelSource, Variant

# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096

BuildPhase = Literal["Verified", "Qualified", "Rejected", "Failed"]


class Reason:
    """Reasons the controller surfaces verbatim in conditions and variant status."""

    SOURCE_VERIFIED = "SourceVerified"
    SOURCE_DIGEST_MISMATCH = "SourceDigestMismatch"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    SOURCE_UNREACHABLE = "SourceUnreachable"
    REGISTRY_AUTH_FAILED = "RegistryAuthFailed"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    BUDGETS_MET = "BudgetsMet"
    BUDGET_EXCEEDED = "BudgetExceeded"
    ALREADY_BUILT = "AlreadyBuilt"
    INVALID_REQUEST = "InvalidRequest"
    INVALID_SOURCE = "InvalidSource"
    UNSUPPORTED_RECIPE = "UnsupportedRecipe"
    BUILD_FAILED = "BuildFailed"


class ExitCode:
    """Process exit codes of `slmops build`.

    0: a decision was reached (Verified, Qualified, Rejected, or already built).
    1: a failure that may pass on retry (registry or source unreachable, a crash).
    2: a failure that a retry cannot fix (digest mismatch, refused credentials, invalid
       request, a source that is not a model, unsupported recipe): do not retry the Job.
    """

    DECIDED = 0
    RETRYABLE = 1
    PERMANENT = 2


PERMANENT_REASONS = frozenset(
    {
        Reason.SOURCE_DIGEST_MISMATCH,
        Reason.REGISTRY_AUTH_FAILED,
        Reason.INVALID_REQUEST,
        Reason.INVALID_SOURCE,
        Reason.UNSUPPORTED_RECIPE,
    }
)


TRANSIENT_REASONS = frozenset({Reason.REGISTRY_UNAVAILABLE, Reason.SOURCE_UNREACHABLE})
"""Failures of a server outside the build that may come back by itself (the registry, the
source's server not answering or failing): the controller runs the Job again a bounded number
of times, later. A missing source or refused credentials are not among them."""


class BuildRequest(ApiModel):
    """Everything one build Job needs; small enough for a Job argument."""

    revision: str = Field(min_length=1, max_length=63)
    """The model revision (hash of the source digest and the recipes) this build is for."""
    model: str = Field(min_length=1, max_length=253)
    """Name of the SLMModel (used in artifact names)."""
    source: ModelSource
    """The checkpoint or ONNX file and its expected sha256."""
    variant: Variant | None = None
    """The variant to build; None only with --verify-only."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Budgets that decide Qualified or Rejected."""
    image: ImageSpec
    """Where the artifact is pushed."""
    artifact_tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    """Tag of the artifact; defaults to <variant>-<revision>. The runnable image, if any,
    gets <tag>-image."""

    def tag(self) -> str:
        if self.artifact_tag:
            return self.artifact_tag
        if self.variant is None:
            raise ValueError("a build request without a variant has no artifact tag")
        return f"{self.variant.name}-{self.revision}"[:128]


class BudgetVerdict(ApiModel):
    """One evaluation budget and how the variant did against it."""

    name: str
    """e.g. maxPerplexityIncreasePercent, minSpeedup, maxSizeMiB, minNextTokenAgreement."""
    passed: bool
    limit: float | None = None
    actual: float | None = None
    message: str = ""


class BuildResult(ApiModel):
    """What one build produced and measured; copied into status.variants[*]."""

    variant: str = ""
    revision: str = ""
    phase: BuildPhase
    reason: str
    message: str = ""
    artifact: str | None = None
    """The pushed ModelPack artifact, REGISTRY/REPO@sha256:…"""
    digest: str | None = None
    """Its manifest digest."""
    image: str | None = None
    """The runnable image (base + model layer), REGISTRY/REPO@sha256:…, if one was built."""
    image_digest: str | None = None
    skipped: bool = False
    """True when the artifact already existed for this revision and nothing was rebuilt."""
    source_sha256: str | None = None
    format: str | None = None
    precision: str | None = None
    size_bytes: int | None = None
    reference_size_bytes: int | None = None
    compression_ratio: float | None = None
    perplexity: float | None = None
    reference_perplexity: float | None = None
    perplexity_delta_percent: float | None = None
    next_token_agreement: float | None = None
    output_cosine: float | None = None
    """Plain ONNX models: mean cosine similarity of the variant's outputs to fp32's."""
    max_abs_diff: float | None = None
    time_to_first_token_ms: float | None = None
    tokens_per_second: float | None = None
    latency_ms: float | None = None
    """Plain ONNX models: median latency of one inference."""
    reference_latency_ms: float | None = None
    speedup: float | None = None
    sparsity: float | None = None
    measured_on: str | None = None
    budgets: list[BudgetVerdict] = Field(default_factory=list)
    finished_at: str | None = None

    def to_termination_message(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """Compact JSON under `limit` bytes: budget messages go first, then the message is
        shortened, then budgets are dropped; digests and numbers are always kept."""
        candidate = self
        text = candidate.to_json()
        if len(text.encode()) <= limit:
            return text
        candidate = candidate.model_copy(
            update={"budgets": [b.model_copy(update={"message": ""}) for b in self.budgets]}
        )
        text = candidate.to_json()
        if len(text.encode()) > limit:
            overflow = len(text.encode()) - limit + 3
            shortened = candidate.message.encode()[
                : max(0, len(candidate.message.encode()) - overflow)
            ]
            candidate = candidate.model_copy(
                update={"message": shortened.decode(errors="ignore") + "..."}
            )
            text = candidate.to_json()
        if len(text.encode()) > limit:
            candidate = candidate.model_copy(update={"budgets": [], "message": ""})
            text = candidate.to_json()
        return text

    def to_json(self) -> str:
        return json.dumps(
            self.model_dump(mode="json", by_alias=True, exclude_none=True),
            separators=(",", ":"),
        )
