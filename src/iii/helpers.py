"""Helpers with the official SDK's names: channel creation and finding refs in payloads."""

from __future__ import annotations

from typing import Any

from iii.protocol.refs import is_channel_ref, iter_channel_refs
from iii.sdk.channels import Channel, StreamChannelRef
from iii.sdk.client import III


def create_channel(iii: III, buffer_size: int | None = None) -> Any:
    """``iii.create_channel(buffer_size)``: blocks in sync code, awaitable in async code."""
    return iii.create_channel(buffer_size)


async def create_channel_async(iii: III, buffer_size: int | None = None) -> Channel:
    """A new channel, always awaitable."""
    return await iii.create_channel_async(buffer_size)


def extract_channel_refs(data: Any) -> list[tuple[str, StreamChannelRef]]:
    """Every channel ref in ``data`` with its path (``items[0].writer``), in document order."""
    return [(path, StreamChannelRef.model_validate(ref)) for path, ref in iter_channel_refs(data)]


__all__ = ["create_channel", "create_channel_async", "extract_channel_refs", "is_channel_ref"]
