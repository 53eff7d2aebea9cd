"""The rbac module: opens the RBAC worker listener and admits each worker that connects there.

Admission fails closed. The auth function's answer decides; when there is none to be had (the function is not
registered yet, it does not answer within ``auth_timeout_s``, its worker left), the worker is refused with close
code 1013, "try again later", since the refusal says nothing about the worker and the SDKs connect again; when
the function refuses (it raises) or answers something that is not an ``AuthResult``, with 1008. Both after an
``error`` message with code ``AUTH_ERROR``. Header and query values are credentials: they go to the auth function
and nowhere else (no log line has one; a refusal message that repeats one has it replaced by ``<redacted>``).
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from iii.modules.api import (
    AdmissionError,
    InvocationError,
    MetricSample,
    ModuleHost,
    WorkerPort,
    WorkerRequest,
)
from iii.protocol import errors

from .policy import UNAVAILABLE, RbacPolicy
from .rules import OPEN, Grants
from .settings import FUNCTION_ID_SETTINGS, RbacSettings

log = logging.getLogger("iii.modules.rbac")

REDACTED: Final = "<redacted>"
_MIN_REDACTED_CHARS: Final = 4
"""Shorter values are not looked for in messages: they would blank out ordinary words."""
_PLAIN_HEADERS: Final = frozenset(
    ("host", "upgrade", "connection", "sec-websocket-version", "sec-websocket-extensions", "user-agent", "origin")
)
"""Headers of every WebSocket handshake, which hold no credential."""


def secrets_of(request: WorkerRequest) -> list[str]:
    """What of a worker's request may be a credential: each header value (but the handshake's own) and each query
    value, whole and word by word (``Bearer <token>``), longest first."""
    values = [value for name, value in request.headers.items() if name not in _PLAIN_HEADERS]
    values += [value for values in request.query_params.values() for value in values]
    pieces = {piece for value in values for piece in (value, *re.split(r"[\s,;]+", value))}
    return sorted((piece for piece in pieces if len(piece) >= _MIN_REDACTED_CHARS), key=len, reverse=True)


def redact(text: str, request: WorkerRequest) -> str:
    """``text`` with whatever of ``request`` may be a credential (:func:`secrets_of`) replaced."""
    for secret in secrets_of(request):
        text = text.replace(secret, REDACTED)
    return text


class RbacModule:
    """The RBAC worker listener (see the package docstring)."""

    name = "rbac"

    def __init__(self, settings: RbacSettings | None = None) -> None:
        self.settings = settings or RbacSettings()
        self._host: ModuleHost | None = None
        self._port: WorkerPort | None = None
        self.admissions: collections.Counter[str] = collections.Counter()
        """Workers that connected, by outcome: ``admitted``, ``refused``, ``unavailable`` (told to try again)."""

    async def start(self, host: ModuleHost) -> None:
        self._host = host
        self._port = await host.serve_workers(self.settings.host, self.settings.port, self)
        if self.settings.auth_function_id is None:
            log.warning(
                "no auth_function_id in [rbac]: every worker that reaches %s is admitted (only expose_functions "
                "limits what it may call)",
                self._port.url,
            )

    async def stop(self) -> None:
        if self._port is not None:
            await self._port.close()
            self._port = None

    @property
    def url(self) -> str:
        """``ws://host:port`` of the listener (once started)."""
        assert self._port is not None, "the rbac module is not running"
        return self._port.url

    # --- admission -------------------------------------------------------------------------------------

    async def admit(self, request: WorkerRequest) -> RbacPolicy:
        """The worker's policy, from its auth function's answer; :class:`AdmissionError` refuses it (see the
        module docstring)."""
        assert self._host is not None
        grants = await self._authenticate(request)
        self.admissions["admitted"] += 1
        return RbacPolicy(self._host, self.settings, grants)

    async def _authenticate(self, request: WorkerRequest) -> Grants:
        auth = self.settings.auth_function_id
        if auth is None:
            return OPEN
        assert self._host is not None
        auth_input = {
            "headers": dict(request.headers),
            "query_params": {key: list(values) for key, values in request.query_params.items()},
            "ip_address": request.ip_address,
        }
        try:
            answer = await self._host.invoke(auth, auth_input, timeout_s=self.settings.auth_timeout_s)
        except InvocationError as exc:
            message = redact(exc.message, request)
            if exc.code in UNAVAILABLE:
                self.admissions["unavailable"] += 1
                log.warning(
                    "auth function %s could not be called for a worker from %s (%s: %s): told to try again later",
                    auth,
                    request.ip_address,
                    exc.code,
                    message,
                )
                raise AdmissionError(
                    errors.AUTH_ERROR, "the engine cannot authenticate workers now; try again later", temporary=True
                ) from None
            self.admissions["refused"] += 1
            log.info("auth function %s refused a worker from %s: %s", auth, request.ip_address, message)
            raise AdmissionError(errors.AUTH_ERROR, message) from None
        try:
            if answer is None:
                raise ValueError("it answered no result")
            return Grants.from_auth_result(answer)
        except ValueError as exc:
            self.admissions["refused"] += 1
            problem = f"auth function {auth}: {exc}"
            log.warning("%s: a worker from %s refused", problem, request.ip_address)
            raise AdmissionError(errors.AUTH_ERROR, problem) from None

    # --- reports ---------------------------------------------------------------------------------------

    def metrics(self) -> Iterable[MetricSample]:
        for outcome, count in sorted(self.admissions.items()):
            yield MetricSample(
                "rbac_admissions", count, {"outcome": outcome}, "workers at the RBAC port by outcome", "counter"
            )

    def snapshot(self) -> Mapping[str, Any]:
        settings = self.settings
        found: dict[str, Any] = {"url": self._port.url if self._port is not None else None}
        for name in FUNCTION_ID_SETTINGS:
            found[name] = getattr(settings, name)
        found["expose_functions"] = [rule.describe() for rule in settings.expose_functions]
        found["admissions"] = dict(sorted(self.admissions.items()))
        return found
