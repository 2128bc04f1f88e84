"""The demo, step by step: testbed → operator → model variants → waves → a caught bad revision.

Everything here is the real thing on loopback: a Kubernetes control plane, Prometheus, an OCI
registry, build Jobs and model servers run as processes by the fleet simulator, the operator
as a process. The story only applies objects and watches status, as a person would.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from slmops.api.crd import all_crds
from slmops.cli.rollout_cmds import describe_rollout, models_table
from slmops.demo import manifests as m
from slmops.demo.traffic import Traffic, ready_servers
from slmops.testbed.testbed import FleetSpec, Testbed

# The demo's fleet when it starts the testbed itself: three nodes of each class it rolls out
# to (so waves have something to do), one of each other class (placement leaves them out).
DEMO_FLEET = {m.X86: 3, m.ARM: 3, "jetson-orin": 1, "x86-avx2": 1}
OPERATOR_PID_FILE = "demo-operator.pid"


class DemoError(RuntimeError):
    """A step of the demo did not reach its goal; the message says which and why."""


@dataclass
class Timings:
    steps: dict[str, float]

    def record(self, name: str, started: float) -> None:
        self.steps[name] = time.monotonic() - started


class Story:
    def __init__(self, console: Console, testbed: Testbed) -> None:
        self.console = console
        self.testbed = testbed
        self.operator: subprocess.Popen[bytes] | None = None
        self.traffic: Traffic | None = None
        self.timings = Timings({})

    # --- plumbing ------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = self.testbed.kubectl(*args, input=stdin)
        return str(result.stdout)

    def get(self, *what: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(
            self.kubectl("-n", m.NAMESPACE, "get", *what, "-o", "json")
        )
        return document

    def apply(self, document: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))

    def watch(
        self,
        title: str,
        view: Callable[[], Any],
        done: Callable[[], str | None],
        timeout: float,
    ) -> str:
        """Refresh `view` until `done` returns a non-empty verdict; fail after timeout."""
        started = time.monotonic()
        deadline = started + timeout
        verdict: str | None = None
        with Live(console=self.console, refresh_per_second=2, transient=False) as live:
            while True:
                with suppress(subprocess.CalledProcessError, json.JSONDecodeError, KeyError):
                    live.update(
                        Group(f"[bold]{title}[/] ({time.monotonic() - started:.0f}s)", view())
                    )
                    verdict = done()
                if verdict:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"{title}: not done after {timeout:.0f}s")
                self._check_operator()
                time.sleep(1.0)
        self.timings.record(title, started)
        return verdict

    def _check_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is not None:
            raise DemoError(f"the operator exited; its log: {self._operator_log()}")

    def _operator_log(self) -> Path:
        return self.testbed.logs_dir / "demo-operator.log"

    # --- steps ---------------------------------------------------------------------------

    def start_testbed(self) -> None:
        self.console.rule("1. A local testbed")
        started = time.monotonic()
        with self.console.status(
            "starting the control plane, Prometheus, the registry and the fleet…"
        ):
            fresh = self.testbed.up()
        self.timings.record("testbed", started)
        self.console.print(
            ("started" if fresh else "already running")
            + f": Kubernetes {self.testbed.apiserver_url}, "
            f"Prometheus {self.testbed.prometheus_url}, registry {self.testbed.registry.host}"
        )
        nodes = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
        table = Table("node", "hardware class", "arch", "site", "memory", "ready")
        for node in nodes:
            labels = node["metadata"]["labels"]
            ready = next(
                (c["status"] for c in node["status"].get("conditions", []) if c["type"] == "Ready"),
                "?",
            )
            table.add_row(
                node["metadata"]["name"],
                labels.get(m.HARDWARE_LABEL, ""),
                labels.get("kubernetes.io/arch", ""),
                labels.get(m.SITE_LABEL, ""),
                node["status"].get("allocatable", {}).get("memory", ""),
                ready,
            )
        self.console.print(table)

    def start_operator(self) -> None:
        self.console.rule("2. The operator")
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(all_crds()))
        self.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
        stop_previous_operator(self.testbed.state_dir)
        log = self._operator_log().open("ab")
        env = dict(os.environ, KUBECONFIG=str(self.testbed.kubeconfig), PYTHONWARNINGS="ignore")
        self.operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slmops.cli",
                "operator",
                "--liveness",
                "http://127.0.0.1:0/healthz",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (self.testbed.state_dir / OPERATOR_PID_FILE).write_text(str(self.operator.pid))
        self.console.print(
            f"CRDs installed; operator running (pid {self.operator.pid}, "
            f"log {self._operator_log()})"
        )

    def prepare_namespace(self) -> None:
        if self.testbed.kubectl("get", "namespace", m.NAMESPACE, check=False).returncode == 0:
            with self.console.status(f"removing the previous run's namespace {m.NAMESPACE}…"):
                self.kubectl("delete", "namespace", m.NAMESPACE, "--wait=true", "--timeout=180s")
        self.kubectl("create", "namespace", m.NAMESPACE)
        registry = self.testbed.registry
        auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
        config = json.dumps({"auths": {registry.host: {"auth": auth}}})
        for name in (m.PUSH_SECRET, m.PULL_SECRET):
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": m.NAMESPACE},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
                }
            )

    def make_model(self) -> tuple[str, str]:
        self.console.rule("3. A real small language model")
        from slmops.optimize.demo_model import ensure_demo_model, read_training_report
        from slmops.optimize.source import directory_digest

        started = time.monotonic()
        with self.console.status(
            "training the demo model on the Python standard library "
            "(first run only, a few minutes)…"
        ):
            checkpoint = ensure_demo_model()
        self.timings.record("demo model", started)
        report = read_training_report(checkpoint)
        self.console.print(f"checkpoint {checkpoint}")
        self.console.print(
            f"  {report.parameters / 1e6:.1f} M parameters; held-out perplexity "
            f"{report.untrained.heldout:.0f} untrained → {report.trained.heldout:.1f} trained"
        )
        return f"file://{checkpoint}", directory_digest(checkpoint)

    def build(self, stage: str, source: tuple[str, str]) -> str:
        uri, sha256 = source
        self.apply(m.model_manifest(stage, uri, sha256, self.testbed.registry.host))
        generation = self.get("slmmodel", m.MODEL)["metadata"]["generation"]

        def view() -> Any:
            return models_table([self.get("slmmodel", m.MODEL)])

        def done() -> str | None:
            model = self.get("slmmodel", m.MODEL)
            status = model.get("status") or {}
            ready = _condition(status, "Ready")
            if status.get("observedGeneration") != generation:
                return None
            if ready.get("status") == "True":
                return str(status["revision"])
            if _condition(status, "Stalled").get("status") == "True":
                raise DemoError(f"the model build stalled: {ready.get('message')}")
            return None

        revision = self.watch(f"building the {stage} revision's variants", view, done, timeout=2400)
        model = self.get("slmmodel", m.MODEL)
        self.console.print(variants_table(model))
        return revision

    def rollout(self, title: str, expect: str, revision: str, timeout: float) -> dict[str, Any]:
        def view() -> Any:
            rollout = self.get("edgerollout", m.ROLLOUT)
            traffic = self.traffic.stats if self.traffic else None
            lines: list[Any] = list(describe_rollout(rollout))
            if traffic:
                lines.append(f"traffic: {traffic.sent} requests sent, {traffic.failed} failed\n")
            return Group(*lines)

        def done() -> str | None:
            status = self.get("edgerollout", m.ROLLOUT).get("status") or {}
            phase = status.get("phase")
            if (
                expect == "Healthy"
                and phase == "Healthy"
                and status.get("stableRevision") == revision
            ):
                return "Healthy"
            if (
                expect == "RolledBack"
                and phase == "RolledBack"
                and status.get("rollbackCompletedAt")
            ):
                return "RolledBack"
            if phase in ("Degraded", "RolledBack") and expect != phase:
                raise DemoError(f"the rollout ended {phase}: {status.get('message')}")
            return None

        self.watch(title, view, done, timeout=timeout)
        if self.traffic:
            stats = self.traffic.stats
            self.console.print(f"traffic so far: {stats.sent} requests, {stats.failed} failed")
        return self.get("edgerollout", m.ROLLOUT)

    def start_traffic(self) -> None:
        def targets() -> list[str]:
            pods = self.get("pods", "-l", f"slmops.io/rollout={m.ROLLOUT}")["items"]
            return ready_servers(pods, 8000)

        self.traffic = Traffic(targets, m.MODEL).start()

    def stop(self, keep_testbed: bool) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.operator is not None and self.operator.poll() is None:
            os.killpg(self.operator.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.operator.wait(15)
            if self.operator.poll() is None:
                os.killpg(self.operator.pid, signal.SIGKILL)
        (self.testbed.state_dir / OPERATOR_PID_FILE).unlink(missing_ok=True)
        if not keep_testbed:
            self.testbed.down()


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), {})


def variants_table(model: dict[str, Any]) -> Table:
    table = Table(
        "variant",
        "phase",
        "size MiB",
        "x smaller",
        "tokens/s",
        "speedup",
        "ppl Δ%",
        "measured on",
        title=f"revision {model['status'].get('revision')}",
    )
    for variant in model["status"].get("variants", []):
        size = variant.get("sizeBytes")
        table.add_row(
            variant["name"],
            variant.get("phase", ""),
            f"{size / 2**20:.1f}" if size else "",
            _fmt(variant.get("compressionRatio")),
            _fmt(variant.get("tokensPerSecond"), "{:.0f}"),
            _fmt(variant.get("speedup")),
            _fmt(variant.get("perplexityDeltaPercent"), "{:+.2f}"),
            str(variant.get("measuredOn", ""))[:40],
        )
    return table


def _fmt(value: object, pattern: str = "{:.2f}") -> str:
    return pattern.format(value) if isinstance(value, int | float) else ""


def stop_previous_operator(state_dir: Path) -> None:
    """Stop the operator an earlier demo left running (by its recorded PID, never by name)."""
    pid_file = state_dir / OPERATOR_PID_FILE
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    if b"slmops" in cmdline and b"operator" in cmdline:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None

    def parse(moment: str) -> datetime:
        return datetime.fromisoformat(moment.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def run(console: Console, state_dir: Path, keep_testbed: bool) -> None:
    """The whole story. Ctrl-C (or a failure) stops everything the demo started."""
    testbed = Testbed(state_dir, fleet=FleetSpec(nodes_per_profile=dict(DEMO_FLEET)))
    story = Story(console, testbed)
    finished = False
    try:
        story.start_testbed()
        story.start_operator()
        story.prepare_namespace()
        source = story.make_model()

        console.rule("4. Build the variants: one per hardware class, measured where it will run")
        first = story.build("first", source)

        console.rule("5. Roll it out (the first revision goes everywhere at once)")
        # The canary wave takes the first node of each class (both in Berlin), so the site
        # wave is Paris; "everyone" takes the rest.
        story.apply(m.rollout_manifest(testbed.prometheus_url, "store-paris"))
        story.start_traffic()
        story.rollout("first rollout", "Healthy", first, timeout=600)

        console.rule("6. A good update: waves, each gated on p95 latency vs stable and errors")
        good = story.build("good", source)
        story.rollout("rolling out the good revision in waves", "Healthy", good, timeout=1200)

        console.rule("7. A bad update: fp32 on the x86 class, several times slower")
        bad = story.build("bad", source)
        rolled_back = story.rollout("rolling out the bad revision", "RolledBack", bad, timeout=1200)
        summarize(console, story, rolled_back, good, bad)
        finished = True
    finally:
        story.stop(keep_testbed=finished and keep_testbed)


def summarize(console: Console, story: Story, rollout: dict[str, Any], good: str, bad: str) -> None:
    status = rollout["status"]
    abort = status.get("abort") or {}
    failing = [x for x in status.get("measurements", []) if x.get("phase") == "Failed"]
    breach_at = failing[0]["at"] if failing else None
    console.rule("What happened")
    console.print(f"good revision {good}: rolled out in waves, stable on every node.")
    console.print(
        f"bad revision {bad}: caught in wave {abort.get('wave')} on variant {abort.get('variant')}."
    )
    console.print(f"  why: {abort.get('message')}")
    console.print(f"  query: {abort.get('query')}")
    console.print(
        f"  value {abort.get('value')} vs stable {abort.get('stableValue')}: "
        f"{abort.get('condition')}"
    )
    decision = _seconds_between(breach_at, abort.get("at"))
    rollback = _seconds_between(abort.get("at"), status.get("rollbackCompletedAt"))
    if decision is not None:
        console.print(
            f"  breach → decision: {decision:.0f}s; "
            f"decision → every touched node on stable: {rollback}s"
        )
    console.print(f"  fleet is on {status.get('stableRevision')} again.")
    console.rule("Look around")
    console.print(f"  export KUBECONFIG={story.testbed.kubeconfig}")
    console.print(f"  kubectl -n {m.NAMESPACE} get slm,er,daemonsets,pods -o wide")
    console.print(f"  slmops describe rollout {m.ROLLOUT} -n {m.NAMESPACE}")
    console.print(f"  Prometheus: {story.testbed.prometheus_url}")
    console.print("  slmops testbed down   # stops everything")
    console.rule("Time taken")
    for step, seconds in story.timings.steps.items():
        console.print(f"  {step}: {seconds:.0f}s")
