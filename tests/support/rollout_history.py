"""What the cluster itself saw of rollouts: a recorder of watch events, and the checks that
a re-applied wave or a lost verdict would fail.

The operator's own word (its status, its logs) is not proof that it did something once: a
restarted operator that re-applied a wave could also rewrite the status as if nothing had
happened. The recorder watches, from the test process, the server DaemonSets (what each
node is told to run) and the EdgeRollouts (every status version the apiserver stored), so
the history is the apiserver's, change by change.

What a buggy restart leaves behind, and which check finds it:
- a wave re-planned or re-applied: a node leaves and rejoins a revision's DaemonSets
  (`membership`), a DaemonSet of the same name is recreated (`recreated_workloads`), a
  wave's `startedAt` changes, its `successful` count drops (`status_regressions`), a
  `NodesSwitching` event repeats for a node and revision (`switching_counts`);
- a verdict lost: an abort that changes or disappears, a RolledBack or Healthy rollout
  that moves again (`status_regressions`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from slmops.domain.workloads import HOSTNAME_LABEL, REVISION_LABEL, ROLLOUT_LABEL

# Statuses that end a rollout of one revision: nothing may move the rollout out of them
# again without a new revision or a person's request.
SETTLED_PHASES = ("Healthy", "RolledBack")


@dataclass(frozen=True)
class WorkloadChange:
    """One watch event of a server DaemonSet: which nodes it was told to serve."""

    at: float
    event: str
    name: str
    uid: str
    rollout: str
    revision: str
    nodes: frozenset[str]


@dataclass(frozen=True)
class RolloutChange:
    """One stored version of an EdgeRollout's status."""

    at: float
    event: str
    name: str
    status: Mapping[str, Any]


def workload_nodes(daemonset: Mapping[str, Any]) -> frozenset[str]:
    """The nodes a server DaemonSet's required node affinity names."""
    affinity = daemonset.get("spec", {}).get("template", {}).get("spec", {}).get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    nodes: set[str] = set()
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == HOSTNAME_LABEL and expression.get("operator") == "In":
                nodes.update(expression.get("values") or [])
    return frozenset(nodes)


