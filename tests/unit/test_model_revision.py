from __future__ import annotations

from typing import Any

import pytest

from slmops.api.v1alpha1.slmmodel import SLMModelSpec
from slmops.domain.revision import model_revision

pytestmark = pytest.mark.unit


def _spec(**overrides: Any) -> SLMModelSpec:
    body: dict[str, Any] = {
        "source": {"uri": "file:///models/demo", "sha256": "a" * 64},
        "variants": [
            {
                "name": "int4-cpu",
                "optimize": {"precision": "int4"},
                "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
            }
        ],
        "image": {"registry": "127.0.0.1:5000", "repository": "models/demo"},
    }
    body.update(overrides)
    return SLMModelSpec.model_validate(body)


def test_same_input_same_revision() -> None:
    assert model_revision(_spec()) == model_revision(_spec())
    assert len(model_revision(_spec())) == 12


def test_delivery_settings_do_not_change_the_revision() -> None:
    moved = _spec(
        image={
            "registry": "registry.example.com",
            "repository": "other/demo",
            "pushSecretRef": {"name": "push"},
        },
        build={"activeDeadlineSeconds": 99999, "backoffLimit": 0},
        source={"uri": "https://mirror.example.com/demo.tar", "sha256": "a" * 64},
    )
    assert model_revision(moved) == model_revision(_spec())


@pytest.mark.parametrize(
    "overrides",
    [
        {"source": {"uri": "file:///models/demo", "sha256": "b" * 64}},
        {"evaluation": {"maxPerplexityIncreasePercent": 1.0}},
        {
            "variants": [
                {
                    "name": "int4-cpu",
                    "optimize": {"precision": "int4", "int4": {"blockSize": 64}},
                    "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
                }
            ]
        },
        {
            "variants": [
                {
                    "name": "int4-cpu",
                    "optimize": {"precision": "int4"},
                    "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "arm64"}}},
                }
            ]
        },
    ],
    ids=["source-digest", "budget", "recipe", "hardware"],
)
def test_what_is_built_changes_the_revision(overrides: dict[str, Any]) -> None:
    assert model_revision(_spec(**overrides)) != model_revision(_spec())


def test_defaults_written_out_give_the_same_revision() -> None:
    explicit = _spec(
        variants=[
            {
                "name": "int4-cpu",
                "optimize": {"precision": "int4", "executionProvider": "cpu"},
                "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
            }
        ]
    )
    assert model_revision(explicit) == model_revision(_spec())
