"""`slmops build`: fetch → verify → optimize → evaluate → package → push, for one variant.

The order is chosen so that the expensive part runs only when it has to:
1. the registry is asked first whether `<variant>-<revision>` exists; if it does, the earlier
   build's results are read from its ModelPack config and reported, and nothing is rebuilt
   (the revision already pins the source digest and the recipe). Wrong credentials or an
   unreachable registry also show up here, before an hour of work.
2. the source is fetched and its sha256 verified; a mismatch stops everything.
3. language models go through onnxruntime-genai's builder (slmops.optimize.lm_variant),
   plain ONNX models through onnxruntime.quantization (slmops.optimize.onnx_quantize); both
   are evaluated against fp32 on this machine and judged against the budgets.
4. only a Qualified variant is pushed: the ModelPack artifact, then the runnable image.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slmops.adapters.oci import (
    Manifest,
    NotFoundError,
    Reference,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
)
from slmops.api.v1alpha1.slmmodel import EvaluationSpec, OptimizeRecipe, Variant
from slmops.optimize.contract import (
    PERMANENT_REASONS,
    BudgetVerdict,
    BuildRequest,
    BuildResult,
    ExitCode,
    Reason,
)
from slmops.optimize.evaluation import measured_on
from slmops.optimize.packaging import (
    EVALUATION_KEY,
    ModelMetadata,
    build_modelpack,
    push_modelpack,
    push_runnable_image,
    read_model_config,
)
from slmops.optimize.source import (
    FetchedSource,
    SourceError,
    SourceUnreachableError,
    SourceVerificationError,
    fetch_source,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024

# Results that describe the model and its measurements; stored in the ModelPack config so
# that a later build of the same revision can report them without rebuilding.
_MEASUREMENT_FIELDS = (
    "format",
    "precision",
    "size_bytes",
    "reference_size_bytes",
    "compression_ratio",
    "perplexity",
    "reference_perplexity",
    "perplexity_delta_percent",
    "next_token_agreement",
    "output_cosine",
    "max_abs_diff",
    "time_to_first_token_ms",
    "tokens_per_second",
    "latency_ms",
    "reference_latency_ms",
    "speedup",
    "sparsity",
    "measured_on",
)


class BuildStoppedError(Exception):
    """A build stopped; `reason` is one of contract.Reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def exit_code_for(result: BuildResult) -> int:
    if result.phase != "Failed":
        return ExitCode.DECIDED
    return ExitCode.PERMANENT if result.reason in PERMANENT_REASONS else ExitCode.RETRYABLE


@dataclass(frozen=True)
class VariantOutcome:
    """A built and evaluated variant, before packaging."""

    model_dir: Path
    qualified: bool
    message: str
    budgets: list[BudgetVerdict]
    measurements: dict[str, Any]
    metadata: ModelMetadata


# --- plain ONNX models ---------------------------------------------------------------------


def _onnx_model_file(source: Path) -> Path:
    if source.is_file():
        return source
    candidates = sorted(source.rglob("*.onnx"))
    if len(candidates) != 1:
        raise BuildStoppedError(
            Reason.INVALID_REQUEST,
            f"an onnx source directory must hold exactly one .onnx file, found {len(candidates)}",
        )
    return candidates[0]


