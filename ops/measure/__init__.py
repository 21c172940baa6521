"""Measurement: enrich eval (per kind, per language, emoji), quality metrics, the bench, the semantic-ID
evaluation and capacity planning."""
