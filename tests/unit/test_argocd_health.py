"""The Argo CD health checks (Lua) for SLMModel and EdgeRollout, run by a real Lua.

Argo CD runs health scripts in gopher-lua, a Lua 5.1; lupa's bundled Lua 5.1 runs them the same
way here. The objects are the YAML files under tests/data/status/<kind>/, each named
`<ExpectedHealth>-<case>.yaml`, so fixtures captured from e2e runs can replace them one by one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from slmops.api.v1alpha1.edgerollout import EdgeRollout
from slmops.api.v1alpha1.slmmodel import SLMModel

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HEALTH_DIR = ROOT / "manifests" / "argocd" / "health"
STATUS_DIR = ROOT / "tests" / "data" / "status"
ARGOCD_CM = ROOT / "manifests" / "argocd" / "argocd-cm.yaml"

KINDS = {
    "edgerollout": ("EdgeRollout", EdgeRollout),
    "slmmodel": ("SLMModel", SLMModel),
}
# An SLMModel has no pause, so it can never be Suspended.
EXPECTED_HEALTHS = {
    "edgerollout": {"Progressing", "Suspended", "Healthy", "Degraded"},
    "slmmodel": {"Progressing", "Healthy", "Degraded"},
}


def argo_health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return result["status"], result["message"]


def fixtures() -> list[Any]:
    cases = []
    for kind in KINDS:
        for path in sorted((STATUS_DIR / kind).glob("*.yaml")):
            expected = path.stem.split("-", 1)[0]
            cases.append(pytest.param(kind, path, expected, id=f"{kind}/{path.stem}"))
    return cases


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


@pytest.mark.parametrize(("kind", "path", "expected"), fixtures())
def test_health_of_each_captured_status(kind: str, path: Path, expected: str) -> None:
    obj = load(path)
    kind_name, model = KINDS[kind]
    assert obj["kind"] == kind_name
    # A fixture the API cannot parse would test the Lua against a status that cannot occur.
    model.model_validate(obj)

    status, message = argo_health((HEALTH_DIR / f"{kind}.lua").read_text(), obj)

    assert status == expected, message
    assert isinstance(message, str)
    assert message.strip(), "Argo CD shows the message next to the health; it must say something"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_health_a_kind_can_have_is_covered(kind: str) -> None:
    covered = {path.stem.split("-", 1)[0] for path in (STATUS_DIR / kind).glob("*.yaml")}
    assert covered == EXPECTED_HEALTHS[kind]


def test_rolled_back_rollout_says_which_metric_failed() -> None:
    obj = load(STATUS_DIR / "edgerollout" / "Degraded-rolled-back.yaml")
    status, message = argo_health((HEALTH_DIR / "edgerollout.lua").read_text(), obj)
    assert status == "Degraded"
    assert obj["status"]["abort"]["metric"] in message


def test_generation_lag_outranks_everything_else() -> None:
    # A spec edit must show Progressing until the operator has looked at it, even if the
    # last status said RolledBack: Argo CD otherwise reports the old verdict for the new spec.
    obj = load(STATUS_DIR / "edgerollout" / "Degraded-rolled-back.yaml")
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    status, _ = argo_health((HEALTH_DIR / "edgerollout.lua").read_text(), obj)
    assert status == "Progressing"


def test_paused_in_spec_is_suspended_before_the_operator_reacts_to_the_phase() -> None:
    obj = load(STATUS_DIR / "edgerollout" / "Progressing-wave-1-switching.yaml")
    obj["spec"]["paused"] = True
    status, _ = argo_health((HEALTH_DIR / "edgerollout.lua").read_text(), obj)
    assert status == "Suspended"


def test_argocd_cm_snippet_carries_the_same_lua() -> None:
    data = load(ARGOCD_CM)["data"]
    assert set(data) == {
        "resource.customizations.health.slmops.io_SLMModel",
        "resource.customizations.health.slmops.io_EdgeRollout",
    }
    for kind, (kind_name, _) in KINDS.items():
        key = f"resource.customizations.health.slmops.io_{kind_name}"
        assert data[key] == (HEALTH_DIR / f"{kind}.lua").read_text()
