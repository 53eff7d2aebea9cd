"""A function's ``invocation`` config, checked: where it is called, how, and with which credentials.

The config is the reference's (the official SDKs' ``HttpInvocationConfig``)::

    {"url": str, "method"?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE" (POST),
     "timeout_ms"?: int, "headers"?: {str: str},
     "auth"?: {"type": "bearer", "token_key": VAR}
            | {"type": "api_key", "header": str, "value_key": VAR}
            | {"type": "hmac", "secret_key": VAR}}

``auth`` names environment variables of the engine (never values: a worker does not hold the secret), read
when the function is registered, as the reference does. The values live in :class:`Credentials`, which never
shows them (its ``repr`` included); the module's messages name the variable, never its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final, Literal

from iii.modules.api import FunctionError

INVALID_CONFIG: Final = "invalid_message"
"""A config of the wrong shape: the same code the engine gives any malformed field."""
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
ENGINE_SETTINGS_PREFIX: Final = "III_ENGINE_"
"""The engine's own settings: never given to a function's URL, whatever ``secret_keys`` allows."""

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP header name (RFC 9110's token)."""
_FORBIDDEN_IN_VALUE = re.compile(r"[\x00\r\n]")

AuthType = Literal["bearer", "api_key", "hmac"]
_NOT_FOUND: Final[Mapping[str, tuple[str, str]]] = {
    "bearer": ("token_not_found", "Token not found"),
    "api_key": ("api_key_not_found", "API key not found"),
    "hmac": ("secret_not_found", "Secret not found"),
}
"""The reference's code and message for an auth variable the engine does not have, by auth type."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a call authenticates with: a bearer token, an API key in ``header``, or an HMAC secret."""

    type: AuthType
    secret: str = field(repr=False)
    header: str = ""
    """The API key's header (``api_key`` only)."""

    def __repr__(self) -> str:
        return f"Credentials(type={self.type!r}, secret=<redacted>)"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked config: the URL (checked by the URL policy separately), method, timeout and headers."""

    url: str
    method: str
    timeout_ms: int
    headers: tuple[tuple[str, str], ...] = ()
    credentials: Credentials | None = None

    def __repr__(self) -> str:  # headers may hold what the worker considers secret: never shown
        return f"Endpoint(method={self.method!r}, timeout_ms={self.timeout_ms}, credentials={self.credentials!r})"


def parse_endpoint(
    config: Any,
    *,
    default_timeout_ms: int,
    max_timeout_ms: int,
    secret_keys: tuple[str, ...],
    environ: Mapping[str, str] | None = None,
) -> Endpoint:
    """The endpoint ``config`` describes, its credentials read from ``environ`` (the engine's environment);
    :class:`FunctionError` for a config of the wrong shape (``invalid_message``) or a variable the engine does
    not have or does not give out (the reference's ``token_not_found``, ``api_key_not_found``,
    ``secret_not_found``). A ``timeout_ms`` over ``max_timeout_ms`` is cut to it."""
    if not isinstance(config, dict):
        raise _invalid(f"'invocation' must be an object, got {type(config).__name__}")
    url = config.get("url")
    if not isinstance(url, str) or not url:
        raise _invalid("'invocation.url' must be a non-empty string")
    method = config.get("method")
    if method is None:
        method = "POST"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _invalid(f"'invocation.method' must be one of {', '.join(METHODS)}, got {method!r}")
    timeout_ms = config.get("timeout_ms")
    if timeout_ms is None:
        timeout_ms = default_timeout_ms
    if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms < 1:
        raise _invalid(f"'invocation.timeout_ms' must be a positive integer, got {timeout_ms!r}")
    return Endpoint(
        url=url,
        method=method.upper(),
        timeout_ms=min(timeout_ms, max_timeout_ms),
        headers=_headers(config.get("headers")),
        credentials=_credentials(config.get("auth"), secret_keys, os.environ if environ is None else environ),
    )


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _invalid(f"'invocation.headers' must be an object of strings, got {type(value).__name__}")
    headers = []
    for name, text in value.items():
        if not isinstance(text, str):
            raise _invalid(f"'invocation.headers' value of {name!r} must be a string")
        if not _TOKEN.match(name):
            raise _invalid(f"'invocation.headers' has an invalid header name {name!r}")
        if _FORBIDDEN_IN_VALUE.search(text):  # the value itself is not repeated: it may be a credential
            raise _invalid(f"'invocation.headers' value of {name!r} has a line break or NUL")
        headers.append((name, text))
    return tuple(headers)


def _credentials(value: Any, secret_keys: tuple[str, ...], environ: Mapping[str, str]) -> Credentials | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"'invocation.auth' must be an object, got {type(value).__name__}")
    kind = value.get("type")
    if kind == "bearer":
        return Credentials("bearer", _secret(value, "token_key", "bearer", secret_keys, environ))
    if kind == "api_key":
        header = value.get("header")
        if not isinstance(header, str) or not _TOKEN.match(header):
            raise _invalid("'invocation.auth.header' must be an HTTP header name")
        return Credentials("api_key", _secret(value, "value_key", "api_key", secret_keys, environ), header)
    if kind == "hmac":
        return Credentials("hmac", _secret(value, "secret_key", "hmac", secret_keys, environ))
    raise _invalid(f"'invocation.auth.type' must be bearer, api_key or hmac, got {kind!r}")


def _secret(
    auth: dict[str, Any], key_field: str, kind: AuthType, secret_keys: tuple[str, ...], environ: Mapping[str, str]
) -> str:
    name = auth.get(key_field)
    if not isinstance(name, str) or not name:
        raise _invalid(f"'invocation.auth.{key_field}' must name an environment variable of the engine")
    code, message = _NOT_FOUND[kind]
    if name.upper().startswith(ENGINE_SETTINGS_PREFIX) or not any(fnmatchcase(name, p) for p in secret_keys):
        raise FunctionError(code, f"{message}: {name} is not one the engine gives out (secret_keys)")
    try:
        secret = environ.get(name)
    except ValueError:  # a name no environment can hold (a lone surrogate, say)
        secret = None
    if secret is None:
        raise FunctionError(code, f"{message}: {name}")
    if _FORBIDDEN_IN_VALUE.search(secret) and kind != "hmac":  # it would break the header: say so, not what it is
        raise FunctionError(code, f"{message}: {name} holds a line break or NUL, which no header can carry")
    return secret


def _invalid(message: str) -> FunctionError:
    return FunctionError(INVALID_CONFIG, message)
