"""The end-to-end tests' shared fixture: a fresh deployment on the session's local stack."""

from __future__ import annotations

import time

import pytest
from cli_runs import cli

from ops.local.process import free_port


@pytest.fixture
def fresh(local_stack):
    """A unique topic prefix and consumer group per test, topics created through the CLI."""
    tag = f"t{time.time_ns()}."
    s = local_stack.updated(**{"topic_prefix": tag, "group_id": f"g-{tag}", "web_port": free_port(),
                                       "batch_size": 4, "lag_interval_s": 0.5})
    res = cli(s, "topics", "create")
    assert res.returncode == 0, res.stderr
    res = cli(s, "vocab", "load")
    assert res.returncode == 0 and "published 30 tags" in res.stdout, res.stderr
    return s
