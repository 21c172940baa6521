"""Run one Faust worker: start the enrichment (models, vocabulary), then the app.

SIGTERM/SIGINT stop the worker gracefully: the batch in flight is not acked,
so its offsets stay uncommitted and another worker replays it.
"""

from __future__ import annotations

import logging

import faust

from enrich.logs import logging_config
from enrich.settings import Settings
from streams.app import create_app
from streams.kafka_tools import check_topics
from streams.services import Enrichment

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    check_topics(settings)
    enrichment = Enrichment(settings)
    enrichment.start()
    try:
        if not enrichment.wait_vocabulary(30.0):
            log.warning("tags.vocab not fully read after 30s; starting with %d tags",
                        len(enrichment.pipeline.vocabulary))
        app = create_app(settings, enrichment)
        worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False,
                              logging_config=logging_config(settings.log_level, settings.log_json))
        worker.execute_from_commandline()
    finally:
        enrichment.stop()
