"""Running the CLI as a user does, for the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from enrich.settings import Settings
from streams.demo import settings_env


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=timeout)


def run_demo(exported: Settings, state_dir: Path, items: int = 8) -> str:
    """``enrich demo`` in a fresh state dir, reusing ``exported``'s models and codebook instead of exporting
    again; returns its output after checking it succeeded."""
    s = exported.model_copy(update={"state_dir": state_dir, "model_dir": exported.models_path,
                                    "codebook": exported.codebook_path})
    res = cli(s, "demo", "--items", str(items), timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"{items} items enriched" in res.stdout and "8 dead letters" in res.stdout
    return res.stdout


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, log_path: Path | None = None) -> object:
    """The predicate's first truthy value, polled; fails with ``what`` (and the log's tail) after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} not seen within {timeout_s:.0f}s" +
                         (f"\n{log_path.read_text()[-3000:]}" if log_path else ""))
