"""Property: whatever a writer sends (data in any chunking, text messages in between, any buffer size), the
reader gets all of it, in order, with matching byte counts and sha256, and a clean end."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iii import III, InitOptions, register_worker
from iii.testing import EngineProcess

# An item is bytes (a write) or str (a text message). Sizes straddle the 64 KiB frame size.
chunk = st.one_of(
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=200_000).map(lambda n: bytes(i % 251 for i in range(n))),
)
item = st.one_of(chunk, st.text(max_size=40))


@pytest.fixture(scope="module")
def client(shared_engine: EngineProcess) -> Iterator[III]:
    with register_worker(shared_engine.url, InitOptions(worker_name="integrity")) as worker:
        yield worker


def _expected(items: list[bytes | str]) -> list[Any]:
    """The stream as a reader must see it: data between two messages joined, messages in place."""
    shape: list[Any] = []
    for value in items:
        if isinstance(value, str):
            shape.append(("message", value))
        elif value:
            if shape and isinstance(shape[-1], bytes):
                shape[-1] += value
            else:
                shape.append(value)
    return shape


async def _relay(client: III, items: list[bytes | str], buffer_size: int) -> list[Any]:
    channel = await client.create_channel_async(buffer_size)
    seen: list[Any] = []
    channel.reader.on_message(lambda text: seen.append(("message", text)))

    async def write() -> None:
        for value in items:
            if isinstance(value, str):
                await channel.writer.send_message_async(value)
            else:
                await channel.writer.write(value)
        await channel.writer.close_async()

    writing = asyncio.ensure_future(write())
    async for data in channel.reader:
        if seen and isinstance(seen[-1], bytes):
            seen[-1] += data
        else:
            seen.append(data)
    await writing
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(item, max_size=12), buffer_size=st.integers(min_value=1, max_value=8))
def test_any_sequence_arrives_complete_and_in_order(client: III, items: list[bytes | str], buffer_size: int) -> None:
    seen = asyncio.run(_relay(client, items, buffer_size))
    # Messages after the last data arrive with the clean end, so they are dispatched before iteration ends.
    assert seen == _expected(items)
    sent = b"".join(v for v in items if isinstance(v, bytes))
    received = b"".join(v for v in seen if isinstance(v, bytes))
    assert (len(received), hashlib.sha256(received).hexdigest()) == (len(sent), hashlib.sha256(sent).hexdigest())
