"""Channel refs: the serializable handles of a channel's ends, and how to find them in payloads.

A ref is the JSON object ``{"channel_id", "access_key", "direction"}``. Our engine gives each direction
its own key, so a ref opens only the end it names. Extra keys are tolerated (the official SDKs ignore
them), which leaves room for fields such as an owning engine later.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

Direction = Literal["read", "write"]
DIRECTIONS: Final[frozenset[str]] = frozenset(("read", "write"))
CHANNEL_PATH_PREFIX: Final = "/ws/channels/"


def is_channel_ref(value: object) -> bool:
    """True for a mapping with string ``channel_id`` and ``access_key`` and a ``direction`` of read/write."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("channel_id"), str)
        and isinstance(value.get("access_key"), str)
        and value.get("direction") in DIRECTIONS
    )


def iter_channel_refs(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, ref)`` for every channel ref inside ``value``, depth first, in document order.

    Paths look like ``items[0].writer``, as in the official SDKs. Dicts, lists and tuples are walked.
    """
    if is_channel_ref(value):
        yield path, value
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from iter_channel_refs(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from iter_channel_refs(item, f"{path}[{index}]")


def channel_url(engine_url: str, channel_id: str, access_key: str, direction: Direction) -> str:
    """The WebSocket URL of one channel end, on the same host and port as the worker socket.

    A query string already present on ``engine_url`` is kept, as the official Python SDK does.
    """
    parts = urlsplit(engine_url)
    path = parts.path.rstrip("/") + CHANNEL_PATH_PREFIX + quote(channel_id, safe="")
    query = f"key={quote(access_key, safe='')}&dir={direction}"
    if parts.query:
        query = f"{parts.query}&{query}"
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
