"""A supervised child process (the local broker, the local Triton).

Refuses a double start, checks ports before starting, sends output to a log
file whose tail is part of every startup error, checks the process is alive
before each readiness probe, and stops idempotently (TERM, wait, KILL).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from enrich.errors import Stop

log = logging.getLogger(__name__)


class LaunchError(Stop):
    """The process could not be started or did not become ready."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the launching process dies first.
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    except OSError:
        pass


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path, ports: Sequence[tuple[str, int]] = (),
                 env: dict[str, str] | None = None, detach: bool = False) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ports = list(ports)
        self.env = env
        self.detach = detach
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise LaunchError(f"{self.name} is already running (pid {self.proc.pid})")
        if not Path(self.argv[0]).exists():
            raise LaunchError(f"{self.name}: binary {self.argv[0]} not found; install the serve extra "
                              f"(pip install -e '.[serve]')")
        for what, port in self.ports:
            if port_in_use(port):
                raise LaunchError(f"{self.name}: {what} port {port} is already in use; stop whatever holds it "
                                  f"(`enrich stack down`, or `ss -ltnp | grep {port}`) or choose another port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        log.debug("starting %s: %s (log %s)", self.name, " ".join(self.argv), self.log_path)
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True, preexec_fn=None if self.detach else _die_with_parent)
        logf.close()

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc else None
                raise LaunchError(f"{self.name} exited with code {code} before it was ready; "
                                  f"log tail ({self.log_path}):\n{tail(self.log_path)}")
            try:
                if probe():
                    return
            except Exception as exc:  # probes of a starting server fail in many ways
                log.debug("%s not ready yet: %s", self.name, exc)
            if time.monotonic() > deadline:
                self.stop()
                raise LaunchError(f"{self.name} not ready after {timeout_s:.0f}s; log tail ({self.log_path}):\n"
                                  f"{tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_pid(self.proc.pid, timeout_s, self.proc)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one that got its pid: its start time (clock ticks after boot,
    /proc/<pid>/stat field 22) and its executable's name. None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return f"{rest.split()[19]}:{name}"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def stop_pid(pid: int, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """TERM, wait, KILL. Returns False if there was no such process."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            if _state(pid) == "Z":  # exited; only its parent's wait() is missing
                return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()
    return True
