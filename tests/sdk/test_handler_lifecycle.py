"""Handlers always answer, and the channel ends they were given end with them (issue: SDK for real programs).

* Every invocation is answered: BaseExceptions (a cancelled task, ``sys.exit()``, KeyboardInterrupt in a handler
  thread) and exceptions that cannot be formatted become error results and never stop the SDK; what a sync
  callable returns is awaited when it is awaitable.
* An end that arrives in a handler's payload belongs to that invocation: when the handler returns or raises,
  a reader it did not finish is released (its writer fails at once with 4002) and a writer it did not close
  is aborted (its reader sees 4001); ``keep()`` or passing the end on keeps it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III, ChannelBrokenError, InitOptions, InvocationError, register_worker
from iii.testing import EngineProcess

CALL = {"timeout_ms": 20_000}
"""Generous: a call that is not answered would take this long, so a quick answer proves the point."""


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[III]:
    with register_worker(engine.url, InitOptions(worker_name="lifecycle")) as worker:
        yield worker


def failure_of(client: III, function_id: str, payload: Any = None) -> InvocationError:
    started = time.monotonic()
    with pytest.raises(InvocationError) as caught:
        client.trigger({"function_id": function_id, "payload": payload or {}, **CALL})
    assert time.monotonic() - started < 5, "answered at once, not at the timeout"
    return caught.value


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_base_exceptions_and_unprintable_errors_are_answered(client: III) -> None:
    async def cancelled(data: Any) -> None:
        raise asyncio.CancelledError

    async def exits(data: Any) -> None:
        sys.exit(3)

    def interrupted(data: Any) -> None:
        raise KeyboardInterrupt

    async def unprintable(data: Any) -> None:
        raise Unprintable

    for function_id, handler in [
        ("bad.cancelled", cancelled),
        ("bad.exits", exits),
        ("bad.interrupted", interrupted),
        ("bad.unprintable", unprintable),
    ]:
        client.register_function(function_id, handler)
    assert failure_of(client, "bad.cancelled").message == "the handler was cancelled"
    assert "SystemExit" in (failure_of(client, "bad.exits").stacktrace or "")
    assert "KeyboardInterrupt" in (failure_of(client, "bad.interrupted").stacktrace or "")
    assert "Unprintable" in failure_of(client, "bad.unprintable").message
    # The SDK goes on as before: sys.exit() in a handler did not stop its loop.
    client.register_function("ok.echo", lambda data: data)
    assert client.trigger({"function_id": "ok.echo", "payload": {"n": 1}}) == {"n": 1}
    assert client.get_connection_state() == "connected"


def test_awaitables_returned_by_sync_callables_are_awaited(client: III) -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    client.register_function("math.lazy_double", lambda data: double(data["n"]))
    assert client.trigger({"function_id": "math.lazy_double", "payload": {"n": 21}}) == 42


def feed(client: III, total: int) -> tuple[Any, threading.Thread, list[BaseException | None]]:
    """A channel whose writer writes ``total`` bytes from a thread (sync writes); the outcome lands in a list."""
    channel = client.create_channel()
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            for _ in range(total // 65536):
                channel.writer.write(b"x" * 65536)
            channel.writer.close()
            outcome.append(None)
        except BaseException as exc:  # the assertion below says which
            outcome.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return channel, thread, outcome


def test_a_reader_that_stops_early_frees_its_writer_at_once(client: III) -> None:
    async def peek(data: dict[str, Any]) -> int:
        seen = 0
        async for chunk in data["reader"]:
            seen += len(chunk)
            if seen >= 1024 * 1024:
                break
        return seen

    client.register_function("stream.peek", peek)
    channel, writer_thread, outcome = feed(client, 64 * 1024 * 1024)
    assert client.trigger({"function_id": "stream.peek", "payload": {"reader": channel.reader_ref}, **CALL}) >= 2**20
    returned = time.monotonic()
    writer_thread.join(10)
    assert not writer_thread.is_alive(), "the writer stayed blocked after its reader's handler returned"
    assert time.monotonic() - returned < 1.5
    [error] = outcome
    assert isinstance(error, ChannelBrokenError) and error.code == 4002


def test_a_handler_that_raises_without_reading_frees_its_writer(client: III) -> None:
    def refuse(data: dict[str, Any]) -> None:
        raise ValueError("not today")

    client.register_function("stream.refuse", refuse)
    channel, writer_thread, outcome = feed(client, 64 * 1024 * 1024)
    with pytest.raises(InvocationError):
        client.trigger({"function_id": "stream.refuse", "payload": {"reader": channel.reader_ref}, **CALL})
    writer_thread.join(10)
    assert not writer_thread.is_alive()
    [error] = outcome
    assert isinstance(error, ChannelBrokenError) and error.code == 4002


@pytest.mark.parametrize("writes", [True, False], ids=["wrote-some", "never-touched"])
def test_a_writer_the_handler_did_not_close_ends_its_readers_stream_as_broken(client: III, writes: bool) -> None:
    async def produce(data: dict[str, Any]) -> str:
        if writes:
            await data["writer"].write(b"partial")
        return "returned"

    client.register_function("stream.forgetful", produce)
    channel = client.create_channel()
    assert client.trigger({"function_id": "stream.forgetful", "payload": {"writer": channel.writer_ref}}) == "returned"
    started = time.monotonic()
    with pytest.raises(ChannelBrokenError) as broken:
        channel.reader.read_all()
    assert time.monotonic() - started < 5, "told at once, not at the channel's TTL"
    assert broken.value.code == (4001 if writes else 4004)  # aborted, or released unused
    assert broken.value.received == (len(b"partial") if writes else 0)


def test_kept_ends_outlive_their_handler(client: III) -> None:
    done = threading.Event()
    received: list[bytes] = []

    async def background(data: dict[str, Any]) -> str:
        reader = data["reader"].keep()

        async def drain() -> None:
            received.append(await reader.read_all())
            done.set()

        asyncio.get_running_loop().create_task(drain())
        return "reading in the background"

    client.register_function("stream.background", background)
    channel = client.create_channel()
    assert client.trigger({"function_id": "stream.background", "payload": {"reader": channel.reader_ref}})
    channel.writer.write(b"after the handler returned")
    channel.writer.close()
    assert done.wait(10)
    assert received == [b"after the handler returned"]


def test_ends_the_handler_finished_or_passed_on_are_left_alone(client: III) -> None:
    def relay(data: dict[str, Any]) -> Any:
        return client.trigger({"function_id": "stream.read_all", "payload": {"reader": data["reader"]}})

    client.register_function("stream.read_all", lambda data: data["reader"].read_all().decode())
    client.register_function("stream.relay", relay)
    channel = client.create_channel()
    channel.writer.write(b"passed along")
    channel.writer.close()
    assert client.trigger({"function_id": "stream.relay", "payload": {"reader": channel.reader_ref}}) == "passed along"
