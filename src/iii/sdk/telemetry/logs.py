"""Log records for the engine: which exporter a record goes to (:data:`routing`), the ``logging`` handler that
sends the program's records (:class:`EngineLogHandler`), and :class:`Logger`, the official SDKs' structured log
lines."""

from __future__ import annotations

import logging
import threading
import traceback
import weakref
from typing import TYPE_CHECKING, Any, Final

from iii.protocol import otlp
from iii.sdk.context import current_telemetry

if TYPE_CHECKING:
    from iii.sdk.telemetry.exporter import Exporter


class _Routing:
    """Which exporter a log record goes to: the one of the worker whose handler makes it, else the latest one
    started (a process usually has one worker). Installs :class:`EngineLogHandler` on the root logger while
    there is an exporter that sends logs."""

    def __init__(self) -> None:
        self._exporters: list[weakref.ref[Exporter]] = []
        self._handler: EngineLogHandler | None = None
        self._lock = threading.Lock()

    def add(self, exporter: Exporter) -> None:
        """``exporter`` sends logs (its worker started)."""
        with self._lock:
            self._exporters.append(weakref.ref(exporter))
            if self._handler is None:
                self._handler = EngineLogHandler()
                logging.getLogger().addHandler(self._handler)

    def discard(self, exporter: Exporter) -> None:
        """``exporter`` takes no more logs (its worker is shutting down, or gone in a forked child)."""
        with self._lock:
            self._exporters = [ref for ref in self._exporters if ref() not in (None, exporter)]
            if not self._exporters and self._handler is not None:
                logging.getLogger().removeHandler(self._handler)
                self._handler = None

    def exporter(self) -> Exporter | None:
        """Where a record made now goes; None when nowhere."""
        # current_telemetry() is the Exporter the serving worker put in the handler's context (iii.sdk.serving),
        # or None outside handlers and with telemetry off.
        serving: Exporter | None = current_telemetry()
        if serving is not None:
            return serving if serving.settings.logs_enabled else None
        for ref in reversed(self._exporters):
            found = ref()
            if found is not None:
                return found
        return None


routing: Final = _Routing()
"""The process's routing of log records."""


def severity(levelno: int) -> tuple[int, str]:
    """OpenTelemetry's severity number and text for a Python logging level."""
    if levelno >= logging.CRITICAL:
        return 21, "FATAL"
    if levelno >= logging.ERROR:
        return 17, "ERROR"
    if levelno >= logging.WARNING:
        return 13, "WARN"
    if levelno >= logging.INFO:
        return 9, "INFO"
    if levelno >= logging.DEBUG:
        return 5, "DEBUG"
    return 1, "TRACE"


_OWN_LOGGERS: Final = frozenset(("iii", "picows"))
"""Loggers whose records are not sent: the SDK's and its transport's (an engine and a worker in one process must
not feed each other's logs, nor the telemetry socket log its own sending)."""


class EngineLogHandler(logging.Handler):
    """Sends the program's ``logging`` records to the engine (those its logging configuration lets through),
    with the trace and span ids of the handler they are made in. The records of :data:`_OWN_LOGGERS` are left
    out."""

    def handle(self, record: logging.LogRecord) -> bool:  # no lock: the queue is thread-safe
        name = record.name
        if name.partition(".")[0] in _OWN_LOGGERS:
            return False
        exporter = routing.exporter()
        if exporter is None:
            return False
        try:
            body = record.getMessage()
        except Exception:
            body = str(record.msg)
        details: dict[str, Any] = {
            "logger.name": name,
            "code.filepath": record.pathname,
            "code.function": record.funcName,
            "code.lineno": record.lineno,
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            details["exception.type"] = type(error).__name__
            details["exception.message"] = str(error)
            details["exception.stacktrace"] = "".join(traceback.format_exception(error))
        number, text = severity(record.levelno)
        exporter.log(number, text, body, otlp.attributes(details))
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


_LEVELS: Final = {"debug": (5, "DEBUG"), "info": (9, "INFO"), "warn": (13, "WARN"), "error": (17, "ERROR")}
_fallback: Final = logging.getLogger("iii.logger")


class Logger:
    """Structured log lines sent to the engine, as the official SDKs' ``Logger``: ``info``, ``warn``, ``error``
    and ``debug``, each ``(message, data=None)``; ``data`` goes in the record's ``log.data`` attribute. Lines
    made in a handler carry its trace and span ids (or the ones given here). Without a worker that sends
    telemetry, the line goes to Python ``logging`` (logger ``iii.logger``) instead."""

    def __init__(
        self, trace_id: str | None = None, service_name: str | None = None, span_id: str | None = None
    ) -> None:
        self._trace_id = trace_id
        self._service_name = service_name or ""
        self._span_id = span_id

    def _emit(self, level: str, message: str, data: Any) -> None:
        exporter = routing.exporter()
        if exporter is None:
            method = _fallback.warning if level == "warn" else getattr(_fallback, level)
            method("[%s] %s", self._service_name, message, extra={"data": data})
            return
        details: dict[str, Any] = {"service.name": self._service_name}
        if data is not None:
            details["log.data"] = data
        number, text = _LEVELS[level]
        exporter.log(number, text, str(message), otlp.attributes(details), self._trace_id, self._span_id)

    def info(self, message: str, data: Any = None) -> None:
        self._emit("info", message, data)

    def warn(self, message: str, data: Any = None) -> None:
        self._emit("warn", message, data)

    def error(self, message: str, data: Any = None) -> None:
        self._emit("error", message, data)

    def debug(self, message: str, data: Any = None) -> None:
        self._emit("debug", message, data)
