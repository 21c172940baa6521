"""The two ways to start a worker run the same start-up checks, and building the app loads nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ops.local.harness import settings_env
from ops.local.process import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("command", [["-m", "ops.cli", "worker"], ["-m", "faust", "-A", "streams.app", "worker"]],
                         ids=["enrich worker", "faust -A streams.app worker"])
def test_both_entry_points_refuse_missing_topics_with_the_fix(local_stack, tmp_path, command):
    s = local_stack.updated(topic_prefix=f"missing{time.time_ns()}.", web_port=free_port(), state_dir=tmp_path,
                            model_dir=local_stack.models_path, codebook=local_stack.codebook_path)
    res = subprocess.run([sys.executable, *command], env=settings_env(s), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0
    assert f"topics missing: {s.topic('items.new')}" in res.stdout + res.stderr
    assert "run `enrich topics create`" in res.stdout + res.stderr


def test_faust_help_works_where_no_model_was_exported(tmp_path):
    from ops.settings import ToolSettings

    s = ToolSettings(state_dir=tmp_path)  # an empty state dir: no models, no codebook
    res = subprocess.run([sys.executable, "-m", "faust", "-A", "streams.app", "--help"], env=settings_env(s),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "worker" in res.stdout
