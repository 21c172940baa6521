"""The error hierarchy says what to do; Triton's errors are sorted by status code; the CLI shows bugs."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from enrich.errors import (
    BackendUnavailable,
    InvalidItem,
    ModelConfigError,
    ModelRejected,
    Retry,
    RetryAlone,
    SkipItem,
    Stop,
)
from enrich.models.inference import TritonBackend
from ops.local.process import LaunchError
from streams.kafka_tools import KafkaToolError


def test_every_error_class_says_skip_retry_or_stop():
    assert issubclass(InvalidItem, SkipItem) and issubclass(BackendUnavailable, Retry)
    assert issubclass(ModelRejected, RetryAlone) and not issubclass(ModelRejected, Stop)
    for stop in (ModelConfigError, KafkaToolError, LaunchError):
        assert issubclass(stop, Stop)
    roots = {SkipItem, Retry, RetryAlone, Stop}
    assert all(len([r for r in roots if issubclass(c, r)]) == 1 for c in
               (InvalidItem, BackendUnavailable, ModelRejected, ModelConfigError, KafkaToolError, LaunchError))


@pytest.mark.parametrize("status, kind", [
    ("StatusCode.UNAVAILABLE", BackendUnavailable), ("StatusCode.DEADLINE_EXCEEDED", BackendUnavailable),
    ("StatusCode.RESOURCE_EXHAUSTED", BackendUnavailable), (None, BackendUnavailable),
    ("StatusCode.NOT_FOUND", ModelConfigError), ("StatusCode.UNAUTHENTICATED", ModelConfigError),
    ("StatusCode.INVALID_ARGUMENT", ModelRejected), ("StatusCode.INTERNAL", ModelRejected),
])
def test_triton_errors_are_classified_by_status_code_not_message(status, kind):
    backend = TritonBackend("127.0.0.1:1")
    # the message says "unavailable" whatever the status: only the code may decide
    err = backend._classify("tagger_text", InferenceServerException("model unavailable, not ready", status=status))
    assert type(err) is kind
    backend.close()


def test_the_cli_prints_expected_errors_and_shows_a_bugs_traceback(monkeypatch, capsys):
    import ops.cli as cli
    from ops.cli import kafka

    def expected(_s, _a):
        raise KafkaToolError("cannot reach the broker at x:1; start it")

    def bug(_s, _a):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(kafka, "cmd_topics", expected)
    assert cli.main(["topics", "create"]) == 1
    assert "cannot reach the broker" in capsys.readouterr().err
    monkeypatch.setattr(kafka, "cmd_topics", bug)
    with pytest.raises(ZeroDivisionError):  # python prints the traceback and exits 1
        cli.main(["topics", "create"])
