"""The http_functions module's settings: the ``[http_functions]`` table of the engine's TOML file."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpFunctionsSettings:
    """Which URLs functions may have, how many calls go out at once and how long each may take.

    The URL policy's defaults are the reference engine's: any host, but HTTPS only and no private address.
    An engine whose workers call webhooks on loopback (the official SDKs' test suites) relaxes them::

        [http_functions]
        url_allowlist = ["localhost", "127.0.0.1"]
        block_private_ips = false
        require_https = false
    """

    url_allowlist: tuple[str, ...] = ("*",)
    """Glob patterns of the hosts a function's URL may name (``*.example.com``, ``127.0.0.1``); ``*``: any."""
    block_private_ips: bool = True
    """Refuse every address that is not global (loopback, private, link-local, ...) or is multicast: a URL naming
    one is refused when registered, a host name resolving to one when it is called (the check is on the
    addresses connected to, so a name cannot change its answer in between)."""
    require_https: bool = True
    """Refuse ``http://`` URLs."""
    secret_keys: tuple[str, ...] = ("*",)
    """Glob patterns of the engine's environment variables a function's ``auth`` may name (``WEBHOOK_*``): a
    worker names a variable, and its value goes to the function's URL. The engine's own settings
    (``III_ENGINE_*``) are never given out."""
    max_concurrent_calls: int = 256
    """HTTP calls in progress at once; later ones wait for a slot (within their timeout)."""
    default_timeout_ms: int = 30_000
    """A function's timeout when its registration gives none (the reference's default)."""
    max_timeout_ms: int = 60_000
    """The longest a call may take, waiting for a slot included; a registration's ``timeout_ms`` above it is
    cut to it (the reference's HTTP client gives up after 60 s too)."""
    max_response_bytes: int = 16 * MIB
    """The largest response body read (a larger one fails the call with ``http_response_failed``)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("url_allowlist", "secret_keys"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(item, str) and item for item in value):
                problems.append(f"{name} must be a list of non-empty strings, got {value!r}")
            else:
                object.__setattr__(self, name, tuple(value))  # a TOML array arrives as a list
        if not self.url_allowlist:
            problems.append('url_allowlist must not be empty (["*"] allows every host)')
        for name in ("block_private_ips", "require_https"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("max_concurrent_calls", "default_timeout_ms", "max_timeout_ms", "max_response_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))
