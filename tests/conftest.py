"""Shared fixtures: tiny exported models (once per session) and the real local stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.settings import ToolSettings


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory: pytest.TempPathFactory) -> ToolSettings:
    """ToolSettings whose state dir holds freshly exported tiny models and a fitted codebook."""
    from ops.local.stack import ensure_codebook, ensure_models

    state = tmp_path_factory.mktemp("state")
    s = ToolSettings(state_dir=state, backend="onnxruntime", session_timeout_s=6.0, web_port=0, model_preset="tiny")
    ensure_models(s, progress=lambda _m: None)
    ensure_codebook(s, progress=lambda _m: None)
    return s


@pytest.fixture(scope="session")
def small_model_settings(tmp_path_factory: pytest.TempPathFactory) -> ToolSettings:
    """ToolSettings whose state dir holds the exported real small presets and a codebook fitted on them."""
    from ops.local.stack import ensure_codebook, ensure_models

    state = tmp_path_factory.mktemp("small")
    s = ToolSettings(state_dir=state, backend="onnxruntime", session_timeout_s=6.0, web_port=0, model_preset="small")
    ensure_models(s, progress=lambda _m: None)
    ensure_codebook(s, progress=lambda _m: None)
    return s


@pytest.fixture(scope="session")
def multilingual_model_settings(tmp_path_factory: pytest.TempPathFactory) -> ToolSettings:
    """ToolSettings whose state dir holds the exported multilingual preset and a codebook fitted on it."""
    from ops.local.stack import ensure_codebook, ensure_models

    state = tmp_path_factory.mktemp("multilingual")
    s = ToolSettings(state_dir=state, backend="onnxruntime", session_timeout_s=6.0, web_port=0,
                     model_preset="multilingual")
    ensure_models(s, progress=lambda _m: None)
    ensure_codebook(s, progress=lambda _m: None)
    return s


@pytest.fixture(scope="session")
def local_stack(model_settings: ToolSettings) -> Iterator[ToolSettings]:
    """Apache Kafka (one node) and the real Triton on free ports; yields settings pointing at them."""
    from ops.local.harness import private_stack

    with private_stack(model_settings, lambda _m: None, backend="triton", local_broker="kafka") as private:
        yield private.settings


@pytest.fixture(scope="session")
def tansu_stack(model_settings: ToolSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolSettings]:
    """The embedded Tansu broker alone (the demo's); for the tests of that broker's own ways."""
    from ops.local.broker import LocalBroker
    from ops.local.process import free_port

    broker = LocalBroker(free_port(), tmp_path_factory.mktemp("tansu") / "broker.log").start_and_wait()
    try:
        yield model_settings.updated(broker=broker.bootstrap, local_broker="tansu", replication_factor=1,
                                     min_insync_replicas=1)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def small_stack(small_model_settings: ToolSettings) -> Iterator[ToolSettings]:
    """Apache Kafka and the real Triton serving the small presets; yields settings pointing at them."""
    from ops.local.harness import private_stack

    with private_stack(small_model_settings, lambda _m: None, backend="triton", batch_size=8,
                       local_broker="kafka") as private:
        yield private.settings


@pytest.fixture(scope="session")
def models_dir(model_settings: ToolSettings) -> Path:
    return model_settings.models_path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the fault-injection tests long (more waves and items)")


# Which broker each test ran against, printed at the end of the run (the suite runs its Kafka legs on Apache
# Kafka and keeps Tansu legs for the embedded broker's own ways).
BROKER_OF_FIXTURE = {
    "local_stack": "Apache Kafka {version}, 1 node", "small_stack": "Apache Kafka {version}, 1 node",
    "cluster": "Apache Kafka {version}, 3 nodes (replication 3, min.insync.replicas 2)",
    "secured": "Apache Kafka {version}, 1 node, SASL/SCRAM + ACLs", "tansu_stack": "Tansu (embedded)",
}
_legs: dict[str, list[str]] = {}


@pytest.fixture(autouse=True)
def _record_broker(request: pytest.FixtureRequest) -> None:
    from ops.local.kafka import KAFKA_VERSION

    used = [name for name in BROKER_OF_FIXTURE if name in request.fixturenames]
    if used:
        # the most specific fixture a test asks for names its broker
        label = BROKER_OF_FIXTURE[sorted(used, key=list(BROKER_OF_FIXTURE).index)[-1]].format(version=KAFKA_VERSION)
        _legs.setdefault(label, []).append(request.node.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _legs:
        return
    terminalreporter.section("brokers")
    for label, tests in sorted(_legs.items()):
        terminalreporter.write_line(f"{label}: {len(tests)} tests")
