"""Run one Faust worker: check the topics, then run the app (its Enrichment service starts first).

SIGTERM/SIGINT stop the worker gracefully: the batches in flight drain for ``ENRICH_DRAIN_S`` at most;
a batch not acked by then keeps its offsets uncommitted and another worker replays it.
"""

from __future__ import annotations

import faust

from enrich.logs import logging_config
from enrich.settings import Settings
from streams.app import create_app
from streams.kafka_tools import check_topics


def run_worker(settings: Settings) -> None:
    check_topics(settings)
    worker = faust.Worker(create_app(settings), loglevel=settings.log_level, redirect_stdouts=False,
                          logging_config=logging_config(settings.log_level, settings.log_json))
    worker.execute_from_commandline()
