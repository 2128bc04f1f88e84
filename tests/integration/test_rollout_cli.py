"""`slmops get|describe|plan|pause|...` against the real apiserver (no operator running)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from slmops.cli import main
from slmops.testbed.testbed import Testbed
from tests.e2e import rollout_support as rs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REVISION = rs.Revision(
    "cli0001stable",
    artifacts={
        rs.ARM_VARIANT: "127.0.0.1:5000/e2e/tinylm@sha256:" + "a" * 64,
        rs.X86_VARIANT: "127.0.0.1:5000/e2e/tinylm@sha256:" + "b" * 64,
    },
    sizes={rs.ARM_VARIANT: 300_000, rs.X86_VARIANT: 600_000},
)


@pytest.fixture
def rollout(testbed: Testbed, kube_namespace: str, tmp_path: Path) -> Path:
    testbed.kubectl("apply", "-f", str(ROOT / "crds"))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    rs.create_model(testbed, kube_namespace)
    rs.publish_model_status(testbed, kube_namespace, REVISION, [])
    manifest = rs.rollout_manifest(
        "cli",
        testbed,
        waves=[
            {"name": "canary", "count": 1},
            {"name": "rpis", "selector": {"matchLabels": {"slmops.io/hardware-class": "rpi5"}}},
            {"name": "rest", "percent": 100},
        ],
    )
    rs.apply(testbed, kube_namespace, manifest)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def _run(testbed: Testbed, *args: str) -> str:
    result = CliRunner().invoke(
        main, [*args, "--kubeconfig", str(testbed.kubeconfig)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_shows_every_fleet_node_in_its_wave_with_variant_and_class(
    testbed: Testbed, kube_namespace: str, rollout: Path
) -> None:
    fleet = rs.fleet_nodes(testbed)
    by_name = ("plan", "cli", "-n", kube_namespace)
    from_file = ("plan", "-f", str(rollout), "-n", kube_namespace)
    for args in (by_name, from_file):
        output = _run(testbed, *args)
        assert "cli0001stable" in output
        rows = {
            m.group(2): (m.group(1), m.group(3), m.group(4))
            for m in re.finditer(r"│ (\d \S+)\s+│ (edge-\S+)\s+│ (\S+)\s+│ (\S+)\s+│", output)
        }
        assert set(rows) == set(fleet[rs.ARM_CLASS] + fleet[rs.X86_CLASS])
        assert all(rows[n][1:] == (rs.ARM_VARIANT, rs.ARM_CLASS) for n in fleet[rs.ARM_CLASS])
        assert all(rows[n][1:] == (rs.X86_VARIANT, rs.X86_CLASS) for n in fleet[rs.X86_CLASS])
        assert [w for w, *_ in rows.values()].count("0 canary") == 1
        assert all(rows[n][0] in ("0 canary", "1 rpis") for n in fleet[rs.ARM_CLASS])


def test_requests_are_annotations_never_spec(
    testbed: Testbed, kube_namespace: str, rollout: Path
) -> None:
    before = rs.get_rollout(testbed, kube_namespace, "cli")
    output = _run(testbed, "pause", "cli", "-n", kube_namespace, "--wait", "0")
    assert "requested pause" in output
    after = rs.get_rollout(testbed, kube_namespace, "cli")
    assert re.fullmatch(r"[0-9a-f]{12}:pause", after["metadata"]["annotations"]["slmops.io/action"])
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    _run(testbed, "promote", "cli", "-n", kube_namespace, "--full", "--wait", "0")
    promoted = rs.get_rollout(testbed, kube_namespace, "cli")["metadata"]["annotations"]
    assert promoted["slmops.io/action"].endswith(":promote-full")


def test_an_unacknowledged_request_says_so_and_a_missing_rollout_is_named(
    testbed: Testbed, kube_namespace: str, rollout: Path
) -> None:
    runner = CliRunner()
    kubeconfig = ["--kubeconfig", str(testbed.kubeconfig)]
    late = runner.invoke(main, ["resume", "cli", "-n", kube_namespace, "--wait", "1", *kubeconfig])
    assert late.exit_code != 0 and "did not acknowledge" in late.output
    missing = runner.invoke(
        main,
        ["abort", "nope", "-n", kube_namespace, "--kubeconfig", str(testbed.kubeconfig)],
    )
    assert missing.exit_code != 0
    assert f"edgerollout {kube_namespace}/nope not found" in missing.output


def test_get_and_describe(testbed: Testbed, kube_namespace: str, rollout: Path) -> None:
    assert "cli" in _run(testbed, "get", "rollouts", "-n", kube_namespace)
    models = _run(testbed, "get", "models", "-n", kube_namespace)
    assert "tinylm" in models and "cli0001stabl" in models
    testbed.kubectl(
        "-n", kube_namespace, "patch", "edgerollout", "cli", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {
            "phase": "RolledBack",
            "abort": {"metric": "p95-latency", "wave": 0, "query": "histogram_quantile(0.95, x)",
                      "value": 0.9, "stableValue": 0.1, "condition": "result <= 1.2 * stable"},
        }}),
    )  # fmt: skip
    described = _run(testbed, "describe", "cli", "-n", kube_namespace)
    assert "RolledBack" in described and "Aborted" in described
    assert "histogram_quantile(0.95, x)" in described and "result <= 1.2 * stable" in described
