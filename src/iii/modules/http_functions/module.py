"""The http_functions module: serves the functions workers register with an ``invocation`` by calling their URL."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import aiohttp
from aiohttp.resolver import DefaultResolver

from iii.modules.api import CallInfo, FunctionError, FunctionRegistration, Handler, MetricSample, ModuleHost

from . import invoker
from .endpoint import Endpoint, parse_endpoint
from .policy import GuardedResolver, UrlPolicy
from .settings import HttpFunctionsSettings

log = logging.getLogger("iii.modules.http_functions")

LIMIT_EXCEEDED: Final = "limit_exceeded"
OK: Final = "ok"


class HttpFunctionsModule:
    """Calls HTTP endpoints for the functions registered with an ``invocation`` (see the package docstring)."""

    name = "http_functions"

    def __init__(self, settings: HttpFunctionsSettings | None = None) -> None:
        self.settings = settings or HttpFunctionsSettings()
        self.policy = UrlPolicy(
            self.settings.url_allowlist, self.settings.block_private_ips, self.settings.require_https
        )
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_calls)
        self._session: aiohttp.ClientSession | None = None
        self.in_progress = 0
        """Calls holding a slot (their request is out)."""
        self.waiting = 0
        """Calls waiting for a slot."""
        self.outcomes: collections.Counter[str] = collections.Counter()
        """Finished calls by outcome: ``ok`` or the error code."""

    async def start(self, host: ModuleHost) -> None:
        host.provide_function_kind("invocation", self)  # first: a host that cannot, fails before anything opens
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(DefaultResolver(), self.settings.block_private_ips),
            limit=self.settings.max_concurrent_calls,
        )
        # No cookies kept (one function's endpoint must not set what another's receives), no proxy from the
        # environment, no timeout of the session's own: each call has its function's.
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            auto_decompress=True,
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the function kind -----------------------------------------------------------------------------

    def accept(self, registration: FunctionRegistration) -> Handler:
        """Check the registration's ``invocation`` (its URL against the policy, its credentials in the engine's
        environment) and serve it; :class:`FunctionError` says why not."""
        settings = self.settings
        endpoint = parse_endpoint(
            registration.config,
            default_timeout_ms=settings.default_timeout_ms,
            max_timeout_ms=settings.max_timeout_ms,
            secret_keys=settings.secret_keys,
        )
        self.policy.check(endpoint.url)
        function_id = registration.function_id

        async def serve(data: Any, call: CallInfo) -> Any:
            return await self.call(endpoint, function_id, data)

        return serve

    async def call(self, endpoint: Endpoint, function_id: str, data: Any) -> Any:
        """One call: a slot, then the request, both within the endpoint's timeout."""
        session = self._session
        if session is None:
            raise FunctionError("invocation_stopped", "the http_functions module is not running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + endpoint.timeout_ms / 1000
        try:
            self.waiting += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            except TimeoutError:
                limit = self.settings.max_concurrent_calls
                raise FunctionError(
                    LIMIT_EXCEEDED,
                    f"{function_id}: all {limit} HTTP call slots (max_concurrent_calls) stayed busy for its "
                    f"timeout of {endpoint.timeout_ms} ms",
                ) from None
            finally:
                self.waiting -= 1
            self.in_progress += 1
            try:
                async with asyncio.timeout_at(deadline):
                    result = await invoker.call(
                        session, endpoint, function_id, data, max_response_bytes=self.settings.max_response_bytes
                    )
            except TimeoutError:
                raise FunctionError(
                    invoker.HTTP_REQUEST_FAILED, f"{function_id}: no response within {endpoint.timeout_ms} ms"
                ) from None
            finally:
                self.in_progress -= 1
                self._slots.release()
        except FunctionError as error:
            self.outcomes[error.code] += 1
            log.debug("function=%s failed: %s: %s", function_id, error.code, error.message)
            raise
        self.outcomes[OK] += 1
        return result

    # --- reports ---------------------------------------------------------------------------------------

    def metrics(self) -> Iterable[MetricSample]:
        for outcome, count in sorted(self.outcomes.items()):
            yield MetricSample(
                "http_function_calls", count, {"outcome": outcome}, "HTTP-invoked function calls by outcome", "counter"
            )
        yield MetricSample("http_function_calls_in_progress", self.in_progress, help="HTTP function calls out now")
        yield MetricSample("http_function_calls_waiting", self.waiting, help="HTTP function calls waiting for a slot")

    def snapshot(self) -> Mapping[str, Any]:
        settings = self.settings
        return {
            "url_allowlist": list(settings.url_allowlist),
            "block_private_ips": settings.block_private_ips,
            "require_https": settings.require_https,
            "max_concurrent_calls": settings.max_concurrent_calls,
            "calls_in_progress": self.in_progress,
            "calls_waiting": self.waiting,
            "calls": dict(sorted(self.outcomes.items())),
        }
