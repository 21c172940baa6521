"""The enrichment pipeline as plain, synchronous, Kafka-free code.

Schemas, preprocessing, inference backends, tag candidates and scoring,
semantic IDs. Never imports Faust or Kafka clients.
"""
