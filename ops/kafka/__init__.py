"""Kafka tools: the audit of a run, the backfill, and tailing a topic."""
