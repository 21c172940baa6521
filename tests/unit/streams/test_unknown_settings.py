"""An ENRICH_* variable that no setting reads is reported, not silently ignored."""

from __future__ import annotations

import subprocess
import sys

from streams.settings import Settings


def test_unknown_and_renamed_variables_are_named():
    lines = Settings.unknown_variables({"ENRICH_BATCH_SIZE": "4", "ENRICH_BACTH_WAIT_S": "1",
                                        "ENRICH_MAX_TEXT_CHARS": "9000", "PATH": "/bin"})
    assert len(lines) == 2
    assert lines[0].startswith("ENRICH_BACTH_WAIT_S is not a setting")
    assert lines[1].startswith("ENRICH_MAX_TEXT_CHARS") and "renamed ENRICH_MODEL_TEXT_CHARS" in lines[1]


def test_the_cli_warns_at_start(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ENRICH_STATE_DIR": str(tmp_path), "ENRICH_MAX_TEXT_CHARS": "9000"}
    res = subprocess.run([sys.executable, "-m", "ops.cli", "topics", "spec"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "ENRICH_MAX_TEXT_CHARS" in res.stderr and "ENRICH_MODEL_TEXT_CHARS" in res.stderr
