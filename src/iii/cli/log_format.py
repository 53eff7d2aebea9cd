"""The engine's log lines: one event per line, ``key=value`` text or JSON objects.

Messages are written as ``what happened key=value key=value`` (``worker=… name=… functions=3``); the JSON
form keeps the message and lifts those pairs into fields, so a log pipeline can filter on them. Keys and
tokens are never in the messages to begin with (tests/reliability/test_secrets.py).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any, Final

FORMATS: Final = ("kv", "json")
_PAIR: Final = re.compile(r"\b([a-z_]+)=(\S+)")
_KV_FORMAT: Final = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


class KeyValueFormatter(logging.Formatter):
    """``time level=… logger=… message`` with line breaks in the message escaped, so that a value a peer
    chose (a worker's name, say) cannot start a line that looks like another event."""

    def __init__(self) -> None:
        super().__init__(_KV_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line.replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the message's ``key=value`` pairs, and
    the exception's text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in _PAIR.findall(message):
            event.setdefault(key, value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "kv") -> None:
    """Log to stderr at ``level`` in ``kv`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if root.level > logging.DEBUG:
        # picows logs every accepted connection and every flow-control pause (normal backpressure) at
        # INFO and WARNING; the engine logs what matters about connections itself.
        logging.getLogger("picows").setLevel(logging.ERROR)