def onnx_budgets(
    evaluation: EvaluationSpec, task: str, measurements: Mapping[str, Any]
) -> list[BudgetVerdict]:
    """Budgets that apply to a plain ONNX model. Perplexity has no meaning for an arbitrary
    ONNX model; `minNextTokenAgreement` is checked against argmax agreement for
    text-generation models and against mean output cosine similarity otherwise."""
    verdicts: list[BudgetVerdict] = []
    size_mib = measurements["size_bytes"] / MIB
    if evaluation.max_size_mi_b is not None:
        limit = evaluation.max_size_mi_b
        verdicts.append(
            BudgetVerdict(
                name="maxSizeMiB",
                passed=size_mib <= limit,
                limit=limit,
                actual=round(size_mib, 2),
                message=f"size {size_mib:.1f} MiB {'<=' if size_mib <= limit else '>'} {limit} MiB",
            )
        )
    if evaluation.min_speedup > 0:
        speedup = measurements["speedup"]
        limit = evaluation.min_speedup
        verdicts.append(
            BudgetVerdict(
                name="minSpeedup",
                passed=speedup >= limit,
                limit=limit,
                actual=round(speedup, 3),
                message=f"speedup {speedup:.2f}x {'>=' if speedup >= limit else '<'} {limit}x",
            )
        )
    if evaluation.min_next_token_agreement is not None:
        generative = task == "text-generation"
        agreement = (
            measurements["next_token_agreement"] if generative else measurements["output_cosine"]
        )
        limit = evaluation.min_next_token_agreement
        label = "next-token agreement" if generative else "output cosine similarity"
        verdicts.append(
            BudgetVerdict(
                name="minNextTokenAgreement",
                passed=agreement >= limit,
                limit=limit,
                actual=round(agreement, 4),
                message=f"{label} {agreement:.3f} {'>=' if agreement >= limit else '<'} {limit}",
            )
        )
    return verdicts


def _quantization_label(recipe: OptimizeRecipe) -> str:
    if recipe.precision == "int8":
        options = recipe.int8
        mode = options.mode if options else "dynamic"
        return f"int8-{mode}" + ("-qdq" if mode == "static" else "")
    if recipe.precision == "int4":
        block = recipe.int4.block_size if recipe.int4 else 32
        return f"int4-matmulnbits-block{block}"
    return "none"


