"""Recall: the indexes fed from the output topics, the query API and the inspector page."""
