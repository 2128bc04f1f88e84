"""What a real operator process cost a benchmark: its /proc figures, its own histograms, its
requests in the apiserver's audit log, and where its main thread spent its time (py-spy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list"})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started (kernel-tracked, so no
    sampling can miss a short spike)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass(frozen=True)
class Histogram:
    """One Prometheus histogram as scraped: cumulative bucket counts by upper bound."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def quantile(self, q: float) -> float:
        """Like PromQL histogram_quantile: linear within the bucket the rank falls in."""
        if self.count == 0:
            return float("nan")
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if upper == float("inf"):
                    return lower_bound
                share = (rank - lower_count) / max(cumulative - lower_count, 1e-12)
                return lower_bound + (upper - lower_bound) * share
            lower_bound, lower_count = upper, cumulative
        return lower_bound

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def parse_histogram(metrics_text: str, name: str) -> Histogram:
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.split()[-1])))
        elif line.startswith(f"{name}_sum"):
            total = float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count = float(line.split()[-1])
    return Histogram(tuple(sorted(buckets)), total, count)


# --- API requests, from the apiserver's audit log of the operator's own user ----------------


@dataclass
class RequestCounts:
    """Requests the apiserver received, counted once each (by audit ID)."""

    by_verb_resource: Counter[tuple[str, str]] = field(default_factory=Counter)
    write_seconds: list[float] = field(default_factory=list)
    """How long the apiserver took over each write (received → response complete)."""

    @property
    def writes(self) -> int:
        return sum(n for (verb, _), n in self.by_verb_resource.items() if verb in WRITE_VERBS)

    @property
    def reads(self) -> int:
        return sum(n for (verb, _), n in self.by_verb_resource.items() if verb in READ_VERBS)

    @property
    def watches(self) -> int:
        return sum(n for (verb, _), n in self.by_verb_resource.items() if verb == "watch")

    @property
    def total(self) -> int:
        return sum(self.by_verb_resource.values())

    def table(self) -> list[tuple[str, str, int]]:
        return sorted(
            ((verb, resource, n) for (verb, resource), n in self.by_verb_resource.items()),
            key=lambda row: (-row[2], row[0], row[1]),
        )


class AuditReader:
    """Reads the audit log from a remembered offset: `window()` returns the requests that
    started since the last call. A watch is logged when its response starts and again when
    it ends; it counts once, when it started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._seen: set[str] = set()

    def window(self) -> RequestCounts:
        counts = RequestCounts()
        if not self.path.exists():
            return counts
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            event: Mapping[str, object] = json.loads(line)
            audit_id = str(event.get("auditID"))
            verb = str(event.get("verb"))
            if verb in WRITE_VERBS and event.get("stage") == "ResponseComplete":
                counts.write_seconds.append(_seconds_between(event))
            if audit_id in self._seen:
                continue
            self._seen.add(audit_id)
            ref = event.get("objectRef")
            resource = "(non-resource)"
            if isinstance(ref, Mapping):
                resource = str(ref.get("resource", ""))
                if ref.get("subresource"):
                    resource += f"/{ref['subresource']}"
            counts.by_verb_resource[(verb, resource)] += 1
        return counts


def _seconds_between(event: Mapping[str, object]) -> float:
    received = datetime.fromisoformat(str(event["requestReceivedTimestamp"]))
    completed = datetime.fromisoformat(str(event["stageTimestamp"]))
    return (completed - received).total_seconds()


# --- where the operator spends its time --------------------------------------------------------


class MainThreadProfile:
    """py-spy sampling one process for a bounded time; summarised as the share of the main
    thread's samples (the asyncio event loop every reconcile shares) spent in each function."""

    def __init__(self, pid: int, seconds: int, output: Path, rate: int = 20) -> None:
        self.output = output
        py_spy = Path(sys.executable).parent / "py-spy"
        self.process = subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds),
             "--rate", str(rate), "--format", "raw", "--idle", "--nonblocking",
             "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def summary(self, top: int = 10, timeout: float = 120) -> tuple[float, list[tuple[str, float]]]:
        """(busy share of the main thread, [(function, share of busy samples)])."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.output.exists():
            return float("nan"), []
        inclusive: Counter[str] = Counter()
        total = idle = 0
        for line in self.output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            frames = stack.split(";")
            # The main thread's stacks start at the interpreter's entry point.
            if not frames or not frames[0].startswith("_run_module_as_main"):
                continue
            count = int(count_text)
            total += count
            if frames[-1].startswith(("EpollSelector.select", "select ")):
                idle += count
                continue
            for frame in {f.split(" (", 1)[0] + " (" + f.split(" (", 1)[-1].split(":")[0] + ")"
                          for f in frames}:  # fmt: skip
                inclusive[frame] += count
        busy = total - idle
        if busy <= 0:
            return 0.0, []
        # Frames every sample passes through (the loop, kopf's handler invocation and daemon
        # plumbing) say nothing about where the time goes.
        skip = (
            "asyncio/", "runpy", "click/", "cli/", "kopf/_core/reactor/running",
            "kopf/_core/actions/", "kopf/_core/engines/daemons", "kopf/_core/reactor/queueing",
            "kopf/_cogs/aiokits/", "run_rollout ",
        )  # fmt: skip
        ranked = [
            (frame, n / busy)
            for frame, n in inclusive.most_common()
            if not any(s in frame for s in skip)
        ]
        return busy / total, ranked[:top]
