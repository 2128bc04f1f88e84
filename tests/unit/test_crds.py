"""The committed CRDs are exactly what the API models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slmops.api.crd import KINDS, crd_filename
from slmops.api.v1alpha1 import EdgeRollout, SLMModel
from slmops.cli.crds_cmd import render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("index", range(len(KINDS)), ids=[k.kind for k in KINDS])
def test_committed_crd_matches_the_models(index: int) -> None:
    path = ROOT / "crds" / crd_filename(KINDS[index])
    assert path.read_text() == render(index), (
        f"{path} drifted from the API models: run `make crds` and commit the result"
    )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{i}]"))
    return found


@pytest.mark.parametrize("index", range(len(KINDS)), ids=[k.kind for k in KINDS])
def test_schema_is_structural(index: int) -> None:
    document = yaml.safe_load(render(index))
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node or all("type" not in o for o in node["anyOf"]), path
        assert "x-kubernetes-validations" not in node, f"{path}: CEL is refused by Kubernetes 1.20"
        if path.endswith(".properties") or path.endswith("oneOf"):
            continue
        is_schema = "description" in node or "type" in node or "properties" in node
        if is_schema and "x-kubernetes-int-or-string" not in node:
            assert "type" in node, f"{path} has no type: {sorted(node)}"


def test_names_categories_and_status_subresource() -> None:
    crds = {k.kind: yaml.safe_load(render(i)) for i, k in enumerate(KINDS)}
    assert crds["SLMModel"]["spec"]["names"]["shortNames"] == ["slm"]
    assert crds["EdgeRollout"]["spec"]["names"]["shortNames"] == ["er"]
    for document in crds.values():
        assert document["spec"]["names"]["categories"] == ["slmops"]
        assert document["spec"]["scope"] == "Namespaced"
        version = document["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
            "conditions"
        ]
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_wave_size_is_one_of_count_percent_selector() -> None:
    document = yaml.safe_load(render([k.kind for k in KINDS].index("EdgeRollout")))
    waves = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["strategy"]["properties"]["waves"]["items"]
    assert waves["oneOf"] == [
        {"required": ["count"]},
        {"required": ["percent"]},
        {"required": ["selector"]},
    ]


@pytest.mark.parametrize("name", ["slmmodel-demo.yaml", "edgerollout-demo.yaml"])
def test_samples_parse_as_api_models(name: str) -> None:
    document = yaml.safe_load((ROOT / "manifests" / "samples" / name).read_text())
    model = {"SLMModel": SLMModel, "EdgeRollout": EdgeRollout}[document["kind"]]
    parsed = model.model_validate(document)
    assert parsed.spec is not None
