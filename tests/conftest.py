"""Shared fixtures: tiny exported models (once per session) and the real local stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from enrich.process import free_port
from enrich.settings import Settings


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose state dir holds freshly exported tiny models and a fitted codebook."""
    from streams.stack import ensure_codebook, ensure_models

    state = tmp_path_factory.mktemp("state")
    s = Settings(state_dir=state, backend="onnxruntime", session_timeout_s=6.0, web_port=0)
    ensure_models(s, progress=lambda _m: None)
    ensure_codebook(s, progress=lambda _m: None)
    return s


@pytest.fixture(scope="session")
def local_stack(model_settings: Settings) -> Iterator[Settings]:
    """The real Tansu broker and real Triton on free ports; yields settings pointing at them."""
    from streams.stack import start_stack

    ports = {k: free_port() for k in ("broker_port", "triton_http_port", "triton_grpc_port", "triton_metrics_port")}
    s = model_settings.model_copy(update=ports | {"broker": f"127.0.0.1:{ports['broker_port']}",
                                                  "triton_url": f"127.0.0.1:{ports['triton_grpc_port']}",
                                                  "backend": "triton", "fetch_max_wait_ms": 10})
    stack = start_stack(s, progress=lambda _m: None)
    yield s
    stack.stop()


@pytest.fixture(scope="session")
def models_dir(model_settings: Settings) -> Path:
    return model_settings.models_path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the fault-injection tests long (more waves and items)")
