"""SLMModel: one model and how to make it small.

The spec names a checkpoint (verified by sha256), the variants to build from it (each an
optimization recipe plus the hardware it targets), the evaluation budgets a variant must
meet to be deployable, and where the built artifacts go. The status records the content
revision and, per variant, what was built, where it was measured and how it did.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from slmops.api.v1alpha1.common import (
    DNS_LABEL,
    ApiModel,
    Condition,
    LabelSelector,
    ResourceRequirements,
    SecretReference,
)

SHA256_HEX = r"^[a-f0-9]{64}$"

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
ExecutionProvider = Literal["cpu", "cuda", "dml", "webgpu"]


class ModelSource(ApiModel):
    """Where the checkpoint is and how to verify it."""

    uri: str = Field(pattern=r"^(oci|https|file)://.+", max_length=2048)
    """oci://REGISTRY/REPO@sha256:…, https://… or file://… A Hugging Face-layout checkpoint
    (a directory, or a .tar/.tar.gz of one) for language models, or an .onnx file."""
    sha256: str = Field(pattern=SHA256_HEX)
    """Expected sha256 (64 lowercase hex). For a file, of its bytes; for a directory, of the
    sorted `sha256sum`-style listing of its files (`slmops model digest DIR` prints it); for
    oci://, the manifest digest. Verified before anything uses the source."""
    format: Literal["huggingface", "onnx"] = "huggingface"
    """huggingface: a checkpoint exported with onnxruntime-genai's model builder; onnx: a
    plain ONNX model optimized with onnxruntime.quantization."""
    task: Literal["text-generation", "feature-extraction", "other"] = "text-generation"
    """What the model does; decides how it is evaluated and served."""


# What onnxruntime-genai 0.18's model builder accepts as `algo_config` (it dropped "hqq"; the
# schema refuses it at the apiserver rather than a build failing minutes later).
Int4Algorithm = Literal["default", "rtn", "k_quant_mixed", "k_quant_last"]


class Int4Options(ApiModel):
    """Block-wise int4 weight-only quantization (MatMulNBits)."""

    block_size: Literal[16, 32, 64, 128, 256] = 32
    """Weights per quantization block; smaller blocks are more accurate and larger."""
    accuracy_level: int = Field(default=4, ge=0, le=4)
    """Compute type of the int4 matmul: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 (fastest on
    CPUs with VNNI)."""
    algorithm: Int4Algorithm = "default"
    """Quantization algorithm offered by onnxruntime-genai's model builder."""


class Int8Options(ApiModel):
    """int8 quantization of a plain ONNX model (onnxruntime.quantization)."""

    mode: Literal["dynamic", "static"] = "dynamic"
    """dynamic: activations quantized at run time (best on CPU); static: QDQ with calibration
    (what NPUs need)."""
    per_channel: bool = True
    """One scale per output channel: more accurate, slightly larger."""
    calibration_samples: int = Field(default=32, ge=1, le=10000)
    """Inputs used to calibrate activation ranges (static mode only)."""


class PruningRecipe(ApiModel):
    """Pruning applied to the checkpoint before export."""

    method: Literal["structured", "unstructured"]
    """structured removes whole MLP channels (faster and smaller); unstructured zeroes the
    smallest weights (smaller when compressed, not faster on CPU)."""
    mlp_channel_fraction: float | None = Field(default=None, gt=0, lt=1)
    """structured: fraction of MLP intermediate channels removed in every layer."""
    sparsity: float | None = Field(default=None, gt=0, lt=1)
    """unstructured: fraction of linear-layer weights set to zero."""

    @model_validator(mode="after")
    def _amount_matches_method(self) -> PruningRecipe:
        if self.method == "structured" and self.mlp_channel_fraction is None:
            raise ValueError("structured pruning needs mlpChannelFraction")
        if self.method == "unstructured" and self.sparsity is None:
            raise ValueError("unstructured pruning needs sparsity")
        return self


