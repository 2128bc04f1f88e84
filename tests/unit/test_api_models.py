"""Validation the pydantic models add beyond the schema (used by admission and reconcilers)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec, WaveSpec
from slmops.api.v1alpha1.slmmodel import PruningRecipe, SLMModelSpec

pytestmark = pytest.mark.unit


def test_wave_needs_exactly_one_size() -> None:
    with pytest.raises(ValidationError, match="exactly one of count, percent or selector"):
        WaveSpec.model_validate({"count": 1, "percent": 10})
    with pytest.raises(ValidationError, match="exactly one"):
        WaveSpec.model_validate({"name": "w"})
    assert WaveSpec.model_validate({"percent": 50}).percent == 50


def test_pruning_amount_must_match_method() -> None:
    with pytest.raises(ValidationError, match="mlpChannelFraction"):
        PruningRecipe.model_validate({"method": "structured", "sparsity": 0.5})
    assert PruningRecipe.model_validate({"method": "unstructured", "sparsity": 0.5}).sparsity == 0.5


def _model_spec(**overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "source": {"uri": "file:///m", "sha256": "a" * 64},
        "variants": [{"name": "int4", "target": {"nodeSelector": {}}}],
        "image": {"registry": "127.0.0.1:5000", "repository": "models/demo"},
    }
    spec.update(overrides)
    return spec


def test_variant_names_are_unique() -> None:
    variant = {"name": "same", "target": {"nodeSelector": {}}}
    with pytest.raises(ValidationError, match="repeated: same"):
        SLMModelSpec.model_validate(_model_spec(variants=[variant, variant]))


def test_camel_case_on_the_wire_and_defaults() -> None:
    spec = SLMModelSpec.model_validate(_model_spec())
    wire = spec.model_dump(by_alias=True, exclude_none=True)
    assert wire["variants"][0]["optimize"]["executionProvider"] == "cpu"
    assert wire["variants"][0]["target"]["runtimeOverheadMiB"] == 256
    assert wire["evaluation"]["maxPerplexityIncreasePercent"] == 5.0


def test_int4_algorithms_are_the_builders_own() -> None:
    # onnxruntime-genai 0.18 dropped "hqq": the schema refuses it, not a build minutes later.
    hqq = {
        "name": "int4",
        "optimize": {"int4": {"algorithm": "hqq"}},
        "target": {"nodeSelector": {}},
    }
    with pytest.raises(ValidationError, match="k_quant_mixed"):
        SLMModelSpec.model_validate(_model_spec(variants=[hqq]))


def test_bad_sha256_names_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        SLMModelSpec.model_validate(_model_spec(source={"uri": "file:///m", "sha256": "xyz"}))
    assert "source.sha256" in str(error.value).replace("\n", ".").replace(" ", "")


def test_rollout_spec_defaults() -> None:
    spec = EdgeRolloutSpec.model_validate(
        {
            "model": {"name": "demo"},
            "fleet": {"selector": {"matchLabels": {"a": "b"}}},
            "strategy": {"waves": [{"count": 1}]},
        }
    )
    assert spec.serving.port == 8000
    assert spec.rollback.automatic is True
    assert spec.strategy.max_unavailable == 1
