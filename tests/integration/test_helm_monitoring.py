"""The chart's alerts and dashboard queries, checked by a real Prometheus.

`promtool` (Debian's prometheus package, which the testbed installs) checks the rule syntax
and runs alert unit tests on synthetic series; the testbed's Prometheus parses every
dashboard query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from slmops.testbed.chart import ChartPaths, render, repository_root
from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration

PATHS = ChartPaths(repository_root())
MONITORING_ON = {
    "monitoring.serviceMonitor.enabled": "true",
    "monitoring.podMonitor.enabled": "true",
    "monitoring.prometheusRule.enabled": "true",
}
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$namespace": ".*",
    "$rollout": ".*",
    "$model": ".*",
}


@pytest.fixture(scope="module")
def promtool(testbed: Testbed) -> str:
    # The testbed fixture installs Debian's prometheus package, which ships promtool.
    found = shutil.which("promtool")
    assert found, "promtool missing although the testbed installed prometheus"
    return found


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = [d for d in yaml.safe_load_all(render(PATHS.chart, set_values=MONITORING_ON)) if d]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    path = tmp_path_factory.mktemp("rules") / "slmops.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check(promtool: str, rule_file: Path) -> None:
    result = promtool_run(promtool, "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


ROLLOUT = {"rollout_namespace": "edge-demo", "rollout": "demo"}


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{rendered}}}", "values": values}


def alert_tests() -> dict[str, Any]:
    return {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("slmops_rollout_phase", {**ROLLOUT, "phase": "RolledBack"}, "1x10"),
                    series("slmops_rollout_phase", {**ROLLOUT, "phase": "Healthy"}, "0x10"),
                    series("slmops_rollout_phase", {**ROLLOUT, "phase": "Degraded"}, "0 1x10"),
                    series(
                        "slmops_rollout_condition",
                        {**ROLLOUT, "condition": "Stalled", "status": "True"},
                        "1x20",
                    ),
                    series(
                        "kube_job_status_failed",
                        {"namespace": "edge-demo", "job_name": "demo-int4-7d79"},
                        "1x5",
                    ),
                    series(
                        "kube_job_owner",
                        {
                            "namespace": "edge-demo",
                            "job_name": "demo-int4-7d79",
                            "owner_kind": "SLMModel",
                            "owner_name": "demo",
                            "owner_is_controller": "true",
                        },
                        "1x5",
                    ),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": "SLMOpsRolloutRolledBack",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", **ROLLOUT}}],
                    },
                    # Degraded fires only after rolloutDegradedFor (5m).
                    {"eval_time": "3m", "alertname": "SLMOpsRolloutDegraded", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "SLMOpsRolloutDegraded",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", **ROLLOUT}}],
                    },
                    {"eval_time": "5m", "alertname": "SLMOpsRolloutStalled", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "SLMOpsRolloutStalled",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", **ROLLOUT}}],
                    },
                    {
                        "eval_time": "2m",
                        "alertname": "SLMOpsModelBuildFailed",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "edge-demo",
                                    "job_name": "demo-int4-7d79",
                                    "owner_name": "demo",
                                }
                            }
                        ],
                    },
                ],
            }
        ],
    }


def fill_labels(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def with_annotations(tests: dict[str, Any], rule_file: Path) -> dict[str, Any]:
    """Expected alerts get the annotations their rule renders for their labels, so the test
    also checks that every `$labels.x` a summary uses exists on the alert."""
    rules = yaml.safe_load(rule_file.read_text())["groups"]
    annotations = {r["alert"]: r.get("annotations", {}) for g in rules for r in g["rules"]}
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"] = {
                    key: fill_labels(text, alert["exp_labels"])
                    for key, text in annotations[check["alertname"]].items()
                }
    return tests


def test_alerts_fire_on_the_right_series(promtool: str, rule_file: Path, tmp_path: Path) -> None:
    tests = with_annotations(alert_tests(), rule_file)
    tests["rule_files"] = [str(rule_file)]
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = promtool_run(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_queries() -> list[str]:
    docs = [d for d in yaml.safe_load_all(render(PATHS.chart)) if d]
    (config_map,) = [
        d for d in docs if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    dashboard = json.loads(config_map["data"]["slmops.json"])
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values() is Grafana's, not PromQL: check the selector inside it.
            inner = variable["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            queries.append(inner)
    return queries


def test_every_dashboard_query_is_valid_promql(testbed: Testbed) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    with httpx.Client(base_url=testbed.prometheus_url, timeout=10) as client:
        for template in queries:
            query = template
            for name, value in GRAFANA_VARIABLES.items():
                query = query.replace(name, value)
            response = client.get("/api/v1/query", params={"query": query})
            body = response.json()
            assert body["status"] == "success", f"{query}: {body.get('error')}"
