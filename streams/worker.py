"""Run one Faust worker: the app, whose Enrichment service starts first (it checks the topics and loads the
models, as it does under ``faust -A streams.app worker``).

SIGTERM/SIGINT stop the worker gracefully: the batches in flight drain for ``ENRICH_DRAIN_S`` at most;
a batch not acked by then keeps its offsets uncommitted and another worker replays it.
"""

from __future__ import annotations

import faust

from enrich.logs import logging_config
from streams.app import create_app
from streams.settings import Settings


def run_worker(settings: Settings) -> None:
    worker = faust.Worker(create_app(settings), loglevel=settings.log_level, redirect_stdouts=False,
                          logging_config=logging_config(settings.log_level, settings.log_json))
    worker.execute_from_commandline()
