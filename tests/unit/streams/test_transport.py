"""The worker's consumer honours ENRICH_FETCH_MAX_WAIT_MS (faust-streaming's driver hard-codes 1500 ms)."""

import asyncio

from streams.transport import EnrichApp


def test_worker_consumer_uses_the_configured_fetch_wait():
    async def built_wait() -> int:
        app = EnrichApp("fetch-wait-test", broker="kafka://127.0.0.1:1")
        app.fetch_max_wait_ms = 7
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # builds, does not connect
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(built_wait()) == 7