class ClusterRecorder:
    """Watches one namespace's server DaemonSets and EdgeRollouts from threads of the test.

    Survives an apiserver restart: a broken watch resumes from the last resourceVersion it
    saw, so no change is missed; if that version is gone (410) it starts over from a
    listing and says so in `gaps`.
    """

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.workloads: list[WorkloadChange] = []
        self.rollouts: list[RolloutChange] = []
        self.gaps: list[str] = []
        self.reconnects = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = {"DaemonSet": threading.Event(), "EdgeRollout": threading.Event()}
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 30.0) -> None:
        apps = client.AppsV1Api(self.api)
        custom = client.CustomObjectsApi(self.api)

        def daemonsets(**kwargs: Any) -> Any:
            return apps.list_namespaced_daemon_set(
                self.namespace, label_selector=ROLLOUT_LABEL, **kwargs
            )

        def rollouts(**kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(
                "slmops.io", "v1alpha1", self.namespace, "edgerollouts", **kwargs
            )

        for kind, call, record in (
            ("DaemonSet", daemonsets, self._record_workload),
            ("EdgeRollout", rollouts, self._record_rollout),
        ):
            thread = threading.Thread(
                target=self._follow, args=(kind, call, record), name=f"watch-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        for kind, synced in self._synced.items():
            if not synced.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"the {kind} watch did not start within {timeout}s")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def _follow(
        self,
        kind: str,
        call: Callable[..., Any],
        record: Callable[[float, str, Mapping[str, Any]], None],
    ) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    # A listing first: the watch then starts exactly after it.
                    listing = call(_preload_content=False, _request_timeout=10)
                    body = json.loads(listing.data)
                    now = time.monotonic()
                    for item in body.get("items") or []:
                        record(now, "LISTED", item)
                    version = str(body["metadata"]["resourceVersion"])
                    self._synced[kind].set()
                response = call(
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=10,
                    _preload_content=False,
                    _request_timeout=(5, 30),
                )
                try:
                    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            if obj.get("code") == 410:
                                self.gaps.append(f"{kind}: watch expired at {version}; relisted")
                                version = None
                                break
                            raise RuntimeError(f"{kind} watch error: {obj}")
                        version = str(obj["metadata"]["resourceVersion"])
                        if event["type"] != "BOOKMARK":
                            record(time.monotonic(), str(event["type"]), obj)
                finally:
                    response.release_conn()
            except Exception:  # an apiserver away: keep trying until stopped
                self.reconnects += 1
                self._stop.wait(0.5)

    def _record_workload(self, at: float, event: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        change = WorkloadChange(
            at=at,
            event=event,
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            rollout=str(labels.get(ROLLOUT_LABEL, "")),
            revision=str(labels.get(REVISION_LABEL, "")),
            nodes=frozenset() if event == "DELETED" else workload_nodes(obj),
        )
        with self._lock:
            self.workloads.append(change)

    def _record_rollout(self, at: float, event: str, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        change = RolloutChange(at=at, event=event, name=name, status=obj.get("status") or {})
        with self._lock:
            self.rollouts.append(change)

    def latest_statuses(self) -> dict[str, Mapping[str, Any]]:
        with self._lock:
            return {change.name: change.status for change in self.rollouts}


# --- checks (pure: unit tests feed them histories with a wave applied twice) ------------


def membership(changes: Iterable[WorkloadChange]) -> dict[tuple[str, str, str], list[bool]]:
    """(rollout, revision, node) → whether the node was in that revision's DaemonSets, at
    the start (False: before anything was observed) and after every change of it."""
    current: dict[str, WorkloadChange] = {}
    timelines: dict[tuple[str, str, str], list[bool]] = {}

    def members(rollout: str, revision: str) -> set[str]:
        return {
            node
            for change in current.values()
            if change.rollout == rollout and change.revision == revision
            for node in change.nodes
        }

    for change in changes:
        key = (change.rollout, change.revision)
        before = members(*key)
        current[change.name] = change
        after = members(*key)
        for node in sorted(before ^ after):
            timeline = timelines.setdefault((*key, node), [False])
            timeline.append(node in after)
    return timelines


def recreated_workloads(changes: Iterable[WorkloadChange]) -> dict[str, list[str]]:
    """DaemonSet name → its uids, for every name that was deleted and created again."""
    uids: dict[str, list[str]] = {}
    for change in changes:
        seen = uids.setdefault(change.name, [])
        if change.uid not in seen:
            seen.append(change.uid)
    return {name: found for name, found in uids.items() if len(found) > 1}


def _plan_of(status: Mapping[str, Any]) -> str | None:
    """The revision whose waves the status shows: the canary, or the one it promoted."""
    return status.get("canaryRevision") or status.get("stableRevision")


def status_regressions(changes: Iterable[RolloutChange]) -> list[str]:
    """Everything in a rollout's status history that a re-applied wave or a lost verdict
    would cause, within the rollout of one revision (a new revision legitimately starts
    from wave 0)."""
    problems: list[str] = []
    previous: dict[str, Mapping[str, Any]] = {}
    for change in changes:
        status = change.status
        before = previous.get(change.name)
        previous[change.name] = status
        if before is None or _plan_of(before) != _plan_of(status):
            continue
        where = f"{change.name} ({_plan_of(status)})"
        if before.get("phase") in SETTLED_PHASES and status.get("phase") != before.get("phase"):
            problems.append(f"{where}: phase {before.get('phase')} became {status.get('phase')}")
        if before.get("abort") is not None and status.get("abort") != before.get("abort"):
            problems.append(f"{where}: abort {before['abort']} became {status.get('abort')}")
        was, now = before.get("currentWave"), status.get("currentWave")
        if was is not None and now is not None and now < was:
            problems.append(f"{where}: currentWave went back from {was} to {now}")
        old_waves = {w.get("index"): w for w in before.get("waves") or []}
        for wave in status.get("waves") or []:
            old = old_waves.get(wave.get("index"))
            if old is None:
                continue
            label = f"{where} wave {wave.get('name')}"
            if old.get("startedAt") and wave.get("startedAt") != old.get("startedAt"):
                problems.append(
                    f"{label}: startedAt {old.get('startedAt')} became {wave.get('startedAt')}"
                )
            if int(wave.get("successful") or 0) < int(old.get("successful") or 0):
                problems.append(
                    f"{label}: successful dropped from {old.get('successful')}"
                    f" to {wave.get('successful')}"
                )
    return problems


def switching_counts(events: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(rollout, revision, node) → how many times a NodesSwitching event named it.

    The message is "<wave>: <node>, <node> → <revision>"; an event repeated by the
    apiserver's aggregation carries its repetitions in `count`.
    """
    counts: dict[tuple[str, str, str], int] = {}
    for event in events:
        if event.get("reason") != "NodesSwitching":
            continue
        rollout = str((event.get("involvedObject") or {}).get("name"))
        message = str(event.get("message") or "")
        _, _, rest = message.partition(": ")
        nodes, _, revision = rest.rpartition(" → ")
        for node in (n.strip() for n in nodes.split(",")):
            key = (rollout, revision.strip(), node)
            counts[key] = counts.get(key, 0) + int(event.get("count") or 1)
    return counts


def describe(
    workloads: Iterable[WorkloadChange], rollouts: Iterable[RolloutChange], rollout: str, t0: float
) -> str:
    """One rollout's history, DaemonSets and statuses interleaved, seconds since t0 (for
    failure messages: what the cluster saw, in order)."""
    lines = [
        (c.at, f"DaemonSet {c.event} {c.name} ({c.uid[:8]}): {sorted(c.nodes)}")
        for c in workloads
        if c.rollout == rollout
    ]
    lines += [
        (
            c.at,
            f"status {c.event} phase={c.status.get('phase')} wave={c.status.get('currentWave')}"
            f" canary={c.status.get('canaryRevision')} abort={bool(c.status.get('abort'))}"
            f" nodes={[(n.get('node'), n.get('state')) for n in c.status.get('nodes') or []]}",
        )
        for c in rollouts
        if c.name == rollout
    ]
    return "\n".join(f"  {at - t0:7.2f}s {text}" for at, text in sorted(lines, key=lambda x: x[0]))
