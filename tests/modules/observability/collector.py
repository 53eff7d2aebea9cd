"""A real OTLP/HTTP collector for the export tests: an aiohttp server on a loopback ephemeral port that takes
``POST /v1/logs``, ``/v1/traces`` and ``/v1/metrics`` and decodes each body with the OpenTelemetry protobuf
definitions (``opentelemetry-proto``'s export requests, through protobuf's JSON parser, after turning OTLP/JSON's
hex ids into the base64 protobuf's JSON mapping expects), as a collector would: a body it cannot parse fails the
test that sent it.

It can answer with another status for a while (``answers``: a list of statuses used first, one per request), and
be stopped and started again on the same port (a collector that is down, then comes up).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from tests.modules.observability.test_otlp_oracle import protobuf_request
from tests.otlp_json import hex_ids_to_base64

TAGS = {"/v1/logs": b"LOGS", "/v1/traces": b"OTLP", "/v1/metrics": b"MTRC"}


@dataclass
class Received:
    """One request the collector accepted: its path, headers, JSON document and protobuf export request."""

    path: str
    headers: dict[str, str]
    document: dict[str, Any]
    request: Message


@dataclass
class Collector:
    port: int = 0
    answers: list[int] = field(default_factory=list)
    """Statuses to answer before accepting (503 sends ``Retry-After: 0``)."""
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    """Requests that reached the collector, accepted or not."""
    problems: list[str] = field(default_factory=list)
    """Bodies that did not parse as their export request, or had the wrong content type."""

    def __post_init__(self) -> None:
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Collector:
        """Listen (on :attr:`port`, the one it had before when started again)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in TAGS:
            app.router.add_post(path, self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._changed:
            self.attempts += 1
            self._changed.notify_all()
            if self.answers:
                status = self.answers.pop(0)
                headers = {"Retry-After": "0"} if status == 503 else {}
                return web.Response(status=status, text=f"answered {status}", headers=headers)
            try:
                if request.content_type != "application/json":
                    raise ValueError(f"content type {request.content_type}")
                document = json.loads(body)
                parsed = protobuf_request(TAGS[request.path], hex_ids_to_base64(document))
            except Exception as exc:
                self.problems.append(f"{request.path}: {exc!r}: {body[:300]!r}")
                return web.Response(status=400, text=str(exc))
            self.received.append(Received(request.path, dict(request.headers), document, parsed))
            self._changed.notify_all()
        return web.json_response({})

    async def wait_until(self, check: Any, timeout_s: float = 10.0) -> None:
        """Wait until ``check()`` is true (asked after each request), failing the test after ``timeout_s``."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(check)

    def logs(self) -> list[Any]:
        """Every log record received, in order (protobuf ``LogRecord`` s)."""
        return [
            record
            for received in self.received
            if received.path == "/v1/logs"
            for resource_logs in received.request.resource_logs  # type: ignore[attr-defined]
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    def bodies(self) -> list[str]:
        """The bodies of the log records received, in order."""
        return [record.body.string_value for record in self.logs()]

    def spans(self) -> list[tuple[str, Any]]:
        """Every span received, with its resource's ``service.name``."""
        found = []
        for received in self.received:
            if received.path != "/v1/traces":
                continue
            for resource_spans in received.request.resource_spans:  # type: ignore[attr-defined]
                attributes = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((attributes.get("service.name", ""), span) for span in scope_spans.spans)
        return found
