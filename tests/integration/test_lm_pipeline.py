"""The language-model half of the build, on the real demo model: onnxruntime-genai's builder,
onnxruntime, og.Generator, real pruning. No fakes.

The demo model is cached under ~/.cache/slmops/demo-model/; the first run on a fresh machine
trains it (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from slmops.api.v1alpha1.slmmodel import EvaluationSpec, Variant
from slmops.optimize.contract import Reason
from slmops.optimize.demo_model import (
    HELDOUT_FILENAME,
    TRAINING_REPORT_FILENAME,
    ensure_demo_model,
    read_training_report,
)
from slmops.optimize.evaluation import HeldoutSet, measure_quality, tokenize
from slmops.optimize.genai_export import (
    GenaiExportError,
    GenaiExportOptions,
    export_with_genai_builder,
)
from slmops.optimize.lm_variant import LMVariantError, LMVariantResult, build_lm_variant
from slmops.optimize.source import path_digest

pytestmark = pytest.mark.integration

# Small but real: enough generated tokens for a stable tokens/s, few enough to keep CI short.
FAST_EVALUATION: dict[str, Any] = {"maxNewTokens": 32, "repeats": 3}


def variant(name: str, **optimize: Any) -> Variant:
    return Variant.model_validate(
        {
            "name": name,
            "optimize": optimize,
            "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
        }
    )


def evaluation(**budgets: Any) -> EvaluationSpec:
    return EvaluationSpec.model_validate({**FAST_EVALUATION, **budgets})


@pytest.fixture(scope="module")
def demo() -> Path:
    return ensure_demo_model()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lm-build")


@pytest.fixture(scope="module")
def int4(demo: Path, work_dir: Path) -> LMVariantResult:
    return build_lm_variant(demo, variant("int4", precision="int4"), evaluation(), work_dir)


def test_demo_model_is_a_trained_hugging_face_checkpoint(demo: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        HELDOUT_FILENAME,
        TRAINING_REPORT_FILENAME,
    ):
        assert (demo / name).is_file(), name
    config = json.loads((demo / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    report = read_training_report(demo)
    assert 10_000_000 <= report.parameters <= 60_000_000
    # Untrained, a 4096-token vocabulary gives perplexity in the thousands; training must
    # bring held-out perplexity far below that, or quantization damage is not measurable.
    assert report.untrained.heldout > 2000
    assert report.trained.heldout < report.untrained.heldout / 5
    assert len((demo / HELDOUT_FILENAME).read_text()) > 50_000


def test_ensure_demo_model_returns_the_cached_checkpoint_unchanged(demo: Path) -> None:
    before = path_digest(demo)
    assert ensure_demo_model() == demo
    assert path_digest(demo) == before


def test_int4_is_much_smaller_and_keeps_perplexity(int4: LMVariantResult) -> None:
    m = int4.measurements()
    assert m["compression_ratio"] >= 3.0, m
    assert math.isfinite(m["perplexity"]) and math.isfinite(m["reference_perplexity"])
    assert abs(m["perplexity_delta_percent"]) < 10.0, m
    assert m["next_token_agreement"] > 0.8, m
    assert m["tokens_per_second"] > 0 and m["time_to_first_token_ms"] > 0
    assert m["precision"] == "int4" and m["format"] == "onnx-genai"
    assert "cores" in m["measured_on"]
    assert int4.qualified, int4.message
    assert [v.name for v in int4.verdicts] == ["maxPerplexityIncreasePercent"]
    assert (int4.model_dir / "model.onnx").is_file()
    assert (int4.model_dir / "genai_config.json").is_file()


def test_int4_export_generates_text_with_the_demo_tokenizer(int4: LMVariantResult) -> None:
    import onnxruntime_genai as og

    model = og.Model(str(int4.model_dir))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.encode("def __init__(self")
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 12)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    text = tokenizer.decode(generator.get_sequence(0))
    assert text.startswith("def __init__(self")
    assert len(text) > len("def __init__(self")


def test_int8_is_near_lossless(demo: Path, work_dir: Path) -> None:
    result = build_lm_variant(demo, variant("int8", precision="int8"), evaluation(), work_dir)
    m = result.measurements()
    assert m["compression_ratio"] >= 2.0, m
    assert abs(m["perplexity_delta_percent"]) < 2.0, m
    assert m["next_token_agreement"] > 0.9, m


def test_structured_pruning_then_int4(demo: Path, work_dir: Path, int4: LMVariantResult) -> None:
    pruned = build_lm_variant(
        demo,
        variant(
            "pruned-int4",
            precision="int4",
            pruning={"method": "structured", "mlpChannelFraction": 0.25},
        ),
        evaluation(maxPerplexityIncreasePercent=1000),
        work_dir,
    )
    assert pruned.pruning is not None
    assert pruned.pruning.intermediate_size_after is not None
    assert pruned.pruning.intermediate_size_before is not None
    assert pruned.pruning.intermediate_size_after < pruned.pruning.intermediate_size_before
    assert pruned.parameters < int4.parameters
    m = pruned.measurements()
    assert m["size_bytes"] < int4.measurements()["size_bytes"]
    assert m["sparsity"] == pytest.approx(0.25, abs=0.03)
    # Removing a quarter of the MLP without retraining costs perplexity, but the model must
    # still be a language model, not noise (untrained is in the thousands).
    assert math.isfinite(m["perplexity"])
    assert m["perplexity"] < 3 * m["reference_perplexity"]
    exported = json.loads((pruned.model_dir / "genai_config.json").read_text())
    assert exported["model"]["type"] == "llama"


def test_an_impossible_budget_rejects_with_the_numbers(demo: Path, work_dir: Path) -> None:
    result = build_lm_variant(
        demo,
        variant("int4-impossible", precision="int4"),
        evaluation(minSpeedup=1000, maxSizeMiB=1),
        work_dir,
    )
    assert not result.qualified
    assert {v.name for v in result.verdicts if not v.passed} == {"minSpeedup", "maxSizeMiB"}
    assert "is below 1000x" in result.message
    assert "exceeds 1 MiB" in result.message


def test_reference_export_is_cached_per_source(work_dir: Path, int4: LMVariantResult) -> None:
    references = list((work_dir / "reference").glob("*/fp32-cpu/model.onnx"))
    assert len(references) == 1


def test_perplexity_comes_from_the_given_held_out_text(
    demo: Path, work_dir: Path, int4: LMVariantResult
) -> None:
    reference = next((work_dir / "reference").glob("*/fp32-cpu"))
    heldout_text = (demo / HELDOUT_FILENAME).read_text()
    code = measure_quality(reference, HeldoutSet.from_text(reference, heldout_text).windows)
    prose = measure_quality(
        reference,
        HeldoutSet.from_text(
            reference, "The quick brown fox jumps over the lazy dog. " * 60
        ).windows,
    )
    assert code.perplexity == pytest.approx(int4.evaluation.reference_perplexity, rel=1e-4)
    # Trained on Python source: English prose is far less predictable to it than held-out code.
    assert prose.perplexity != pytest.approx(code.perplexity, rel=0.05)
    assert len(tokenize(reference, "import os")) >= 2


def test_held_out_text_too_short_is_a_clear_error(demo: Path, work_dir: Path) -> None:
    with pytest.raises(LMVariantError, match="held-out text has only") as caught:
        build_lm_variant(
            demo, variant("int4-short", precision="int4"), evaluation(heldoutText="x = 1"), work_dir
        )
    assert caught.value.reason == Reason.INVALID_REQUEST
    assert not (work_dir / "variants" / "int4-short" / "model").exists(), "nothing was built"


def test_builder_failures_carry_its_error(demo: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((demo / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(GenaiExportError, match="builder failed") as caught:
        export_with_genai_builder(broken, tmp_path / "out", GenaiExportOptions("int4"))
    assert len(str(caught.value)) > 100, "the builder's stderr tail is in the message"
    assert not (tmp_path / "out").exists(), "nothing half-written is left behind"
