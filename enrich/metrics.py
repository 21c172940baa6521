"""Prometheus metrics of the pipeline and the stream (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# handoff: the first stage sending to items.coded; publish: collision digits and the final outputs.
STAGES = ("decode", "preprocess", "embed", "candidates", "tag", "semantic_id", "handoff", "publish")

ITEMS_IN = Counter("enrich_items_in_total", "Input events taken from items.new")
ITEMS_OUT = Counter("enrich_items_enriched_total", "Items enriched and published")
INPUT_BYTES = Counter("enrich_input_bytes", "Bytes (key and value) taken from items.new")
OUTPUT_BYTES = Counter("enrich_output_bytes", "Bytes (key and value) written to the public output topics")
DLQ = Counter("enrich_dlq_total", "Events sent to the dead-letter topic", ["reason", "stage"])
STAGE_SECONDS = Histogram("enrich_stage_seconds", "Wall time per pipeline stage and batch", ["stage"],
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BATCH_SIZE = Histogram("enrich_batch_size", "Events per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
END_TO_END = Histogram("enrich_end_to_end_seconds", "Item created_at to outputs acknowledged",
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
# Freshness per stage, an operator's view of a stall without reading records: "enriched" is an item's
# created_at to the first stage's hand-off, "published" its enriched_at to the second stage's acknowledged outputs.
ITEM_AGE = Histogram("enrich_item_age_seconds", "Age an item gains in each stage (enriched: created_at to hand-off; "
                     "published: enriched_at to outputs acknowledged)", ["stage"],
                     buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))
BROKER_WAIT = Gauge("enrich_broker_wait_seconds", "How long a stage has been waiting for the broker to acknowledge "
                    "its writes (0 when it is not waiting)", ["stage"])
BACKEND_RETRIES = Counter("enrich_backend_retries_total", "Batches retried because the model server was unavailable")
BACKEND_UP = Gauge("enrich_backend_up", "1 while the last model call succeeded, 0 while retrying")
VOCAB_SIZE = Gauge("enrich_vocab_tags", "Tags in the live vocabulary")
VOCAB_PENDING = Gauge("enrich_vocab_pending_tags", "Tags in the live vocabulary not yet embedded (graded once "
                                                        "they are)")
VOCAB_REJECTED = Counter("enrich_vocab_rejected_total", "tags.vocab records skipped as invalid", ["reason"])
CONSUMER_LAG = Gauge("enrich_consumer_lag", "Records behind: high watermark minus committed offset, per assigned "
                     "input partition", ["topic", "partition"])
PAUSED_PARTITIONS = Gauge("enrich_paused_partitions", "Assigned input partitions the consumer has paused")
MODEL_SECONDS = Histogram("enrich_model_request_seconds", "Wall time of one model-server request", ["model", "backend"],
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
MODEL_ERRORS = Counter("enrich_model_request_errors_total", "Failed model-server requests", ["model", "kind"])
