"""`enrich stack down` stops only the processes `stack up` started, never a process that got their pid later."""

from __future__ import annotations

import json
import subprocess

from ops.local.process import process_identity
from ops.local.stack import stack_down
from ops.settings import ToolSettings


def test_stack_down_stops_its_own_processes_and_leaves_a_reused_pid_alone(tmp_path):
    own = subprocess.Popen(["sleep", "60"])
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        s = ToolSettings(state_dir=tmp_path)
        (tmp_path / "stack.json").write_text(json.dumps({
            "broker": {"pid": own.pid, "identity": process_identity(own.pid)},
            # what a pid reused after the recorded process died looks like: same pid, another start time
            "triton": {"pid": stranger.pid, "identity": "1:tritonserver"},
        }))
        said: list[str] = []
        stack_down(s, said.append)
        assert own.wait(10) is not None
        assert stranger.poll() is None, "a process that is not the stack's was killed"
        assert any("left alone" in line for line in said) and not (tmp_path / "stack.json").exists()
    finally:
        for p in (own, stranger):
            p.kill()
            p.wait()
