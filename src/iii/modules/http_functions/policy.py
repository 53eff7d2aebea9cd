"""Which URLs a function may call: the allowlist of hosts, HTTPS, and no private addresses.

A URL is checked when its function is registered (:meth:`UrlPolicy.check`: its form, scheme and host, and the
address when the host is one). A host name is checked where it matters, when a call connects: the resolver
the module's HTTP client uses (:class:`GuardedResolver`) refuses a name that resolves to a private address,
so a name cannot pass a check and then point elsewhere (DNS rebinding). The messages are the reference
engine's (``Invalid URL``, ``HTTPS is required``, ``URL not in allowlist``, ``Private IP blocked``), followed by
the host: never the path or query, which may carry a worker's credentials.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from iii.modules.api import FunctionError

URL_VALIDATION_FAILED = "url_validation_failed"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_private(address: IpAddress) -> bool:
    """Any address that is not global (loopback, private, link-local, unspecified, broadcast, documentation,
    shared 100.64/10, reserved; IPv6 unique-local, ...) or multicast, and an IPv6 address embedding an IPv4
    one that is (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4): the reference engine's list, and more."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and is_private(embedded):
            return True
    return not address.is_global or address.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allowlist: tuple[str, ...]
    block_private_ips: bool
    require_https: bool

    def check(self, url: str) -> URL:
        """The parsed URL if a function may call it; :class:`FunctionError` (``url_validation_failed``) if not."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise FunctionError(URL_VALIDATION_FAILED, "Invalid URL") from None
        host = parsed.host
        if not parsed.absolute or parsed.scheme not in ("http", "https") or not host:
            raise FunctionError(URL_VALIDATION_FAILED, "Invalid URL: it needs http:// or https:// and a host")
        if self.require_https and parsed.scheme != "https":
            raise FunctionError(URL_VALIDATION_FAILED, f"HTTPS is required: {host} is called over http")
        if not any(fnmatchcase(host.lower(), pattern.lower()) for pattern in self.allowlist):
            raise FunctionError(URL_VALIDATION_FAILED, f"URL not in allowlist: {host}")
        if self.block_private_ips:
            address = _address(host)
            if address is not None and is_private(address):
                raise FunctionError(URL_VALIDATION_FAILED, f"Private IP blocked: {host}")
        return parsed


def _address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class PrivateAddressError(OSError):
    """A host name resolved to a private address while those are blocked."""


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner``, and refuses a name any of whose addresses is private (when ``block`` is set)."""

    def __init__(self, inner: AbstractResolver, block: bool) -> None:
        self._inner = inner
        self._block = block

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._block:
            for result in found:
                address = _address(result["host"].split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is no part of it
                if address is None or is_private(address):
                    raise PrivateAddressError(f"Private IP blocked: {host} resolves to {result['host']}")
        return found

    async def close(self) -> None:
        await self._inner.close()
