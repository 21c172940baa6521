"""A private local stack for one run of a tool, its workers, and the one loop that waits for their outputs.

The demo, ``enrich eval``, ``enrich bench`` and capacity all start the same thing: the models and codebook
ensured, a broker and Triton on free ports, worker subprocesses with the settings in their environment; then
they read output topics until what they published has come out, or a worker dies, or time runs out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from enrich.errors import EnrichError
from ops.kafka.clients import TopicReader
from ops.local.process import free_port
from ops.local.stack import LocalStack, ensure_codebook, ensure_models, replication, start_stack
from ops.settings import ToolSettings

Say = Callable[[str], None]


def settings_env(settings: ToolSettings) -> dict[str, str]:
    """This process's environment with the settings as ENRICH_* variables, for a child process."""
    return dict(os.environ) | settings.as_env()


def on_free_ports(settings: ToolSettings) -> ToolSettings:
    """The settings of a private local stack: free ports, a short session timeout so groups join fast,
    and short fetch waits (Tansu holds every fetch for its whole wait)."""
    ports = {k: free_port() for k in ("broker_port", "triton_http_port", "triton_grpc_port",
                                      "triton_metrics_port", "web_port")}
    return settings.updated(**ports, broker=f"127.0.0.1:{ports['broker_port']}",
                            triton_url=f"127.0.0.1:{ports['triton_grpc_port']}", session_timeout_s=6.0,
                            fetch_max_wait_ms=10,
                            replication_factor=1, min_insync_replicas=1)  # one broker: no replicas to wait for


def start_worker(settings: ToolSettings, log_path: os.PathLike[str]) -> subprocess.Popen[bytes]:
    """``enrich worker`` as a subprocess with ``settings``, its output appended to ``log_path``."""
    logf = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "worker"], env=settings_env(settings),
                            stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    return proc


@dataclass(frozen=True)
class PrivateStack:
    settings: ToolSettings  # the tool's settings, reaching this stack's broker and Triton
    stack: LocalStack
    logs: Path  # where its workers' logs go


@contextmanager
def private_stack(settings: ToolSettings, say: Say, logs: str = "", **overrides: object) -> Iterator[PrivateStack]:
    """Models and codebook ensured, then a broker and Triton on free ports for the ``with`` block, the
    settings ``overrides`` applied; both are stopped on the way out, whatever happened. Worker logs go to
    ``<state dir>/logs/<logs>``."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_models(settings, progress=say)
    ensure_codebook(settings, progress=say)
    settings = on_free_ports(settings).updated(**overrides)
    log_dir = settings.state_dir / "logs" / logs
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = start_stack(settings, progress=say)
    # every broker in the bootstrap list; replicas as the cluster allows (the production defaults need three)
    settings = settings.updated(broker=stack.bootstrap, **replication(stack.broker))
    try:
        yield PrivateStack(settings, stack, log_dir)
    finally:
        stack.stop()
        say("stack stopped")


def read_until(reader: TopicReader, on_record: Callable[[object], None], done: Callable[[], bool],
               timeout_s: float, workers: Sequence[subprocess.Popen[bytes]], missing: Callable[[], str],
               poll_s: float = 0.5) -> None:
    """Hand every record ``reader`` polls to ``on_record`` until ``done()``. Raises if a worker exits first
    or ``timeout_s`` passes, saying what is ``missing()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise EnrichError(f"outputs incomplete after {timeout_s:.0f}s: {missing()}; see the worker log")
        if any(w.poll() is not None for w in workers):
            raise EnrichError("a worker exited early; see its log")
        for rec in reader.poll(poll_s):
            on_record(rec)
