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
def tansu_stack(model_settings: ToolSettings) -> Iterator[ToolSettings]:
    """The embedded Tansu broker (the demo's) and the real Triton; for the tests of that broker's own ways."""
    from ops.local.harness import private_stack

    with private_stack(model_settings, lambda _m: None, backend="triton", local_broker="tansu") as private:
        yield private.settings


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