def build_onnx_variant(
    request: BuildRequest, variant: Variant, source: FetchedSource, work_dir: Path
) -> VariantOutcome:
    from slmops.optimize.onnx_quantize import (  # onnxruntime loads only when needed
        OnnxRecipeError,
        check_model,
        evaluate_onnx,
        optimize_onnx,
        parameter_count,
        provider_for,
        sample_inputs,
    )

    recipe = variant.optimize
    model_file = _onnx_model_file(source.path)
    try:
        check_model(model_file)
    except Exception as exc:
        raise BuildStoppedError(
            Reason.INVALID_SOURCE,
            f"source {request.source.uri} is not a loadable ONNX model: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
        ) from exc
    out_dir = work_dir / "variant"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        provider = provider_for(recipe)
        calibration_count = recipe.int8.calibration_samples if recipe.int8 else 32
        samples = sample_inputs(model_file, max(8, min(calibration_count, 64)))
        model_path = optimize_onnx(model_file, out_dir, recipe, calibration=samples)
        evaluation = evaluate_onnx(
            model_file,
            model_path,
            samples[:8],
            repeats=request.evaluation.repeats * 4,
            provider=provider,
        )
    except OnnxRecipeError as exc:
        raise BuildStoppedError(Reason.UNSUPPORTED_RECIPE, str(exc)) from exc
    if source.path.is_dir():
        # Tokenizers, configs and docs travel with the model.
        for extra in sorted(source.path.rglob("*")):
            relative = extra.relative_to(source.path)
            if extra.is_file() and extra.suffix != ".onnx" and not extra.name.endswith(".data"):
                (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(extra, out_dir / relative)
    measurements: dict[str, Any] = {
        "format": "onnx",
        "precision": recipe.precision,
        "size_bytes": evaluation.size_bytes,
        "reference_size_bytes": evaluation.reference_size_bytes,
        "compression_ratio": round(evaluation.compression_ratio, 3),
        "output_cosine": round(evaluation.mean_cosine, 5),
        "next_token_agreement": round(evaluation.argmax_agreement, 4),
        "max_abs_diff": round(evaluation.max_abs_diff, 5),
        "latency_ms": round(evaluation.latency_ms, 3),
        "reference_latency_ms": round(evaluation.reference_latency_ms, 3),
        "speedup": round(evaluation.speedup, 3),
        "measured_on": measured_on(),
    }
    budgets = onnx_budgets(request.evaluation, request.source.task, measurements)
    failed = [b for b in budgets if not b.passed]
    summary = (
        f"{recipe.precision} onnx: {evaluation.size_bytes / MIB:.1f} MiB "
        f"({evaluation.compression_ratio:.2f}x smaller), "
        f"{evaluation.speedup:.2f}x latency speedup, "
        f"output cosine {evaluation.mean_cosine:.4f}"
    )
    message = "; ".join(b.message for b in failed) if failed else summary + "; all budgets met"
    metadata = ModelMetadata(
        name=f"{request.model}-{variant.name}",
        version=request.revision,
        format="onnx",
        precision=recipe.precision,
        quantization=_quantization_label(recipe),
        execution_provider=recipe.execution_provider,
        architecture="onnx",
        parameters=parameter_count(model_file),
        source=request.source.uri,
        source_digest=f"sha256:{source.sha256}",
    )
    return VariantOutcome(out_dir, not failed, message, budgets, measurements, metadata)


# --- language models -----------------------------------------------------------------------


def build_language_model_variant(
    request: BuildRequest, variant: Variant, source: FetchedSource, work_dir: Path
) -> VariantOutcome:
    from slmops.optimize.lm_variant import LMVariantError, build_lm_variant

    if not source.path.is_dir():
        raise BuildStoppedError(
            Reason.INVALID_REQUEST,
            f"a huggingface source must be a checkpoint directory (or an archive of one), "
            f"got the file {source.path.name}",
        )
    try:
        result = build_lm_variant(source.path, variant, request.evaluation, work_dir)
    except LMVariantError as exc:
        raise BuildStoppedError(exc.reason, exc.message) from exc
    measurements = {
        key: value
        for key, value in result.measurements().items()
        if key in _MEASUREMENT_FIELDS and value is not None
    }
    measurements.setdefault("format", "onnx-genai")
    measurements.setdefault("precision", variant.optimize.precision)
    recipe = variant.optimize
    quantization = _quantization_label(recipe) if recipe.precision in ("int4", "int8") else "none"
    if recipe.pruning is not None:
        quantization += f"+pruned-{recipe.pruning.method}"
    metadata = ModelMetadata(
        name=f"{request.model}-{variant.name}",
        version=request.revision,
        format="onnx-genai",
        precision=recipe.precision,
        quantization=quantization,
        execution_provider=recipe.execution_provider,
        family="llama",
        parameters=result.parameters,
        source=request.source.uri,
        source_digest=f"sha256:{source.sha256}",
    )
    budgets = [
        BudgetVerdict(
            name=verdict.name,
            passed=verdict.passed,
            limit=verdict.limit,
            actual=verdict.actual,
            message=verdict.message,
        )
        for verdict in result.verdicts
    ]
    return VariantOutcome(
        result.model_dir, result.qualified, result.message, budgets, measurements, metadata
    )


# --- orchestration -------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _registry_failure(exc: RegistryError) -> BuildStoppedError:
    if isinstance(exc, RegistryAuthError):
        return BuildStoppedError(Reason.REGISTRY_AUTH_FAILED, str(exc))
    if isinstance(exc, RegistryUnavailableError):
        return BuildStoppedError(Reason.REGISTRY_UNAVAILABLE, str(exc))
    return BuildStoppedError(Reason.BUILD_FAILED, str(exc))


def _missing_blobs(client: RegistryClient, repository: str, manifest: Manifest) -> list[str]:
    """The blobs a manifest names that the repository does not have (none, normally: the
    registry refuses a manifest whose blobs are missing, but blobs can be deleted later)."""
    return [
        d.digest
        for d in (manifest.config, *manifest.layers)
        if not client.blob_exists(repository, d.digest)
    ]


def _existing_result(
    client: RegistryClient, request: BuildRequest, variant: Variant, tag: str
) -> BuildResult | None:
    """The result of an earlier build of this exact revision, if all of it is in the
    registry: its artifact with every blob, and its runnable image when one is wanted. An
    earlier build stopped between two pushes (the registry went away) is built again rather
    than reported with a part missing."""
    image = request.image
    digest = client.manifest_digest(image.repository, tag)
    if digest is None:
        return None
    manifest = client.get_manifest(image.repository, digest)
    missing = _missing_blobs(client, image.repository, manifest)
    if missing:
        log.warning("%s:%s lacks blobs %s; building it again", image.repository, tag, missing)
        return None
    config = read_model_config(client, image.repository, manifest)
    stored = config.get(EVALUATION_KEY, {})
    measurements = {k: v for k, v in stored.items() if k in _MEASUREMENT_FIELDS}
    budgets = [BudgetVerdict.model_validate(b) for b in stored.get("budgets", [])]
    runnable: str | None = None
    runnable_digest: str | None = None
    if image.runtime_base_image:
        runnable_digest = client.manifest_digest(image.repository, f"{tag}-image")
        if runnable_digest is None:
            log.info("%s:%s has no runnable image yet; building it again", image.repository, tag)
            return None
        runnable_manifest = client.get_manifest(image.repository, runnable_digest)
        if _missing_blobs(client, image.repository, runnable_manifest):
            return None
        runnable = f"{image.registry}/{image.repository}@{runnable_digest}"
    return BuildResult(
        variant=variant.name,
        revision=request.revision,
        phase="Qualified",
        reason=Reason.ALREADY_BUILT,
        message=(
            f"artifact {image.registry}/{image.repository}:{tag} already exists for revision "
            f"{request.revision}; nothing rebuilt, results are those of the earlier build"
        ),
        artifact=f"{image.registry}/{image.repository}@{digest}",
        digest=digest,
        image=runnable,
        image_digest=runnable_digest,
        skipped=True,
        source_sha256=request.source.sha256,
        budgets=budgets,
        finished_at=_now(),
        **measurements,
    )


ClientFactory = Callable[[BuildRequest], RegistryClient]


def default_client(request: BuildRequest) -> RegistryClient:
    return RegistryClient.from_environment(request.image.registry, insecure=request.image.insecure)


def _fetch(request: BuildRequest, work_dir: Path) -> FetchedSource:
    insecure = frozenset({request.image.registry}) if request.image.insecure else frozenset()
    try:
        return fetch_source(
            request.source.uri,
            request.source.sha256,
            work_dir / "source",
            insecure_registries=insecure,
        )
    except SourceVerificationError as exc:
        raise BuildStoppedError(Reason.SOURCE_DIGEST_MISMATCH, str(exc)) from exc
    except SourceUnreachableError as exc:
        raise BuildStoppedError(Reason.SOURCE_UNREACHABLE, str(exc)) from exc
    except SourceError as exc:
        raise BuildStoppedError(Reason.SOURCE_UNAVAILABLE, str(exc)) from exc


def run_build(
    request: BuildRequest,
    work_dir: Path,
    *,
    verify_only: bool = False,
    client_factory: ClientFactory = default_client,
) -> BuildResult:
    """Run one build; never raises for expected failures, it returns a Failed result."""
    variant_name = request.variant.name if request.variant else ""
    base = {"variant": variant_name, "revision": request.revision}
    try:
        return _run(request, work_dir, verify_only, client_factory)
    except BuildStoppedError as failure:
        log.error("build failed: %s: %s", failure.reason, failure)
        return BuildResult(
            **base,
            phase="Failed",
            reason=failure.reason,
            message=str(failure),
            source_sha256=request.source.sha256,
            finished_at=_now(),
        )
    except Exception as exc:
        if not isinstance(exc, RegistryError):
            # Unexpected: still a result the controller can read, and the trace in the log.
            log.exception("build crashed")
            return BuildResult(
                **base,
                phase="Failed",
                reason=Reason.BUILD_FAILED,
                message=f"build crashed: {type(exc).__name__}: {str(exc)[:500]}",
                finished_at=_now(),
            )
        stopped = _registry_failure(exc)
        return BuildResult(
            **base,
            phase="Failed",
            reason=stopped.reason,
            message=str(stopped),
            finished_at=_now(),
        )


def _run(
    request: BuildRequest, work_dir: Path, verify_only: bool, client_factory: ClientFactory
) -> BuildResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    if verify_only:
        source = _fetch(request, work_dir)
        return BuildResult(
            variant=request.variant.name if request.variant else "",
            revision=request.revision,
            phase="Verified",
            reason=Reason.SOURCE_VERIFIED,
            message=f"source {request.source.uri} matches sha256 {source.sha256}",
            source_sha256=source.sha256,
            finished_at=_now(),
        )
    variant = request.variant
    if variant is None:
        raise BuildStoppedError(Reason.INVALID_REQUEST, "the build request names no variant")
    tag = request.tag()
    with client_factory(request) as client:
        try:
            client.ping()
            existing = _existing_result(client, request, variant, tag)
        except NotFoundError:
            existing = None
        except RegistryError as exc:
            raise _registry_failure(exc) from exc
        if existing is not None:
            return existing

        source = _fetch(request, work_dir)
        builder = (
            build_onnx_variant if request.source.format == "onnx" else build_language_model_variant
        )
        outcome = builder(request, variant, source, work_dir / "build")
        result_fields: dict[str, Any] = {
            "variant": variant.name,
            "revision": request.revision,
            "source_sha256": source.sha256,
            "budgets": outcome.budgets,
            **outcome.measurements,
        }
        if not outcome.qualified:
            return BuildResult(
                **result_fields,
                phase="Rejected",
                reason=Reason.BUDGET_EXCEEDED,
                message=outcome.message + "; not pushed",
                finished_at=_now(),
            )
        stored = {
            **outcome.measurements,
            "budgets": [b.model_dump(mode="json", by_alias=True) for b in outcome.budgets],
        }
        metadata = dataclasses.replace(outcome.metadata, evaluation=stored)
        pack = build_modelpack(outcome.model_dir, metadata)
        try:
            digest = push_modelpack(client, request.image.repository, pack, tag)
            image_ref: str | None = None
            image_digest: str | None = None
            if request.image.runtime_base_image:
                runnable = push_runnable_image(
                    client,
                    repository=request.image.repository,
                    tag=f"{tag}-image",
                    base=_base_reference(request),
                    model_dir=outcome.model_dir,
                    model_name=f"{request.model}-{variant.name}",
                    work_dir=work_dir,
                )
                image_digest = runnable.digest
                image_ref = f"{request.image.registry}/{request.image.repository}@{image_digest}"
        except RegistryError as exc:
            raise _registry_failure(exc) from exc
        return BuildResult(
            **result_fields,
            phase="Qualified",
            reason=Reason.BUDGETS_MET,
            message=outcome.message,
            artifact=f"{request.image.registry}/{request.image.repository}@{digest}",
            digest=digest,
            image=image_ref,
            image_digest=image_digest,
            finished_at=_now(),
        )


def _base_reference(request: BuildRequest) -> Reference:
    """runtimeBaseImage as a reference; a bare REPO[:tag|@digest] means the model's registry."""
    text = request.image.runtime_base_image or ""
    first = text.split("/", 1)[0]
    if "/" not in text or not ("." in first or ":" in first or first == "localhost"):
        text = f"{request.image.registry}/{text}"
    try:
        return Reference.parse(text)
    except RegistryError as exc:
        raise BuildStoppedError(Reason.INVALID_REQUEST, f"runtimeBaseImage: {exc}") from exc
