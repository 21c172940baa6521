"""The worker's Faust app class: services started before the consumer, and a configurable fetch wait.

The driver hard-codes ``fetch_max_wait_ms=1500``. Kafka answers a fetch as soon as
data arrives, so there it only bounds idle polling; the bundled Tansu broker answers
only when the wait is up, which added up to 1.5 s per topic hop (measured: a steady
16 items/s had a p50 end to end of 1.2 s over the two hops). The wait comes from
``Settings.fetch_max_wait_ms``; nothing else of the driver changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import faust
from faust.transport.drivers import aiokafka as driver
from mode import ServiceT

S = TypeVar("S", bound=ServiceT)


def _serve_partitions_in_turn() -> None:
    """aiokafka's fetcher hands out prefetched records partition by partition in the order their fetches
    arrived, taking ``max_records`` from the first partition that has any: a backlog on one partition (one
    producer batch can hold hundreds of items) was served whole before a record of another partition, so a
    trickle waited behind the backlog for seconds (tests/e2e/test_fairness_e2e.py). Every partition served goes
    to the back of the line, so with ``broker_max_poll_records`` at one micro-batch the partitions take turns."""
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher.fetched_records, "serves_in_turn", False):
        return
    original = Fetcher.fetched_records

    async def fetched_records(self: Any, partitions: Any, timeout: float = 0, max_records: int | None = None) -> Any:
        drained = await original(self, partitions, timeout, max_records)
        for tp in drained:
            if tp in self._records:
                self._records[tp] = self._records.pop(tp)
        return drained

    fetched_records.serves_in_turn = True  # type: ignore[attr-defined]
    Fetcher.fetched_records = fetched_records


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts and builds its fetcher (aiokafka 0.12/0.13).
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def consumer_class(fetch_max_wait_ms: int) -> type[driver.Consumer]:
    thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return thread(self, loop=self.loop, beacon=self.beacon)

    return Consumer


class EnrichApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch, and whose own services start
    before its consumer (``start_first``) and so stop after it."""

    fetch_max_wait_ms: int = 1500
    enrichment: Any = None  # the Enrichment service (streams.app.create_app)
    stream_topics: dict[str, Any] = {}  # the stages' topics by unprefixed name

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first: list[ServiceT] = []

    def start_first(self, service: S) -> S:
        """Start ``service`` with the app, before the consumer and the agents: ``@app.service`` services start
        only once the app is running, when the agents may already be handed events."""
        self._first.append(service)
        return service

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        return [*self._first, *super().on_init_dependencies()]

    def _new_transport(self) -> Any:
        _serve_partitions_in_turn()
        transport = super()._new_transport()
        if isinstance(transport, driver.Transport):
            transport.Consumer = consumer_class(self.fetch_max_wait_ms)
        return transport
