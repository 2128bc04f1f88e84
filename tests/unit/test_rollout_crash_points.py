"""The rollout controller killed between the writes of one reconcile.

A reconcile that aborts a rollout makes three kinds of writes: the status (the verdict),
the NetworkPolicy, the DaemonSets (the rollback itself). The operator can die after any of
them. Whatever it managed to write, the next reconcile (a restarted operator, reading the
stored status back) must not undo what the cluster already did: if any of the rollback
reached the DaemonSets, the verdict must be stored, so the canary is never brought back and
the breach is never judged again (found by tests/e2e/test_rollout_chaos.py: the DaemonSets
used to be written first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import kopf
import pytest

from slmops.adapters.kube_objects import ServerPod, dump_status
from slmops.controllers import edgerollout
from slmops.domain.rollout import PlannedQuery, World, measurement_from, plan_round
from slmops.domain.workloads import REVISION_LABEL
from tests.unit.rollout_world import HW, Run, make_spec

pytestmark = pytest.mark.unit

NAMESPACE, NAME = "edge", "demo"
KEY = (NAMESPACE, NAME)


class Killed(Exception):
    """The operator process died here: this write and every later one never happen."""


class ClusterWrites:
    """The apiserver as the controller writes to it; dies at the write numbered `kill_at`."""

    def __init__(self, status: Mapping[str, Any], kill_at: int | None) -> None:
        self.status: dict[str, Any] = dict(status)
        self.kill_at = kill_at
        self.version = 100
        self.log: list[tuple[str, str, str]] = []

    def _write(self, what: tuple[str, str, str]) -> None:
        if self.kill_at is not None and len(self.log) + 1 >= self.kill_at:
            raise Killed(what)
        self.log.append(what)

    async def apply(self, manifest: Mapping[str, Any], *, force: bool = True) -> bool:
        labels = manifest["metadata"].get("labels") or {}
        self._write(("apply", manifest["kind"], labels.get(REVISION_LABEL, "")))
        return True

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self._write(("delete", kind, name))
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._write(("status", kind, str(patch.get("phase", ""))))
        self.status = _merge(self.status, patch)
        self.version += 1
        return {"metadata": {"resourceVersion": str(self.version)}, "status": self.status}

    def rollback_started(self) -> bool:
        """Whether any DaemonSet write of the rollback reached the cluster."""
        return any(kind == "DaemonSet" for _, kind, _ in self.log)


def _merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _model() -> dict[str, Any]:
    variants = ("arm", "x86")

    def artifacts(revision: str) -> dict[str, str]:
        return {v: f"registry.local/models/{v}@sha256:{revision * 32}" for v in variants}

    return {
        "spec": {
            "source": {"uri": "file:///demo", "sha256": "0" * 64},
            "variants": [
                {
                    "name": v,
                    "target": {"nodeSelector": {"matchLabels": {HW: v}}, "hardwareClass": v},
                }
                for v in variants
            ],
            "image": {"registry": "registry.local", "repository": "models", "insecure": True},
        },
        "status": {
            "phase": "Ready",
            "revision": "r2",
            "variants": [
                {"name": v, "phase": "Qualified", "revision": "r2", "artifact": a}
                for v, a in artifacts("r2").items()
            ],
            "revisions": [
                {"revision": r, "variants": artifacts(r), "sizes": dict.fromkeys(variants, 10**6)}
                for r in ("r2", "r1")
            ],
        },
    }


def _analysing_run() -> Run:
    """A rollout of r2 whose first wave is ready and due for its first analysis round."""
    run = Run(make_spec(analysis={"intervalSeconds": 1, "count": 2}))
    run.settle("r1")
    run.model_revision = "r2"
    run.run_until(lambda r: bool(r.status.waves) and r.status.waves[0].phase == "Analyzing")
    run.now += timedelta(days=1)
    return run


def _reconcile(
    monkeypatch: pytest.MonkeyPatch,
    run: Run,
    status: Mapping[str, Any],
    kube: ClusterWrites,
    value: float,
) -> None:
    """One reconcile by the real controller code, measuring `value` for every query."""
    body = {
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": str(kube.version),
        },
        "spec": run.spec.model_dump(by_alias=True, exclude_none=True),
        "status": dict(status),
    }
    pods = [
        ServerPod(f"pod-{node}", node, serving.revision, None, True, False, run.now, run.now)
        for node, serving in run.serving.items()
    ]

    async def measure(world: World, address: str) -> list[Any]:
        def reading(item: PlannedQuery) -> Any:
            return measurement_from(
                world, item, value=value, stable_value=0.1, error=None, samples=100.0
            )

        return [reading(item) for item in plan_round(world)]

    monkeypatch.setattr(edgerollout, "measure", measure)
    monkeypatch.setattr(edgerollout, "_writer", kube)
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    asyncio.run(
        edgerollout.reconcile(
            body,  # type: ignore[arg-type]
            edgerollout.RolloutMemory(),
            {node.name: [node] for node in run.nodes},  # type: ignore[arg-type]
            {KEY: pods},  # type: ignore[arg-type]
            {KEY: [f"{NAME}-{v}-{r}" for v in ("arm", "x86") for r in ("r1", "r2")]},  # type: ignore[arg-type]
            {KEY: [_model()]},  # type: ignore[arg-type]
        )
    )


def test_a_rollback_that_reached_the_cluster_is_always_recorded_before_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = _analysing_run()
    before = dump_status(run.status)
    breach = 0.5  # five times the stable value: the wave's limit is 1.2 times
    complete = ClusterWrites(before, kill_at=None)
    _reconcile(monkeypatch, run, before, complete, breach)
    assert complete.status["phase"] == "RolledBack"
    assert complete.rollback_started()
    for kill_at in range(1, len(complete.log) + 1):
        crashed = ClusterWrites(before, kill_at)
        with pytest.raises(Killed):
            _reconcile(monkeypatch, run, before, crashed, breach)
        if crashed.rollback_started():
            assert crashed.status.get("phase") == "RolledBack", (
                f"killed at write {kill_at} after {crashed.log}: the rollback reached the"
                f" DaemonSets but the stored status is {crashed.status.get('phase')}"
            )
        # The restarted operator reads the stored status; the breach is over by now.
        restarted = ClusterWrites(crashed.status, kill_at=None)
        _reconcile(monkeypatch, run, crashed.status, restarted, value=0.1)
        if crashed.rollback_started():
            assert restarted.status["phase"] == "RolledBack"
            canary = [w for w in restarted.log if w[1] == "DaemonSet" and w[2] == "r2"]
            assert not canary, f"killed at write {kill_at}: the canary came back: {canary}"
