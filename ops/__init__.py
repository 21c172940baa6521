"""The tools around the worker: the `enrich` CLI, the local stack, demo, benchmarks, evaluation,
backfill, audit and the recall consumer."""
