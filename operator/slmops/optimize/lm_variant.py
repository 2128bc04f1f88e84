"""One language-model variant, start to finish: prune → export → evaluate against fp32 → decide.

This is what `slmops build` runs for a Hugging Face checkpoint. Packaging and pushing are the
caller's; everything here is local. The fp32 reference export is cached per source digest under
the work directory, so building several variants of one checkpoint in one place exports the
reference once; its speed, though, is measured again next to every variant.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmops.api.v1alpha1.slmmodel import EvaluationSpec, Variant
from slmops.domain.qualification import BudgetVerdict, LMBudgets, qualify
from slmops.optimize.contract import Reason
from slmops.optimize.demo_model import HELDOUT_FILENAME
from slmops.optimize.evaluation import (
    EvaluationError,
    HeldoutSet,
    QualityMeasurement,
    VariantEvaluation,
    evaluate_variant,
    measure_quality,
)
from slmops.optimize.genai_export import (
    GenaiExportError,
    GenaiExportOptions,
    export_options_from_recipe,
    export_with_genai_builder,
)
from slmops.optimize.pruning import PruningError, PruningReport, prune_checkpoint
from slmops.optimize.source import path_digest

REFERENCE_OPTIONS = GenaiExportOptions(precision="fp32", execution_provider="cpu")


class LMVariantError(RuntimeError):
    """The variant could not be built or evaluated; `reason` is a `contract.Reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class LMVariantResult:
    """A built, evaluated and judged variant; `model_dir` is what gets packaged."""

    variant: str
    model_dir: Path
    qualified: bool
    message: str
    verdicts: tuple[BudgetVerdict, ...]
    evaluation: VariantEvaluation
    options: GenaiExportOptions
    parameters: int
    pruning: PruningReport | None = None

    @property
    def sparsity(self) -> float | None:
        """Unstructured: share of zero weights in the decoder's linear layers; structured: share
        of MLP channels removed."""
        return None if self.pruning is None else self.pruning.achieved

    def measurements(self) -> dict[str, Any]:
        """Flat numbers in `BuildResult`'s field names (plus a few extra reference figures)."""
        evaluation = self.evaluation
        measured = evaluation.measurements()
        values: dict[str, Any] = {
            "format": "onnx-genai",
            "precision": self.options.precision,
            "execution_provider": self.options.execution_provider,
            "parameters": self.parameters,
            "size_bytes": evaluation.size_bytes,
            "reference_size_bytes": evaluation.reference_size_bytes,
            "compression_ratio": round(measured.compression_ratio, 3),
            "perplexity": round(evaluation.perplexity, 4),
            "reference_perplexity": round(evaluation.reference_perplexity, 4),
            "perplexity_delta_percent": round(measured.perplexity_delta_percent, 3),
            "next_token_agreement": round(evaluation.next_token_agreement, 4),
            "time_to_first_token_ms": round(evaluation.time_to_first_token_ms, 3),
            "tokens_per_second": round(evaluation.tokens_per_second, 2),
            "reference_time_to_first_token_ms": round(
                evaluation.reference_time_to_first_token_ms, 3
            ),
            "reference_tokens_per_second": round(evaluation.reference_tokens_per_second, 2),
            "speedup": round(measured.speedup, 3),
            "sparsity": None if self.sparsity is None else round(self.sparsity, 4),
            "measured_on": evaluation.measured_on,
        }
        if self.pruning is not None and self.pruning.pruned_compressed_bytes is not None:
            values["dense_compressed_bytes"] = self.pruning.dense_compressed_bytes
            values["pruned_compressed_bytes"] = self.pruning.pruned_compressed_bytes
        return values


def budgets_from_spec(spec: EvaluationSpec) -> LMBudgets:
    return LMBudgets(
        max_perplexity_increase_percent=spec.max_perplexity_increase_percent,
        min_speedup=spec.min_speedup,
        min_next_token_agreement=spec.min_next_token_agreement,
        max_size_mib=spec.max_size_mi_b,
    )


def heldout_text_for(checkpoint_dir: Path, spec: EvaluationSpec) -> str:
    if spec.heldout_text:
        return spec.heldout_text
    bundled = checkpoint_dir / HELDOUT_FILENAME
    if bundled.is_file():
        return bundled.read_text(encoding="utf-8")
    raise LMVariantError(
        Reason.INVALID_REQUEST,
        f"no held-out text to measure perplexity: set spec.evaluation.heldoutText, or ship "
        f"{HELDOUT_FILENAME} with the checkpoint",
    )


def checkpoint_parameters(checkpoint_dir: Path) -> int:
    """Parameter count from the safetensors headers (no weights are loaded)."""
    total = 0
    for file in sorted(checkpoint_dir.glob("*.safetensors")):
        with file.open("rb") as stream:
            header_length = int.from_bytes(stream.read(8), "little")
            header = json.loads(stream.read(header_length))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            total += count
    return total


def reference_export(checkpoint_dir: Path, work_dir: Path) -> Path:
    """The fp32 CPU export of the (unpruned) checkpoint, cached per source digest."""
    cached = work_dir / "reference" / path_digest(checkpoint_dir)[:16] / "fp32-cpu"
    if (cached / "model.onnx").is_file():
        return cached
    try:
        export_with_genai_builder(checkpoint_dir, cached, REFERENCE_OPTIONS)
    except GenaiExportError as exc:
        raise LMVariantError(Reason.BUILD_FAILED, f"fp32 reference export failed: {exc}") from exc
    return cached


def build_lm_variant(
    checkpoint_dir: Path,
    variant: Variant,
    evaluation_spec: EvaluationSpec,
    work_dir: Path,
    *,
    reference_quality: QualityMeasurement | None = None,
) -> LMVariantResult:
    """Build `variant` of the checkpoint, evaluate it against fp32 here, and judge the budgets.

    Raises `LMVariantError` (with a `contract.Reason`) when the recipe cannot be built or the
    result cannot be evaluated; a variant that builds but misses a budget is returned with
    `qualified=False`.
    """
    recipe = variant.optimize
    options = export_options_from_recipe(recipe)
    heldout_text = heldout_text_for(checkpoint_dir, evaluation_spec)
    variant_root = work_dir / "variants" / variant.name
    if variant_root.exists():
        shutil.rmtree(variant_root)
    variant_root.mkdir(parents=True)

    # The reference comes first: it is cached, and its tokenizer checks the held-out text
    # before minutes go into pruning and exporting the variant.
    reference_dir = reference_export(checkpoint_dir, work_dir)
    try:
        heldout = HeldoutSet.from_text(reference_dir, heldout_text)
    except EvaluationError as exc:
        raise LMVariantError(Reason.INVALID_REQUEST, f"spec.evaluation.heldoutText: {exc}") from exc

    source = checkpoint_dir
    pruning: PruningReport | None = None
    if recipe.pruning is not None:
        try:
            pruning = prune_checkpoint(
                checkpoint_dir,
                variant_root / "pruned-checkpoint",
                recipe.pruning.method,
                mlp_channel_fraction=recipe.pruning.mlp_channel_fraction,
                sparsity=recipe.pruning.sparsity,
            )
        except PruningError as exc:
            raise LMVariantError(Reason.UNSUPPORTED_RECIPE, str(exc)) from exc
        source = variant_root / "pruned-checkpoint"

    model_dir = variant_root / "model"
    try:
        export_with_genai_builder(source, model_dir, options)
    except GenaiExportError as exc:
        raise LMVariantError(Reason.BUILD_FAILED, str(exc)) from exc

    try:
        if reference_quality is None:
            reference_quality = measure_quality(reference_dir, heldout.windows)
        evaluation = evaluate_variant(
            model_dir,
            reference_dir,
            heldout,
            max_new_tokens=evaluation_spec.max_new_tokens,
            repeats=evaluation_spec.repeats,
            reference_quality=reference_quality,
        )
    except EvaluationError as exc:
        raise LMVariantError(
            Reason.BUILD_FAILED,
            f"{options.describe()} variant could not be evaluated on this node: {exc}",
        ) from exc

    decision = qualify(evaluation.measurements(), budgets_from_spec(evaluation_spec))
    message = decision.message
    if pruning is not None and pruning.method == "unstructured":
        # Say plainly what unstructured sparsity buys on this runtime, so nobody reads the
        # sparsity figure as a speed or size promise.
        message += (
            f"; {pruning.achieved:.0%} of decoder linear weights are zero: the weights file "
            f"compresses to {pruning.pruned_compressed_bytes} bytes vs "
            f"{pruning.dense_compressed_bytes} dense, the ONNX export stays dense (no speedup "
            "on CPU)"
        )
    return LMVariantResult(
        variant=variant.name,
        model_dir=model_dir,
        qualified=decision.qualified,
        message=message,
        verdicts=decision.verdicts,
        evaluation=evaluation,
        options=options,
        parameters=checkpoint_parameters(source),
        pruning=pruning,
    )