class OptimizeRecipe(ApiModel):
    """How one variant is made from the source."""

    precision: Precision = "int4"
    """Weight precision of the exported model."""
    execution_provider: ExecutionProvider = "cpu"
    """The onnxruntime execution provider the model is optimized for and served with."""
    int4: Int4Options | None = None
    """Options for precision int4."""
    int8: Int8Options | None = None
    """Options for precision int8 on plain ONNX models."""
    graph_optimization_level: Literal["disabled", "basic", "extended", "all"] = "all"
    """onnxruntime graph optimizations applied offline (plain ONNX models)."""
    pruning: PruningRecipe | None = None
    """Optional pruning before export."""


class HardwareTarget(ApiModel):
    """Which nodes a variant is for, and what it needs there."""

    node_selector: LabelSelector
    """Node hardware labels the variant needs, e.g. kubernetes.io/arch=arm64,
    feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI=true or nvidia.com/gpu.present=true."""
    hardware_class: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    """A short name for this class of hardware (pod label, dashboards); defaults to the
    variant name."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """Resources of the serving pod on these nodes."""
    runtime_overhead_mi_b: int = Field(default=256, ge=0, alias="runtimeOverheadMiB")
    """Memory the server needs beyond the model file, in MiB; a node whose allocatable
    memory cannot hold model + overhead is not given this variant."""
    gpu_memory_mi_b: int | None = Field(default=None, ge=1, alias="gpuMemoryMiB")
    """GPU memory the variant needs in MiB, compared with the nvidia.com/gpu.memory label."""


class Variant(ApiModel):
    """A named optimization recipe for one class of hardware."""

    name: str = Field(pattern=DNS_LABEL, max_length=40)
    """Variant name (a DNS label): used in object names, labels and status."""
    optimize: OptimizeRecipe = Field(default_factory=OptimizeRecipe)
    """How the variant is built."""
    target: HardwareTarget
    """The nodes it is for. A node gets the first variant, in list order, whose target
    matches its labels and fits."""


class EvaluationSpec(ApiModel):
    """Budgets a variant must meet against the fp32 reference, measured on its hardware."""

    heldout_text: str | None = Field(default=None, max_length=262144)
    """Held-out text for perplexity and next-token agreement; defaults to the text shipped
    with the demo model."""
    max_perplexity_increase_percent: float = Field(default=5.0, ge=0)
    """Largest allowed held-out perplexity increase over fp32, in percent."""
    min_speedup: float = Field(default=0.0, ge=0)
    """Smallest allowed generation tokens/s of the variant divided by fp32's (0: no limit)."""
    min_next_token_agreement: float | None = Field(default=None, ge=0, le=1)
    """Smallest allowed share of held-out positions where the variant's greedy next token
    equals fp32's."""
    max_size_mi_b: float | None = Field(default=None, gt=0, alias="maxSizeMiB")
    """Largest allowed model size on disk in MiB."""
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Tokens generated per timing run."""
    repeats: int = Field(default=5, ge=1, le=100)
    """Timing runs; medians are reported."""


class ImageSpec(ApiModel):
    """Where built artifacts are pushed and how they are pulled."""

    registry: str = Field(pattern=r"^[a-zA-Z0-9.-]+(:[0-9]+)?$")
    """Registry host[:port], e.g. registry.example.com or 127.0.0.1:5000."""
    repository: str = Field(pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$", max_length=255)
    """Repository for this model's artifacts, e.g. models/demo; tags are variant-revision."""
    insecure: bool = False
    """Use plain HTTP (only for registries on loopback or in a lab)."""
    push_secret_ref: SecretReference | None = None
    """A kubernetes.io/dockerconfigjson Secret the build Jobs push with."""
    pull_secret_ref: SecretReference | None = None
    """A kubernetes.io/dockerconfigjson Secret model servers pull with."""
    runtime_base_image: str | None = Field(default=None, max_length=1024)
    """If set (REGISTRY/REPO@sha256:… or :tag in the same registry), each variant is also
    pushed as a runnable image: these base layers plus one model layer."""


class BuildSpec(ApiModel):
    """How build Jobs run."""

    active_deadline_seconds: int = Field(default=1800, ge=60)
    """A build Job running longer than this fails."""
    backoff_limit: int = Field(default=2, ge=0, le=10)
    """Retries of a failed build pod before the variant is Failed."""
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "6Gi"}
        )
    )
    """Resources of the build pod."""


