"""The demo's objects are valid API objects that admission accepts, at every stage."""

from __future__ import annotations

import pytest

from slmops.api.v1alpha1 import EdgeRollout, SLMModel
from slmops.demo import manifests as m
from slmops.domain.admission import ClusterFacts, review_edgerollout, review_slmmodel
from slmops.domain.revision import model_revision
from slmops.testbed.simulator.profiles import PROFILES, node_labels, node_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("stage", list(m.REVISIONS))
def test_every_stage_is_a_valid_model(stage: str) -> None:
    document = m.model_manifest(stage, "file:///x", "a" * 64, "127.0.0.1:5000")
    model = SLMModel.model_validate(document)
    assert review_slmmodel(document["spec"]).allowed
    assert [v.target.hardware_class for v in model.spec.variants] == list(m.FLEET_CLASSES)


def test_each_stage_is_a_new_revision() -> None:
    revisions = {
        model_revision(
            SLMModel.model_validate(m.model_manifest(s, "file:///x", "a" * 64, "r:1")).spec
        )
        for s in m.REVISIONS
    }
    assert len(revisions) == len(m.REVISIONS)


def test_rollout_is_admitted_on_the_demo_fleet() -> None:
    labels = {
        node_name(profile, index): node_labels(PROFILES[profile], node_name(profile, index), index)
        for profile in m.FLEET_CLASSES
        for index in range(3)
    }
    document = m.rollout_manifest("http://127.0.0.1:9090", "store-paris")
    EdgeRollout.model_validate(document)
    review = review_edgerollout(
        document["spec"], ClusterFacts(node_labels=labels, model_exists=True)
    )
    assert review.allowed, review.summary()
    assert review.warnings == ()
