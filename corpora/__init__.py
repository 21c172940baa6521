"""The real data sources, built into committed snapshots (offline: Debian's debtags and AppStream, sample events)."""
