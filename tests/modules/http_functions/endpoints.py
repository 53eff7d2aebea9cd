"""A real HTTP server on loopback for the http_functions tests: the endpoints that functions call.

Every request is recorded (:attr:`Endpoints.requests`). The routes answer the ways an endpoint may: an echo of
the request, no content, a body that is not JSON, errors with and without the reference's error shape, a
redirect, a large body, an error that repeats the request's credentials, and a response held back until the
test releases it (counting how many are held at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Request:
    path: str
    method: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Endpoints:
    requests: list[Request] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set it to let the held responses (``/hold``) go."""
    held: int = 0
    most_held: int = 0
    held_changed: asyncio.Event = field(default_factory=asyncio.Event)
    redirect_to: str = ""
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        for path, handler in {
            "/echo": self._echo,
            "/empty": self._empty,
            "/text": self._text,
            "/upstream-error": self._upstream_error,
            "/plain-error": self._plain_error,
            "/odd-error": self._odd_error,
            "/moved": self._moved,
            "/hold": self._hold,
            "/big": self._big,
            "/echo-credentials-error": self._credentials_error,
        }.items():
            app.router.add_route("*", path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> Request:
        recorded = Request(request.path, request.method, CIMultiDict(request.headers), await request.read())
        self.requests.append(recorded)
        return recorded

    async def _echo(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        return web.json_response({"method": recorded.method, "body": recorded.body.decode()})

    async def _empty(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=204)

    async def _text(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="not-json")

    async def _upstream_error(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"error": {"code": "UPSTREAM_ERROR", "message": "upstream failed"}}, status=502)

    async def _plain_error(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=400, text="nope")

    async def _odd_error(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"error": "a string, not an object"}, status=500)

    async def _moved(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"moved": True}, status=302, headers={"Location": self.redirect_to})

    async def _hold(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        self.held_changed.set()
        try:
            await self.release.wait()
        finally:
            self.held -= 1
        return web.json_response({"released": True})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        size = int(request.query["bytes"])
        if "chunked" not in request.query:
            return web.Response(body=b"x" * size, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(size // 100):
            await response.write(b"x" * 100)
        await response.write_eof()
        return response

    async def _credentials_error(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        given = recorded.headers.get("Authorization", "") + recorded.headers.get("X-Api-Key", "")
        error: dict[str, Any] = {"code": f"denied:{given}", "message": f"the credentials {given} are not valid"}
        return web.json_response({"error": error}, status=401)

    async def wait_held(self, count: int, timeout_s: float = 10) -> None:
        """Wait until ``count`` responses are held at once."""
        async with asyncio.timeout(timeout_s):
            while self.held < count:
                self.held_changed.clear()
                await self.held_changed.wait()