class SLMModelSpec(ApiModel):
    """The desired state of an SLMModel."""

    source: ModelSource
    """The checkpoint every variant is built from."""
    variants: list[Variant] = Field(min_length=1, max_length=16)
    """Variants to build, in order of preference for a node."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Budgets that decide whether a variant is Qualified or Rejected."""
    image: ImageSpec
    """Where artifacts are pushed."""
    build: BuildSpec = Field(default_factory=BuildSpec)
    """How build Jobs run."""

    @model_validator(mode="after")
    def _variant_names_unique(self) -> SLMModelSpec:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
        return self


VariantPhase = Literal["Pending", "Building", "Qualified", "Rejected", "Failed"]


class VariantStatus(ApiModel):
    """What became of one variant in the current revision."""

    name: str
    """The variant's name."""
    phase: VariantPhase = "Pending"
    """Pending, Building, Qualified (deployable), Rejected (broke a budget) or Failed."""
    reason: str = ""
    """CamelCase reason for the phase."""
    message: str = ""
    """What happened, with the numbers."""
    revision: str = ""
    """The model revision this variant was built for."""
    build_job: str | None = None
    """Name of the build Job."""
    artifact: str | None = None
    """The pushed ModelPack artifact: REGISTRY/REPO@sha256:…"""
    digest: str | None = None
    """Manifest digest of the artifact."""
    image: str | None = None
    """The runnable image (base + model layer), if one was built."""
    size_bytes: int | None = None
    """Model size on disk."""
    compression_ratio: float | None = None
    """fp32 size divided by this variant's size."""
    perplexity: float | None = None
    """Held-out perplexity of the variant."""
    reference_perplexity: float | None = None
    """Held-out perplexity of fp32 measured in the same build."""
    perplexity_delta_percent: float | None = None
    """Perplexity increase over fp32 in percent."""
    next_token_agreement: float | None = None
    """Share of held-out positions where greedy next tokens match fp32."""
    time_to_first_token_ms: float | None = None
    """Median time to first token in milliseconds."""
    tokens_per_second: float | None = None
    """Median generation throughput."""
    speedup: float | None = None
    """tokens/s divided by fp32's tokens/s measured in the same build."""
    sparsity: float | None = None
    """Share of zero weights, for pruned variants."""
    measured_on: str | None = None
    """The node and CPU the measurements were taken on."""
    finished_at: str | None = None
    """When the build finished (RFC 3339)."""


class RevisionArtifacts(ApiModel):
    """The qualified artifacts of one revision, kept so older revisions stay addressable."""

    revision: str
    """Content revision."""
    variants: dict[str, str] = Field(default_factory=dict)
    """Variant name → artifact reference (REGISTRY/REPO@sha256:…)."""
    sizes: dict[str, int] = Field(default_factory=dict)
    """Variant name → model size in bytes (for placement fit checks)."""


class SLMModelStatus(ApiModel):
    """The observed state of an SLMModel."""

    observed_generation: int | None = None
    """The metadata.generation the status reflects."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Reconciling, Stalled, SourceVerified, VariantsBuilt, VariantsQualified."""
    phase: Literal["Pending", "Building", "Ready", "Failed"] = "Pending"
    """Summary for people; conditions are the contract."""
    revision: str | None = None
    """Content revision: a hash of the source digest and the recipes."""
    variants: list[VariantStatus] = Field(default_factory=list)
    """Per-variant results for the current revision."""
    revisions: list[RevisionArtifacts] = Field(default_factory=list, max_length=20)
    """Qualified artifacts of recent revisions, newest first (for rollbacks and pins)."""


class SLMModel(ApiModel):
    """A small language model and the optimized variants to build from it."""

    api_version: Literal["slmops.io/v1alpha1"] = "slmops.io/v1alpha1"
    kind: Literal["SLMModel"] = "SLMModel"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: SLMModelSpec
    status: SLMModelStatus | None = None
