"""Starting, tracking and stopping the testbed's background processes.

Every process is started in its own session (its own process group) and remembered by PID
*and* kernel start time, so that `down` signals exactly the processes it started — even
after a reboot recycled their PIDs — and never anything found by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class TestbedError(RuntimeError):
    """A testbed part could not be prepared, started or stopped; the message says what to do."""

    __test__ = False


@dataclass(frozen=True)
class TrackedProcess:
    """A process the testbed started: enough to find it again and to prove it is the same one."""

    name: str
    pid: int
    start_ticks: int
    log_path: str
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrackedProcess:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            log_path=str(data["log_path"]),
            argv=tuple(str(arg) for arg in data["argv"]),
        )


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is gone.

    Together with the PID it identifies a process uniquely across PID reuse.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(process: TrackedProcess) -> bool:
    return process_start_ticks(process.pid) == process.start_ticks


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> TrackedProcess:
    """Start `argv` detached in its own process group, stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise TestbedError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    ticks = process_start_ticks(child.pid)
    if ticks is None:
        # It died before we could look; it is still our child, so reap it.
        child.wait()
        raise TestbedError(f"{name} exited at once (code {child.returncode}); see {log_path}")
    # Detach: the Popen object must not reap/close anything later; `down` may run in another
    # process entirely and works from the PID file.
    child.returncode = 0
    return TrackedProcess(name, child.pid, ticks, str(log_path), tuple(argv))


def stop_process(process: TrackedProcess, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group, wait up to `grace_seconds`, then SIGKILL it."""
    if not is_alive(process):
        return
    _signal_group(process.pid, signal.SIGTERM)
    # A stopped (SIGSTOP) group would never act on SIGTERM.
    _signal_group(process.pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        _reap(process.pid)
        if not is_alive(process) and not _group_exists(process.pid):
            return
        time.sleep(0.05)
    _signal_group(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        _reap(process.pid)
        if not is_alive(process) and not _group_exists(process.pid):
            return
        time.sleep(0.05)
    raise TestbedError(f"{process.name} (pid {process.pid}) survived SIGKILL")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg; they hold no port and no CPU, so they do not matter.
    return any(_is_live_member(pid, pgid) for pid in _pids())


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _is_live_member(pid: int, pgid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[2]) == pgid


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for others waitpid raises ChildProcessError.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice, so parallel runs differ)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def require_free_port(port: int, what: str, host: str = "127.0.0.1") -> None:
    if not port_is_free(port, host):
        raise TestbedError(
            f"port {host}:{port} for {what} is taken by another process; "
            "stop it or let the testbed pick free ports"
        )


def listening_ports_of_pids(pids: Sequence[int]) -> set[int]:
    """TCP ports in LISTEN state whose socket belongs to one of `pids` (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                listen_state = "0A"
                if cols[3] == listen_state and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def listening_ports() -> set[tuple[str, int]]:
    """All IPv4 (address, port) pairs in LISTEN state on this machine."""
    found: set[tuple[str, int]] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A":
                continue
            hex_addr, hex_port = cols[1].split(":")
            octets = [str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add((".".join(octets), int(hex_port, 16)))
    return found


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    process: TrackedProcess | None = None,
    interval: float = 0.2,
) -> None:
    """Poll `condition` until true; fail early (pointing at the log) if `process` died."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if process is not None and not is_alive(process):
            last_lines = tail(Path(process.log_path))
            hint = (
                " (a port it needs is taken by another process)"
                if "address already in use" in last_lines.lower()
                else ""
            )
            raise TestbedError(
                f"{process.name} exited while waiting for {what}{hint}; "
                f"last lines of {process.log_path}:\n{last_lines}"
            )
        if time.monotonic() >= deadline:
            log_hint = f"; see {process.log_path}" if process is not None else ""
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}{log_hint}")
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(content[-lines:])
