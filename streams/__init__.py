"""Faust side: the app, topics, agents and services, and the local broker launcher.

Thin by design: batches in, ``enrich.Pipeline`` runs, outputs out.
"""
