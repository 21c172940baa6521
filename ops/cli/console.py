"""What every command prints with: one line at a time, flushed (the tools run under pipes and CI logs)."""

from __future__ import annotations


def say(msg: str) -> None:
    print(msg, flush=True)
