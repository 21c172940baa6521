"""Logging set-up, done once by the CLI: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def logging_config(level: str, as_json: bool) -> dict[str, Any]:
    """A dictConfig (also handed to the Faust worker so it does not install its own format)."""
    fmt: dict[str, Any] = ({"()": JsonFormatter} if as_json else
                           {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure(level: str = "info", as_json: bool = False) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level, as_json))
