"""EdgeRollout: one model revision onto one fleet of edge nodes, in metric-gated waves.

The spec says which model, which nodes, how to serve, how to split the fleet into waves and
what Prometheus must say before a wave may advance. The status is the rollout's memory: a
restarted operator continues exactly from it, so everything a decision depends on is here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from slmops.api.v1alpha1.common import (
    DNS_LABEL,
    ApiModel,
    Condition,
    EnvVar,
    LabelSelector,
    ResourceRequirements,
)

NoDataPolicy = Literal["Inconclusive", "Fail", "Pass"]


class ModelReference(ApiModel):
    """The SLMModel to roll out."""

    name: str = Field(min_length=1, max_length=253)
    """Name of an SLMModel in the same namespace."""
    revision: str | None = Field(default=None, pattern=r"^[a-z0-9]{8,64}$")
    """Pin a revision from the model's status.revisions; default: the model's current
    revision once it is Ready."""


class FleetSpec(ApiModel):
    """Which nodes serve this model."""

    selector: LabelSelector
    """Edge nodes matching these labels form the fleet."""


class ServingSpec(ApiModel):
    """How model servers run on each node."""

    port: int = Field(default=8000, ge=1024, le=65535)
    """Port of the inference server (KServe/Triton v2 over HTTP)."""
    resources: ResourceRequirements | None = None
    """Overrides the variant's resources for every server."""
    env: list[EnvVar] = Field(default_factory=list)
    """Extra environment for the server."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """Intra-op threads of onnxruntime; default: the pod's CPU limit or the node's CPUs."""
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    """Requests processed at once per server; beyond this they queue."""
    max_queue: int = Field(default=64, ge=0, le=100000)
    """Requests waiting per server; beyond this the server answers 503 at once."""
    model_cache_path: str = Field(default="/var/lib/slmops/models", pattern=r"^/.*")
    """Host directory where nodes keep pulled models by digest (a hostPath), so that a
    rollback to a cached revision downloads nothing."""


class Pause(ApiModel):
    """A pause after a wave."""

    duration_seconds: int | None = Field(default=None, ge=1)
    """Pause this long; without it, pause until `slmops resume` or `slmops promote`."""


class WaveSpec(ApiModel):
    """One step of the rollout: which further nodes switch to the new revision.

    Exactly one of count, percent or selector. Count and percent are cumulative over the
    fleet (percent 50 means: after this wave, half the fleet runs the new revision);
    a selector adds the matching nodes not yet switched.
    """

    # Structural schemas allow value-only oneOf: the apiserver itself enforces "exactly one
    # of" on every Kubernetes version, no CEL needed.
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "oneOf": [
                {"required": ["count"]},
                {"required": ["percent"]},
                {"required": ["selector"]},
            ]
        },
    )

    name: str | None = Field(default=None, pattern=DNS_LABEL, max_length=40)
    """Wave name, shown in status and plans; default wave-N."""
    count: int | None = Field(default=None, ge=1)
    """Nodes on the new revision after this wave (cumulative)."""
    percent: int | None = Field(default=None, ge=1, le=100)
    """Share of the fleet on the new revision after this wave (cumulative, rounded up)."""
    selector: LabelSelector | None = None
    """Nodes with these labels (e.g. a site, zone or hardware class) switch in this wave."""
    pause: Pause | None = None
    """Pause after this wave's analysis passed."""
    analysis: AnalysisOverride | None = None
    """Overrides the rollout's analysis settings for this wave."""

    @model_validator(mode="after")
    def _exactly_one_size(self) -> WaveSpec:
        given = [k for k in ("count", "percent", "selector") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a wave needs exactly one of count, percent or selector"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class StrategySpec(ApiModel):
    """How the fleet moves to a new revision."""

    waves: list[WaveSpec] = Field(min_length=1, max_length=50)
    """Ordered waves; after the last one, every remaining fleet node switches."""
    max_unavailable: int | str = Field(default=1)
    """Nodes of a wave that may switch at once (a number or a percentage like 25%)."""
    node_timeout_seconds: int = Field(default=300, ge=5)
    """A node that has not become ready on the new revision within this time is skipped and
    reported; it never blocks the wave."""
    prestage: bool = False
    """Pull the new revision onto every target node before the first wave switches."""
    progress_deadline_seconds: int = Field(default=3600, ge=30)
    """A rollout making no progress for this long becomes Stalled (paused time excluded)."""


class MetricSpec(ApiModel):
    """One Prometheus check.

    The query is a PromQL template; {{rollout}}, {{namespace}}, {{revision}},
    {{stableRevision}}, {{variant}}, {{hardwareClass}} and {{wave}} are substituted. The
    success condition is an expression over `result` (this revision's value) and `stable`
    (the same query for the stable revision on the same variant), e.g.
    `result <= 1.2 * stable` or `result < 0.01`.
    """

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    """Metric name in status and events."""
    query: str = Field(min_length=1, max_length=8192)
    """PromQL template returning one value per evaluation (a scalar or single series)."""
    success_condition: str = Field(min_length=1, max_length=1024)
    """Expression that must be true for the measurement to pass."""
    failure_condition: str | None = Field(default=None, max_length=1024)
    """Optional expression that fails the measurement outright; when neither holds the
    measurement is Inconclusive."""
    on_no_data: NoDataPolicy | None = None
    """Overrides the analysis onNoData for this metric."""


class AnalysisOverride(ApiModel):
    """Per-wave analysis settings; unset fields inherit from spec.analysis."""

    skip: bool = False
    """Advance without analysis after this wave."""
    interval_seconds: int | None = Field(default=None, ge=1)
    """Seconds between measurements."""
    count: int | None = Field(default=None, ge=1)
    """Measurements taken before the wave passes."""


class PrometheusSpec(ApiModel):
    """Where the metrics are."""

    address: str = Field(pattern=r"^https?://.+")
    """Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090."""


class AnalysisSpec(ApiModel):
    """What Prometheus must say before a wave may advance."""

    prometheus: PrometheusSpec
    """The Prometheus to ask."""
    interval_seconds: int = Field(default=30, ge=1, le=86400)
    """Seconds between measurements."""
    count: int = Field(default=3, ge=1, le=1000)
    """Measurements per wave; the wave passes when all are taken without breaking a limit."""
    initial_delay_seconds: int = Field(default=0, ge=0)
    """Wait after a wave's nodes are ready before the first measurement."""
    failure_limit: int = Field(default=0, ge=0)
    """Failed measurements tolerated; one more aborts the rollout."""
    inconclusive_limit: int = Field(default=0, ge=0)
    """Inconclusive measurements tolerated; one more pauses the rollout for a person."""
    consecutive_error_limit: int = Field(default=4, ge=0)
    """Consecutive errors (Prometheus unreachable, bad query) tolerated; one more aborts.
    An error is never a pass."""
    on_no_data: NoDataPolicy = "Inconclusive"
    """What an empty query result means."""
    min_sample_count: int = Field(default=0, ge=0)
    """Requests the new revision must have served in the wave before any verdict; below
    it a measurement is Inconclusive (low traffic is normal at the edge)."""
    sample_count_query: str = Field(
        default=(
            'sum(slmops_request_duration_seconds_count{namespace="{{namespace}}",'
            'slmops_io_rollout="{{rollout}}",slmops_io_revision="{{revision}}"})'
        ),
        max_length=8192,
    )
    """PromQL template for the number of requests served by the new revision."""
    metrics: list[MetricSpec] = Field(default_factory=list, max_length=20)
    """Checks; all must pass."""

    @model_validator(mode="after")
    def _metric_names_unique(self) -> AnalysisSpec:
        names = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError("metric names must be unique")
        return self


class RollbackSpec(ApiModel):
    """What happens when a wave fails."""

    automatic: bool = True
    """Return every touched node to the stable revision in one step, without waves or
    analysis; without it the rollout stays Degraded for a person to decide."""


class EdgeRolloutSpec(ApiModel):
    """The desired state of an EdgeRollout."""

    model: ModelReference
    """The model and revision to roll out."""
    fleet: FleetSpec
    """The nodes that serve it."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """How servers run on each node."""
    strategy: StrategySpec
    """Waves and their limits."""
    analysis: AnalysisSpec | None = None
    """Metric gates; without them waves advance on readiness alone."""
    paused: bool = False
    """Hold the rollout where it is (for GitOps; people use `slmops pause`)."""
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)
    """Rollback policy."""


RolloutPhase = Literal["Pending", "Progressing", "Paused", "Healthy", "Degraded", "RolledBack"]
WavePhase = Literal["Pending", "Progressing", "Analyzing", "Paused", "Succeeded", "Failed"]
MeasurementPhase = Literal["Successful", "Failed", "Inconclusive", "Error"]


class NodeAssignment(ApiModel):
    """Where a fleet node stands."""

    node: str
    """Node name."""
    variant: str | None = None
    """The variant it runs (none: no variant fits; see reason)."""
    hardware_class: str | None = None
    """The variant's hardware class."""
    wave: int | None = None
    """Wave index that switches it."""
    revision: str | None = None
    """Revision it is serving now."""
    state: Literal[
        "Unassigned", "Stable", "Staged", "Switching", "Updated", "Skipped", "RolledBack"
    ] = "Stable"
    """Unassigned (no variant fits), Stable, Staged (new revision pulled), Switching,
    Updated, Skipped (timed out or offline; it stays Skipped after the rollout ends until it
    is seen ready on the revision it should serve), RolledBack."""
    reason: str = ""
    """Why a node is Unassigned or Skipped (for Skipped: which revision it gets when it
    returns)."""
    switched_at: str | None = None
    """When the node was told to run the new revision (RFC 3339); its timeout counts from here."""


class Measurement(ApiModel):
    """One evaluation of one metric."""

    metric: str
    """Metric name."""
    wave: int
    """Wave index."""
    variant: str | None = None
    """Variant (hardware class) the value was measured on."""
    phase: MeasurementPhase
    """Successful, Failed, Inconclusive or Error."""
    value: float | None = None
    """This revision's value."""
    stable_value: float | None = None
    """The stable revision's value, for relative conditions."""
    message: str = ""
    """Why it is what it is (no data, too few samples, the error)."""
    at: str
    """When it was taken (RFC 3339)."""


class AbortReason(ApiModel):
    """Why the rollout aborted: enough to reproduce the verdict by hand."""

    metric: str
    """The metric that broke its limit (or 'deadline', 'error')."""
    wave: int
    """Wave index."""
    variant: str | None = None
    """Variant it was measured on."""
    query: str = ""
    """The resolved PromQL query."""
    stable_query: str | None = None
    """The resolved query for the stable revision, for relative conditions."""
    value: float | None = None
    """The value that failed."""
    stable_value: float | None = None
    """The stable value it was compared with."""
    condition: str = ""
    """The success condition that did not hold."""
    message: str = ""
    """The verdict in a sentence."""
    at: str = ""
    """When the decision was made (RFC 3339)."""


class WaveStatus(ApiModel):
    """Progress of one wave."""

    index: int
    """Position in spec.strategy.waves."""
    name: str
    """Wave name."""
    phase: WavePhase = "Pending"
    """Pending, Progressing, Analyzing, Paused, Succeeded or Failed."""
    nodes: list[str] = Field(default_factory=list)
    """Nodes this wave switches."""
    skipped_nodes: list[str] = Field(default_factory=list)
    """Nodes that timed out and were skipped."""
    started_at: str | None = None
    """When the wave started switching (RFC 3339)."""
    ready_at: str | None = None
    """When every non-skipped node was ready on the new revision."""
    finished_at: str | None = None
    """When the wave passed or failed."""
    successful: int = 0
    """Successful measurement rounds."""
    failed: int = 0
    """Failed measurement rounds."""
    inconclusive: int = 0
    """Inconclusive measurement rounds."""
    consecutive_errors: int = 0
    """Errors in a row."""
    last_measured_at: str | None = None
    """When the last round was taken."""


class SLMOpsAction(ApiModel):
    """A request from a person (slmops promote/pause/resume/abort), acknowledged."""

    id: str
    """The request id from the slmops.io/action annotation."""
    action: str
    """promote, promote-full, pause, resume, abort or retry."""
    at: str
    """When it was handled."""


class EdgeRolloutStatus(ApiModel):
    """The observed state of an EdgeRollout; the operator resumes from it after a restart."""

    observed_generation: int | None = None
    """The metadata.generation the status reflects."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Reconciling, Stalled (kstatus) and Progressing, Analysis."""
    phase: RolloutPhase = "Pending"
    """Pending, Progressing, Paused, Healthy, Degraded or RolledBack."""
    message: str = ""
    """What is happening, for people."""
    stable_revision: str | None = None
    """The revision the fleet falls back to."""
    canary_revision: str | None = None
    """The revision being rolled out."""
    current_wave: int | None = None
    """Index of the wave in progress."""
    paused_by: Literal["spec", "user", "analysis", "wave"] | None = None
    """Who paused it: spec.paused, slmops pause, an inconclusive analysis, or a wave pause."""
    pause_started_at: str | None = None
    """When the current pause began."""
    waves: list[WaveStatus] = Field(default_factory=list)
    """The plan and progress per wave."""
    nodes: list[NodeAssignment] = Field(default_factory=list)
    """Every fleet node: its variant, wave and state."""
    skipped_count: int = Field(default=0, ge=0)
    """Nodes in state Skipped: a rollout could not bring them to their revision (offline or
    not ready in time). Each stays Skipped, with the revision it gets in its reason, until it
    is seen ready on that revision."""
    measurements: list[Measurement] = Field(default_factory=list, max_length=200)
    """The most recent measurements (bounded per metric)."""
    abort: AbortReason | None = None
    """Why it aborted, when it did."""
    last_action: SLMOpsAction | None = None
    """The last request from a person that was applied."""
    last_progress_at: str | None = None
    """When the rollout last made progress (for the progress deadline)."""
    decision_at: str | None = None
    """When the last abort or promotion was decided."""
    rollback_completed_at: str | None = None
    """When every touched node was back on the stable revision."""


class EdgeRollout(ApiModel):
    """Roll a model revision out to an edge fleet in metric-gated waves."""

    api_version: Literal["slmops.io/v1alpha1"] = "slmops.io/v1alpha1"
    kind: Literal["EdgeRollout"] = "EdgeRollout"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: EdgeRolloutSpec
    status: EdgeRolloutStatus | None = None


WaveSpec.model_rebuild()
