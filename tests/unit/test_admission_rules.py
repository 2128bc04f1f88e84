"""The cross-field rules the admission webhook adds to the CRD schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slmops.api.v1alpha1.slmmodel import RevisionArtifacts, SLMModelStatus
from slmops.domain.admission import ClusterFacts, review_edgerollout, review_slmmodel

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
NODES = {
    "edge-a": {"slmops.io/hardware-class": "rpi5", "slmops.io/site": "store-berlin"},
    "edge-b": {"slmops.io/hardware-class": "x86-vnni", "slmops.io/site": "store-paris"},
}


def _spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())["spec"]
    return copy.deepcopy(spec)


def _facts(**overrides: Any) -> ClusterFacts:
    values: dict[str, Any] = {"node_labels": NODES, "model_exists": True}
    values.update(overrides)
    return ClusterFacts(**values)


def test_samples_pass() -> None:
    assert review_slmmodel(_spec("slmmodel-demo.yaml")).allowed
    review = review_edgerollout(_spec("edgerollout-demo.yaml"), _facts())
    assert review.allowed, review.summary()
    assert review.warnings == ()


def test_unknown_template_variable_names_the_metric() -> None:
    spec = _spec("edgerollout-demo.yaml")
    spec["analysis"]["metrics"][1]["query"] = 'rate(x{pod="{{podName}}"}[1m])'
    review = review_edgerollout(spec, _facts())
    assert not review.allowed
    assert review.problems[0].field == "spec.analysis.metrics[1].query"
    assert "{{podName}}" in review.problems[0].message


def test_condition_that_does_not_parse_is_refused() -> None:
    spec = _spec("edgerollout-demo.yaml")
    spec["analysis"]["metrics"][0]["successCondition"] = "result <= __import__('os')"
    review = review_edgerollout(spec, _facts())
    assert [p.field for p in review.problems] == ["spec.analysis.metrics[0].successCondition"]


def test_wave_selector_covering_no_fleet_node_is_refused() -> None:
    spec = _spec("edgerollout-demo.yaml")
    spec["strategy"]["waves"][1]["selector"] = {"matchLabels": {"slmops.io/site": "mars"}}
    review = review_edgerollout(spec, _facts())
    assert [p.field for p in review.problems] == ["spec.strategy.waves[1].selector"]
    assert "covers none of the 2 fleet nodes" in review.problems[0].message


def test_empty_fleet_only_warns() -> None:
    review = review_edgerollout(_spec("edgerollout-demo.yaml"), _facts(node_labels={}))
    assert review.allowed
    assert "no node matches spec.fleet.selector" in review.warnings[0]


def test_cumulative_sizes_must_grow() -> None:
    spec = _spec("edgerollout-demo.yaml")
    spec["strategy"]["waves"] = [{"count": 3}, {"count": 2}, {"percent": 50}, {"percent": 50}]
    fields = [p.field for p in review_edgerollout(spec, _facts()).problems]
    assert fields == ["spec.strategy.waves[1].count", "spec.strategy.waves[3].percent"]


def test_revision_pin_must_exist() -> None:
    spec = _spec("edgerollout-demo.yaml")
    spec["model"]["revision"] = "0123456789ab"
    status = SLMModelStatus(
        revision="aaaaaaaaaaaa", revisions=[RevisionArtifacts(revision="bbbbbbbbbbbb")]
    )
    review = review_edgerollout(spec, _facts(model_status=status))
    assert [p.field for p in review.problems] == ["spec.model.revision"]
    assert "aaaaaaaaaaaa, bbbbbbbbbbbb" in review.problems[0].message
    spec["model"]["revision"] = "bbbbbbbbbbbb"
    assert review_edgerollout(spec, _facts(model_status=status)).allowed


def test_missing_model_warns() -> None:
    review = review_edgerollout(_spec("edgerollout-demo.yaml"), _facts(model_exists=False))
    assert review.allowed and "does not exist" in review.warnings[0]


def test_pydantic_errors_carry_the_field_path() -> None:
    spec = _spec("edgerollout-demo.yaml")
    spec["strategy"]["waves"][0]["percent"] = 10
    review = review_edgerollout(spec, _facts())
    assert review.problems[0].field == "spec.strategy.waves[0]"
    assert "exactly one of count, percent or selector" in review.problems[0].message


def test_model_recipe_rules() -> None:
    spec = _spec("slmmodel-demo.yaml")
    spec["variants"][0]["optimize"]["precision"] = "int8"
    spec["variants"][3]["optimize"]["int8"] = {"mode": "dynamic"}
    fields = [p.field for p in review_slmmodel(spec).problems]
    assert fields == ["spec.variants[0].optimize.int4", "spec.variants[3].optimize.int8"]
    spec = _spec("slmmodel-demo.yaml")
    spec["source"]["format"] = "onnx"
    fields = [p.field for p in review_slmmodel(spec).problems]
    assert fields == ["spec.variants[2].optimize.pruning"]
